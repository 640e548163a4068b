//! `/monorail/<channel>` (seed 002) against the real server: the seed's handlers, watches
//! fed by writes from elsewhere, the broadcast to all or some watchers, and bad input.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

async fn http_json(method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(s: &TestServer, path: &str, body: Value) -> u16 {
    http_json(reqwest::Method::POST, s.http(path), body).await.0
}

async fn patch(s: &TestServer, path: &str, body: Value) -> u16 {
    http_json(reqwest::Method::PATCH, s.http(path), body)
        .await
        .0
}

async fn delete(s: &TestServer, path: &str) -> u16 {
    reqwest::Client::new()
        .delete(s.http(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn publish(s: &TestServer, channel: &str, query: &str, body: Value) -> u16 {
    let url = s.http(&format!("/publish/{channel}{query}"));
    http_json(reqwest::Method::POST, url, body).await.0
}

/// Connects, `init`s and returns the client with its session id.
async fn monorail(s: &TestServer, channel: &str) -> (Client, String) {
    let mut c = Client::connect(&s.url(&format!("/monorail/{channel}"))).await;
    c.send(json!({"handler": "init"})).await;
    let session = c.recv().await;
    assert_eq!(session["handler"], "session", "{session}");
    (c, session["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_seed_handlers_init_query_all_and_get() {
    let s = TestServer::start().await;
    assert_eq!(
        post(
            &s,
            "/api/nodes",
            json!({"id": "n1", "name": "compute-1", "state": "up"})
        )
        .await,
        201
    );
    assert_eq!(
        post(
            &s,
            "/api/nodes",
            json!({"id": "n2", "name": "compute-2", "state": "down"})
        )
        .await,
        201
    );

    let mut c = Client::connect(&s.url("/monorail/nodes")).await;
    // The seed has no greeting: the first message is the answer to init, numbered 1.
    c.send(json!({"handler": "init"})).await;
    let session = c.recv().await;
    assert_eq!(session["msg"], 1);
    assert_eq!(session["handler"], "session");
    assert!(
        session["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{session}"
    );

    c.send(json!({"handler": "query", "params": {"state": "up"}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"msg": 2, "handler": "list", "params": {"state": "up"},
               "items": [{"id": "n1", "name": "compute-1", "state": "up"}]})
    );

    c.send(json!({"handler": "all"})).await;
    let list = c.recv().await;
    assert_eq!(list["handler"], "list");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2"]);

    c.send(json!({"handler": "get", "params": {"id": "n2"}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"msg": 4, "handler": "item", "data": {"id": "n2", "name": "compute-2", "state": "down"}})
    );
    // The seed: "respond with the item or tell the client to remove it".
    c.send(json!({"handler": "get", "params": {"id": "gone"}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"msg": 5, "handler": "remove", "params": {"id": "gone"}})
    );
    // A query naming an id is that one item; params that match nothing are an empty list.
    c.send(json!({"handler": "query", "params": {"id": "n1", "state": "down"}}))
        .await;
    assert_eq!(c.recv().await["items"], json!([]));
    c.send(json!({"handler": "query"})).await;
    assert_eq!(c.recv().await["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn watch_lists_then_pushes_items_and_removes_until_stop() {
    let s = TestServer::start().await;
    post(&s, "/api/nodes", json!({"id": "n1", "state": "up"})).await;
    post(&s, "/api/nodes", json!({"id": "n2", "state": "down"})).await;
    let (mut c, _) = monorail(&s, "nodes").await;

    c.send(json!({"handler": "watch", "params": {"state": "up"}}))
        .await;
    let list = c.recv().await;
    assert_eq!(
        (list["handler"].clone(), list["items"].clone()),
        (json!("list"), json!([{"id": "n1", "state": "up"}]))
    );

    // Created elsewhere: an item, the whole record.
    post(
        &s,
        "/api/nodes",
        json!({"id": "n3", "state": "up", "cpu": 4}),
    )
    .await;
    let next = c.last_msg + 1;
    assert_eq!(
        c.recv().await,
        json!({"msg": next, "handler": "item", "data": {"id": "n3", "state": "up", "cpu": 4}})
    );
    // Changed while watched: the whole record again, never a diff.
    patch(&s, "/api/nodes/n3", json!({"cpu": 8})).await;
    assert_eq!(
        c.recv().await["data"],
        json!({"id": "n3", "state": "up", "cpu": 8})
    );
    // No longer matching the params: remove.
    patch(&s, "/api/nodes/n1", json!({"state": "down"})).await;
    let removed = c.recv().await;
    assert_eq!(
        (removed["handler"].clone(), removed["params"].clone()),
        (json!("remove"), json!({"id": "n1"}))
    );
    // Starting to match: an item.
    patch(&s, "/api/nodes/n2", json!({"state": "up"})).await;
    assert_eq!(c.recv().await["data"]["id"], "n2");
    // Deleted: remove.
    assert_eq!(delete(&s, "/api/nodes/n3").await, 200);
    assert_eq!(c.recv().await["params"], json!({"id": "n3"}));

    // Watching the same params again: a fresh list, still one stream.
    c.send(json!({"handler": "watch", "params": {"state": "up"}}))
        .await;
    assert_eq!(
        c.recv().await["items"],
        json!([{"id": "n2", "state": "up"}])
    );
    post(&s, "/api/nodes", json!({"id": "n4", "state": "up"})).await;
    assert_eq!(c.recv().await["data"]["id"], "n4");
    c.expect_silence(QUIET).await;

    // stop: no answer, and nothing more arrives.
    c.send(json!({"handler": "stop", "params": {"state": "up"}}))
        .await;
    c.expect_silence(QUIET).await;
    post(&s, "/api/nodes", json!({"id": "n5", "state": "up"})).await;
    c.expect_silence(QUIET).await;
    // Stopping what is not watched is not an error.
    c.send(json!({"handler": "stop", "params": {"state": "sideways"}}))
        .await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn watching_one_item_by_id() {
    let s = TestServer::start().await;
    let (mut c, _) = monorail(&s, "nodes").await;
    // The item need not exist yet.
    c.send(json!({"handler": "watch", "params": {"id": "n1"}}))
        .await;
    assert_eq!(c.recv().await["items"], json!([]));
    post(&s, "/api/nodes", json!({"id": "n2", "state": "up"})).await;
    post(&s, "/api/nodes", json!({"id": "n1", "state": "up"})).await;
    let item = c.recv().await;
    assert_eq!(item["data"], json!({"id": "n1", "state": "up"}), "only n1");
    delete(&s, "/api/nodes/n1").await;
    assert_eq!(c.recv().await["handler"], "remove");
    // `{"id": 7}` and `{"id": "7"}` are the same watch; stop finds it either way.
    c.send(json!({"handler": "watch", "params": {"id": 7}}))
        .await;
    assert_eq!(c.recv().await["handler"], "list");
    c.send(json!({"handler": "stop", "params": {"id": "7"}}))
        .await;
    post(&s, "/api/nodes", json!({"id": "7"})).await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn broadcast_reaches_all_watchers_or_the_chosen_ones() {
    let s = TestServer::start().await;
    let channel = "workflow-logs";
    let (mut a, a_session) = monorail(&s, channel).await;
    a.send(json!({"handler": "watch", "params": {"workflow": 42}}))
        .await;
    assert_eq!(a.recv().await["handler"], "list");
    let (mut b, b_session) = monorail(&s, channel).await;
    b.send(json!({"handler": "watch", "params": {"workflow": 7}}))
        .await;
    assert_eq!(b.recv().await["handler"], "list");
    // Connected to the channel but watching nothing: not a watcher.
    let (mut idle, _) = monorail(&s, channel).await;
    // A /ws client on the same topic.
    let mut ws = s.client().await;
    ws.recv().await;
    let snap = ws
        .request(json!({"type": "subscribe", "sub": "logs", "topic": channel}))
        .await;
    assert_eq!(snap["type"], "snapshot");

    // To all: every watcher and the /ws subscriber.
    assert_eq!(
        publish(&s, channel, "", json!({"workflow": 42, "line": "step 1"})).await,
        202
    );
    let expected = json!({"handler": "item", "data": {"workflow": 42, "line": "step 1"}});
    for c in [&mut a, &mut b] {
        let mut m = c.recv().await;
        m.as_object_mut().unwrap().remove("msg");
        assert_eq!(m, expected);
    }
    let m = ws.recv().await;
    assert_eq!(
        (
            m["type"].clone(),
            m["topic"].clone(),
            m["data"]["line"].clone()
        ),
        (json!("message"), json!(channel), json!("step 1"))
    );

    // By a filter on the watch params: only the watchers of workflow 42.
    assert_eq!(
        publish(
            &s,
            channel,
            "?watching.workflow=42",
            json!({"line": "step 2"})
        )
        .await,
        202
    );
    assert_eq!(a.recv().await["data"]["line"], "step 2");

    // By session: only b.
    let query = format!("?session={b_session}");
    assert_eq!(
        publish(&s, channel, &query, json!({"line": "for b"})).await,
        202
    );
    assert_eq!(b.recv().await["data"]["line"], "for b");

    // A message that names its handler is delivered as it is.
    let query = format!("?session=nobody,{a_session}");
    assert_eq!(
        publish(
            &s,
            channel,
            &query,
            json!({"handler": "log", "line": "raw"})
        )
        .await,
        202
    );
    let m = a.recv().await;
    assert_eq!(
        (m["handler"].clone(), m["line"].clone()),
        (json!("log"), json!("raw"))
    );

    // A misspelt target is refused rather than sent to everyone.
    assert_eq!(publish(&s, channel, "?sesion=x", json!({})).await, 400);

    for c in [&mut a, &mut b, &mut idle, &mut ws] {
        c.expect_silence(QUIET).await;
    }

    // After the last stop, a connection is no longer a watcher.
    b.send(json!({"handler": "stop", "params": {"workflow": 7}}))
        .await;
    b.expect_silence(QUIET).await;
    assert_eq!(
        publish(&s, channel, "", json!({"line": "after stop"})).await,
        202
    );
    assert_eq!(a.recv().await["data"]["line"], "after stop");
    b.expect_silence(QUIET).await;
}

#[tokio::test]
async fn init_with_the_old_id_keeps_the_session_after_a_reconnect() {
    let s = TestServer::start().await;
    let (first, session) = monorail(&s, "logs").await;
    drop(first);
    let mut c = Client::connect(&s.url("/monorail/logs")).await;
    c.send(json!({"handler": "init", "id": session})).await;
    assert_eq!(
        c.recv().await,
        json!({"msg": 1, "handler": "session", "id": session})
    );
    c.send(json!({"handler": "watch"})).await;
    assert_eq!(c.recv().await["handler"], "list");
    let (status, _) = http_json(
        reqwest::Method::POST,
        s.http(&format!("/publish/logs?session={session}")),
        json!({"line": "still you"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(c.recv().await["data"]["line"], "still you");
}

#[tokio::test]
async fn bad_input_gets_a_failure_and_the_connection_stays_open() {
    let s = TestServer::start_with(|c| c.max_message_bytes = 4096).await;
    let (mut c, _) = monorail(&s, "nodes").await;
    let cases: Vec<(String, &str, Value)> = vec![
        ("{not json".into(), "bad_json", Value::Null),
        ("[1, 2]".into(), "bad_request", Value::Null),
        (
            json!({"params": {}}).to_string(),
            "bad_request",
            Value::Null,
        ),
        (
            json!({"handler": 5}).to_string(),
            "bad_request",
            Value::Null,
        ),
        (
            json!({"handler": "query", "params": "state=up"}).to_string(),
            "bad_request",
            json!("query"),
        ),
        (
            json!({"handler": "get", "params": {"id": "has space"}}).to_string(),
            "invalid_name",
            json!("get"),
        ),
        (
            json!({"handler": "watch", "params": {"id": [1]}}).to_string(),
            "invalid_name",
            json!("watch"),
        ),
        (
            json!({"handler": "init", "id": 5}).to_string(),
            "bad_request",
            json!("init"),
        ),
        (
            json!({"handler": "teleport"}).to_string(),
            "unknown_type",
            json!("teleport"),
        ),
        (
            json!({"handler": "create", "data": {"id": "x"}}).to_string(),
            "unknown_type",
            json!("create"),
        ),
        (
            json!({"handler": "all", "pad": "x".repeat(5000)}).to_string(),
            "too_large",
            Value::Null,
        ),
    ];
    for (text, code, request) in cases {
        c.send_text(&text).await;
        let e = c.recv().await;
        assert_eq!(e["handler"], "failure", "{text} -> {e}");
        assert_eq!(e["code"], code, "{text} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        if code != "too_large" {
            assert_eq!(e["request"], request, "{text} -> {e}");
        }
    }
    c.send(json!({"handler": "all"})).await;
    assert_eq!(
        c.recv().await["handler"],
        "list",
        "the connection still works"
    );

    // A channel that is not a resource name is refused at the upgrade.
    let refused = tokio_tungstenite::connect_async(s.url("/monorail/bad%20name")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected an HTTP 400, got {other:?}"),
    }
}
