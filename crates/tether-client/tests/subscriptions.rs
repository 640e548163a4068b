//! Subscriptions as streams against the real server: snapshot, then changes in order;
//! queries see records enter and leave; the local store follows; dropping
//! unsubscribes; topics and presence.

mod common;

use common::{next, silence, wait_event, TestServer};
use serde_json::json;
use tether_client::{Client, ConnectionEvent, Event, Query, Target};

#[tokio::test]
async fn a_query_subscription_sees_records_enter_change_and_leave() {
    let s = TestServer::start().await;
    let client = common::client(&s.ws()).await;
    client
        .create("todos", Some("a"), json!({"title": "a", "done": false}))
        .await
        .unwrap();

    let mut open = client
        .subscribe(Target::query("todos", Query::new().filter("done", false)))
        .await
        .unwrap();
    match next(&mut open).await {
        Event::Snapshot {
            pos,
            records,
            resync: None,
        } => {
            assert_eq!(pos, 1);
            assert_eq!(records.len(), 1);
        }
        other => panic!("expected the snapshot first, got {other:?}"),
    }

    client
        .create("todos", Some("b"), json!({"title": "b", "done": false}))
        .await
        .unwrap();
    client
        .patch("todos", "a", json!({"title": "A"}))
        .await
        .unwrap();
    client
        .patch("todos", "b", json!({"done": true}))
        .await
        .unwrap();

    match next(&mut open).await {
        Event::Put { pos: 2, record } => assert_eq!(record.id, "b"),
        other => panic!("b enters: {other:?}"),
    }
    match next(&mut open).await {
        Event::Patch {
            pos: 3,
            id,
            version: 2,
            patch,
            record,
            ..
        } => {
            assert_eq!(id, "a");
            assert_eq!(patch, *json!({"title": "A"}).as_object().unwrap());
            // With the local store on, the patched record comes along.
            assert_eq!(
                record.unwrap().data,
                *json!({"title": "A", "done": false}).as_object().unwrap()
            );
        }
        other => panic!("a changes: {other:?}"),
    }
    match next(&mut open).await {
        Event::Delete { pos: 4, id, .. } => assert_eq!(id, "b"),
        other => panic!("b leaves: {other:?}"),
    }
    silence(&mut open).await;

    let held = open.records().unwrap();
    assert_eq!(
        held.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

#[tokio::test]
async fn the_local_store_is_the_union_of_subscriptions() {
    let s = TestServer::start().await;
    let client = common::client(&s.ws()).await;
    let store = client.store().unwrap();
    let mut open = client
        .subscribe(Target::query("todos", Query::new().filter("done", false)))
        .await
        .unwrap();
    let mut one = client
        .subscribe(Target::record("todos", "a"))
        .await
        .unwrap();
    next(&mut open).await;
    next(&mut one).await;

    client
        .create("todos", Some("a"), json!({"done": false}))
        .await
        .unwrap();
    client
        .create("todos", Some("b"), json!({"done": false}))
        .await
        .unwrap();
    next(&mut open).await;
    next(&mut open).await;
    next(&mut one).await;
    assert_eq!(store.len(), 2);

    // "a" leaves the query but the record subscription still holds it.
    client
        .patch("todos", "a", json!({"done": true}))
        .await
        .unwrap();
    assert!(matches!(next(&mut open).await, Event::Delete { .. }));
    assert!(matches!(next(&mut one).await, Event::Patch { .. }));
    let a = store.get("todos", "a").unwrap();
    assert_eq!((a.version, a.data["done"].clone()), (2, json!(true)));

    // Dropping the record subscription forgets what only it held.
    drop(one);
    client.ping().await.unwrap(); // the unsubscribe has been handled
    assert!(store.get("todos", "a").is_none());
    assert_eq!(
        store
            .all("todos")
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );

    client.delete("todos", "b").await.unwrap();
    assert!(matches!(next(&mut open).await, Event::Delete { .. }));
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_dropped_subscription_gets_nothing_more_and_others_carry_on() {
    let s = TestServer::start().await;
    let client = Client::connect(&s.ws()).await.unwrap();
    let first = client.subscribe(Target::resource("notes")).await.unwrap();
    let mut second = client.subscribe(Target::resource("notes")).await.unwrap();
    next(&mut second).await;
    drop(first);
    client
        .create("notes", Some("n"), json!({"text": "hi"}))
        .await
        .unwrap();
    match next(&mut second).await {
        Event::Put { record, .. } => {
            assert_eq!(record.data["text"], "hi");
        }
        other => panic!("{other:?}"),
    }
    // Without the local store, patches carry no record.
    client
        .patch("notes", "n", json!({"text": "ho"}))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut second).await,
        Event::Patch { record: None, .. }
    ));
    assert!(second.records().is_none());
    assert!(client.store().is_none());
}

#[tokio::test]
async fn topics_and_presence() {
    let s = TestServer::start().await;
    let alice = Client::connect(&s.ws()).await.unwrap();
    let bob = Client::connect(&s.ws()).await.unwrap();

    let mut logs = alice
        .subscribe(Target::topic("workflow/42/logs"))
        .await
        .unwrap();
    assert!(matches!(next(&mut logs).await, Event::Snapshot { .. }));
    bob.publish("workflow/42/logs", json!({"line": "step 3 done"}))
        .await
        .unwrap();
    match next(&mut logs).await {
        Event::Message { topic, data } => {
            assert_eq!(topic, "workflow/42/logs");
            assert_eq!(data, json!({"line": "step 3 done"}));
        }
        other => panic!("{other:?}"),
    }

    let mut alice_events = alice.events();
    assert_eq!(alice.join("doc-1", Some("alice")).await.unwrap(), ["alice"]);
    assert_eq!(
        bob.join("doc-1", Some("bob")).await.unwrap(),
        ["alice", "bob"]
    );
    let joined = wait_event(&mut alice_events, |e| {
        matches!(e, ConnectionEvent::Presence { .. })
    })
    .await;
    match joined {
        ConnectionEvent::Presence {
            room,
            user,
            joined: true,
            members,
        } => {
            assert_eq!((room.as_str(), user.as_str()), ("doc-1", "bob"));
            assert_eq!(members, ["alice", "bob"]);
        }
        other => panic!("{other:?}"),
    }
    bob.leave("doc-1").await.unwrap();
    let left = wait_event(&mut alice_events, |e| {
        matches!(e, ConnectionEvent::Presence { joined: false, .. })
    })
    .await;
    assert!(matches!(left, ConnectionEvent::Presence { members, .. } if members == ["alice"]));
}
