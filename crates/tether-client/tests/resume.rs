//! Reconnect and resume against the real server: the server goes away, changes are
//! committed while the client is cut off, the server comes back on the same data and
//! port, and every subscription sees exactly the changes it missed, once, in order.

mod common;

use common::{next, silence, start_at, wait_event, TestServer};
use serde_json::json;
use tether_client::{Client, ClientError, ConnectionEvent, ConnectionState, Event, Query, Target};

fn ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Snapshot { pos, .. } => format!("snapshot@{pos}"),
            Event::Resumed { from } => format!("resumed@{from}"),
            Event::Put { pos, record } => format!("PUT {}@{pos}", record.id),
            Event::Patch { pos, id, .. } => format!("PATCH {id}@{pos}"),
            Event::Delete { pos, id, .. } => format!("DELETE {id}@{pos}"),
            Event::Message { topic, .. } => format!("message {topic}"),
        })
        .collect()
}

async fn take(sub: &mut tether_client::Subscription, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(next(sub).await);
    }
    events
}

#[tokio::test]
async fn restart_on_the_same_data_and_port_resumes_exactly() {
    let s = TestServer::start().await;
    let (addr, data) = (s.server.addr, s.data());
    let client = common::client(&s.ws()).await;
    let store = client.store().unwrap();
    let mut events = client.events();

    let mut all = client.subscribe(Target::resource("todos")).await.unwrap();
    let mut open = client
        .subscribe(Target::query("todos", Query::new().filter("done", false)))
        .await
        .unwrap();
    let mut one = client
        .subscribe(Target::record("todos", "a"))
        .await
        .unwrap();
    for sub in [&mut all, &mut open, &mut one] {
        assert!(matches!(next(sub).await, Event::Snapshot { pos: 0, .. }));
    }
    client
        .create("todos", Some("a"), json!({"done": false}))
        .await
        .unwrap();
    client
        .create("todos", Some("b"), json!({"done": false}))
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut all, 2).await), ["PUT a@1", "PUT b@2"]);
    assert_eq!(ids(&take(&mut open, 2).await), ["PUT a@1", "PUT b@2"]);
    assert_eq!(ids(&take(&mut one, 1).await), ["PUT a@1"]);
    let session = client.status().session.unwrap();

    // A second server on the same data, for writing while the first one is down.
    // Bound before the first one stops, so it cannot take the first one's port.
    let other = start_at("127.0.0.1:0".parse().unwrap(), data.clone()).await;
    s.server.stop().await.unwrap();
    let lost = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            lost,
            ConnectionEvent::Disconnected {
                code: Some(1001),
                ..
            }
        ),
        "{lost:?}"
    );

    // A read asked while cut off waits for the connection; a write too (never sent
    // yet, so it is safe to send later).
    let waiting_read = tokio::spawn({
        let client = client.clone();
        async move { client.get("todos", "c").await }
    });

    let http = reqwest::Client::new();
    let base = format!("http://{}", other.addr);
    for (method, path, body) in [
        ("PATCH", "/api/todos/a", json!({"done": true})),
        ("PUT", "/api/todos/c", json!({"done": false})),
        ("DELETE", "/api/todos/b", json!(null)),
    ] {
        let request = http.request(method.parse().unwrap(), format!("{base}{path}"));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        assert!(request.send().await.unwrap().status().is_success());
    }
    other.stop().await.unwrap();
    assert_ne!(client.status().state, ConnectionState::Ready);

    // Back on the same port and data.
    let back = start_at(addr, data).await;
    let resumed = wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    match resumed {
        ConnectionEvent::Connected {
            session: now,
            resumed: true,
        } => assert_eq!(now, session, "the session continues"),
        other => panic!("{other:?}"),
    }

    // Exactly the missed changes, each subscription from its own position.
    assert_eq!(
        ids(&take(&mut all, 4).await),
        ["resumed@2", "PATCH a@3", "PUT c@4", "DELETE b@5"]
    );
    assert_eq!(
        ids(&take(&mut open, 4).await),
        ["resumed@2", "DELETE a@3", "PUT c@4", "DELETE b@5"]
    );
    assert_eq!(ids(&take(&mut one, 2).await), ["resumed@1", "PATCH a@3"]);

    let c = waiting_read.await.unwrap().unwrap().unwrap();
    assert_eq!(c.version, 1);

    // Live again, and nothing doubled.
    client
        .patch("todos", "c", json!({"done": true}))
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut all, 1).await), ["PATCH c@6"]);
    assert_eq!(ids(&take(&mut open, 1).await), ["DELETE c@6"]);
    silence(&mut all).await;
    silence(&mut open).await;
    silence(&mut one).await;

    // The local store followed every step.
    assert_eq!(store.get("todos", "a").unwrap().data["done"], true);
    assert!(store.get("todos", "b").is_none());
    assert_eq!(store.get("todos", "c").unwrap().version, 2);
    assert_eq!(open.records().unwrap(), Vec::new());
    back.stop().await.unwrap();
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_ends_streams_with_an_error() {
    let s = TestServer::start().await;
    let client = Client::builder(&s.ws())
        .no_reconnect()
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(Target::resource("x")).await.unwrap();
    next(&mut sub).await;
    s.server.stop().await.unwrap();
    use futures_util::StreamExt;
    let end = tokio::time::timeout(common::WAIT, sub.next())
        .await
        .unwrap();
    assert!(
        matches!(end, Some(Err(ClientError::ConnectionLost { .. }))),
        "{end:?}"
    );
    assert!(tokio::time::timeout(common::WAIT, sub.next())
        .await
        .unwrap()
        .is_none());
    let e = client.ping().await.unwrap_err();
    assert!(matches!(e, ClientError::Closed), "{e}");
    assert_eq!(client.status().state, ConnectionState::Closed);
}
