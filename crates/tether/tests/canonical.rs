//! The canonical protocol on `/ws`, against the real server on a real SQLite file.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn welcome_carries_session_epoch_and_msg_1() {
    let s = TestServer::start().await;
    let (_c, welcome) = Client::canonical(&s.url("/ws")).await;
    assert_eq!(welcome["msg"], 1);
    assert!(welcome["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(welcome["epoch"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(welcome["pos"], 0);
}

#[tokio::test]
async fn crud_round_trip_with_versions_and_conflicts() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.recv().await;
    let r = c
        .request(
            json!({"type": "create", "resource": "todos", "id": "a", "data": {"title": "milk"}}),
        )
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(
        (r["version"].clone(), r["pos"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(r["record"]["data"], json!({"title": "milk"}));

    let r = c
        .request(json!({"type": "create", "resource": "todos", "id": "a", "data": {}}))
        .await;
    assert_eq!(
        (r["type"].clone(), r["code"].clone()),
        (json!("error"), json!("already_exists"))
    );

    let r = c
        .request(json!({"type": "patch", "resource": "todos", "id": "a", "data": {"done": true}}))
        .await;
    assert_eq!(r["record"]["data"], json!({"title": "milk", "done": true}));
    assert_eq!(r["version"], 2);

    let r = c.request(json!({"type": "update", "resource": "todos", "id": "a", "data": {"t": 1}, "version": 1})).await;
    assert_eq!(r["code"], "version_conflict", "{r}");
    assert_eq!(r["version"], 2);

    let r = c
        .request(json!({"type": "upsert", "resource": "todos", "id": "b", "data": {"t": 2}}))
        .await;
    assert_eq!(r["version"], 1);

    let r = c
        .request(json!({"type": "get", "resource": "todos", "id": "a"}))
        .await;
    assert_eq!(r["record"]["version"], 2);
    let r = c
        .request(json!({"type": "get", "resource": "todos", "id": "zzz"}))
        .await;
    assert_eq!(r["record"], Value::Null);

    let r = c.request(json!({"type": "all", "resource": "todos"})).await;
    assert_eq!(r["records"].as_array().unwrap().len(), 2);
    let r = c
        .request(json!({"type": "query", "resource": "todos", "where": {"t": 2}}))
        .await;
    assert_eq!(r["records"][0]["id"], "b");

    let r = c
        .request(json!({"type": "delete", "resource": "todos", "id": "a"}))
        .await;
    assert_eq!(
        (r["record"].clone(), r["version"].clone()),
        (Value::Null, json!(3))
    );
    let r = c
        .request(json!({"type": "delete", "resource": "todos", "id": "a"}))
        .await;
    assert_eq!(r["code"], "not_found");

    let r = c
        .request(json!({"type": "create", "resource": "todos", "data": {"x": 1}}))
        .await;
    assert!(
        r["id"].as_str().is_some_and(|id| !id.is_empty()),
        "server made an id: {r}"
    );
}

#[tokio::test]
async fn a_watcher_gets_pushes_with_the_next_message_number() {
    let s = TestServer::start().await;
    let mut watcher = s.client().await;
    watcher.recv().await;
    let snap = watcher
        .request(json!({"type": "subscribe", "sub": "all", "resource": "todos"}))
        .await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["records"], json!([]));
    let after_snapshot = watcher.last_msg;

    let mut writer = s.client().await;
    writer.recv().await;
    writer
        .request(json!({"type": "create", "resource": "todos", "id": "a", "data": {"n": 1}}))
        .await;
    writer
        .request(json!({"type": "patch", "resource": "todos", "id": "a", "data": {"n": 2}}))
        .await;
    writer
        .request(json!({"type": "delete", "resource": "todos", "id": "a"}))
        .await;

    let put = watcher.recv().await;
    assert_eq!(put["msg"], after_snapshot + 1);
    assert_eq!(
        put,
        json!({"msg": after_snapshot + 1, "sub": "all", "type": "PUT", "pos": 1, "resource": "todos", "id": "a", "version": 1, "data": {"n": 1}})
    );
    let patch = watcher.recv().await;
    assert_eq!(
        (
            patch["type"].clone(),
            patch["patch"].clone(),
            patch["pos"].clone()
        ),
        (json!("PATCH"), json!({"n": 2}), json!(2))
    );
    let delete = watcher.recv().await;
    assert_eq!(
        (delete["type"].clone(), delete["version"].clone()),
        (json!("DELETE"), json!(3))
    );
}

#[tokio::test]
async fn record_subscription_sees_only_its_record_even_before_it_exists() {
    let s = TestServer::start().await;
    let mut w = s.client().await;
    w.recv().await;
    let snap = w
        .request(json!({"type": "subscribe", "sub": "one", "resource": "todos", "id": "x"}))
        .await;
    assert_eq!(snap["records"], json!([]));
    let mut writer = s.client().await;
    writer.recv().await;
    writer
        .request(json!({"type": "create", "resource": "todos", "id": "y", "data": {}}))
        .await;
    writer
        .request(json!({"type": "create", "resource": "todos", "id": "x", "data": {"here": true}}))
        .await;
    let put = w.recv().await;
    assert_eq!(
        (put["id"].clone(), put["type"].clone()),
        (json!("x"), json!("PUT"))
    );
}

#[tokio::test]
async fn query_subscription_sees_records_enter_change_and_leave() {
    let s = TestServer::start().await;
    let mut writer = s.client().await;
    writer.recv().await;
    writer.request(json!({"type": "create", "resource": "tasks", "id": "t1", "data": {"done": false, "n": 1}})).await;
    writer
        .request(json!({"type": "create", "resource": "tasks", "id": "t2", "data": {"done": true}}))
        .await;

    let mut w = s.client().await;
    w.recv().await;
    let snap = w.request(json!({"type": "subscribe", "sub": "open", "resource": "tasks", "where": {"done": false}})).await;
    assert_eq!(snap["records"].as_array().unwrap().len(), 1);
    assert_eq!(snap["records"][0]["id"], "t1");

    // t2 enters: a PATCH that makes it match arrives as a full PUT.
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t2", "data": {"done": false}}))
        .await;
    let enter = w.recv().await;
    assert_eq!(
        (enter["type"].clone(), enter["id"].clone()),
        (json!("PUT"), json!("t2"))
    );
    assert_eq!(enter["data"], json!({"done": false}));
    // t1 changes while matching: a PATCH.
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t1", "data": {"n": 2}}))
        .await;
    let change = w.recv().await;
    assert_eq!(
        (change["type"].clone(), change["id"].clone()),
        (json!("PATCH"), json!("t1"))
    );
    // t1 leaves: a DELETE.
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t1", "data": {"done": true}}))
        .await;
    let leave = w.recv().await;
    assert_eq!(
        (leave["type"].clone(), leave["id"].clone()),
        (json!("DELETE"), json!("t1"))
    );
    // A record that never matched is not sent at all.
    writer
        .request(json!({"type": "create", "resource": "tasks", "id": "t3", "data": {"done": true}}))
        .await;
    writer
        .request(
            json!({"type": "create", "resource": "tasks", "id": "t4", "data": {"done": false}}),
        )
        .await;
    let next = w.recv().await;
    assert_eq!(next["id"], "t4");
}

#[tokio::test]
async fn query_subscriptions_filter_on_the_records_own_id_and_version() {
    let s = TestServer::start().await;
    let mut writer = s.client().await;
    writer.recv().await;
    for id in ["t1", "t2"] {
        writer
            .request(
                json!({"type": "create", "resource": "tasks", "id": id, "data": {"done": false}}),
            )
            .await;
    }
    let ids = |snap: &Value| {
        snap["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let kind_and_id = |m: &Value| (m["type"].clone(), m["id"].clone());

    let mut one = s.client().await;
    one.recv().await;
    let snap = one
        .request(json!({"type": "subscribe", "sub": "one", "resource": "tasks", "where": {"id": "t1", "done": false}}))
        .await;
    assert_eq!(ids(&snap), ["t1"]);
    let mut fresh = s.client().await;
    fresh.recv().await;
    let snap = fresh
        .request(json!({"type": "subscribe", "sub": "fresh", "resource": "tasks", "where": {"version": 1}}))
        .await;
    assert_eq!(ids(&snap), ["t1", "t2"]);

    // t2 changes: `one` never hears of it (its next push is about t1), and it leaves
    // `fresh` because its version is now 2.
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t2", "data": {"n": 1}}))
        .await;
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t1", "data": {"n": 1}}))
        .await;
    let change = one.recv().await;
    assert_eq!(kind_and_id(&change), (json!("PATCH"), json!("t1")));
    assert_eq!(change["version"], 2);
    assert_eq!(
        kind_and_id(&fresh.recv().await),
        (json!("DELETE"), json!("t2"))
    );
    assert_eq!(
        kind_and_id(&fresh.recv().await),
        (json!("DELETE"), json!("t1"))
    );

    // A new record enters `fresh` at version 1; t1 leaves `one` by its body.
    writer
        .request(
            json!({"type": "create", "resource": "tasks", "id": "t3", "data": {"done": false}}),
        )
        .await;
    let enter = fresh.recv().await;
    assert_eq!(kind_and_id(&enter), (json!("PUT"), json!("t3")));
    assert_eq!(enter["data"], json!({"done": false}));
    writer
        .request(json!({"type": "patch", "resource": "tasks", "id": "t1", "data": {"done": true}}))
        .await;
    assert_eq!(
        kind_and_id(&one.recv().await),
        (json!("DELETE"), json!("t1"))
    );
}

#[tokio::test]
async fn resume_delivers_exactly_the_missed_changes() {
    let s = TestServer::start().await;
    let mut writer = s.client().await;
    writer.recv().await;
    writer
        .request(json!({"type": "create", "resource": "notes", "id": "n0", "data": {"i": 0}}))
        .await;

    let (mut c, welcome) = Client::canonical(&s.url("/ws")).await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    let snap = c
        .request(json!({"type": "subscribe", "sub": "notes", "resource": "notes"}))
        .await;
    let epoch = snap["epoch"].clone();
    writer
        .request(json!({"type": "create", "resource": "notes", "id": "n1", "data": {"i": 1}}))
        .await;
    let seen = c.recv().await;
    assert_eq!(seen["id"], "n1");
    let last = seen["pos"].as_u64().unwrap();
    drop(c); // the connection drops

    for i in 2..7 {
        writer.request(json!({"type": "upsert", "resource": "notes", "id": format!("n{i}"), "data": {"i": i}})).await;
    }
    writer
        .request(json!({"type": "delete", "resource": "notes", "id": "n0"}))
        .await;

    let (mut c, _) = Client::canonical(&s.url("/ws")).await;
    c.send(json!({"req": "r", "type": "resume", "session": session, "since": {"epoch": epoch, "pos": last}})).await;
    // In order: the resumed marker, the missed pushes, then the result.
    let mut messages = Vec::new();
    loop {
        let m = c.recv().await;
        let done = m["type"] == "result";
        messages.push(m);
        if done {
            break;
        }
    }
    assert_eq!(messages[0]["type"], "resumed", "{messages:?}");
    let pushes: Vec<(String, String)> = messages
        .iter()
        .filter(|m| m["type"] == "PUT" || m["type"] == "DELETE")
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_owned(),
                m["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = (2..7)
        .map(|i| ("PUT".to_owned(), format!("n{i}")))
        .chain([("DELETE".to_owned(), "n0".to_owned())])
        .collect();
    assert_eq!(
        pushes, expected,
        "exactly the missed changes, in order, no duplicates"
    );
    assert_eq!(messages.last().unwrap()["session"], session);

    // And it is live again.
    writer
        .request(json!({"type": "create", "resource": "notes", "id": "n9", "data": {}}))
        .await;
    let live = c.recv().await;
    assert_eq!(live["id"], "n9");
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resume_with_a_foreign_epoch_resyncs_with_a_snapshot() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.recv().await;
    c.request(json!({"type": "create", "resource": "notes", "id": "a", "data": {}}))
        .await;
    let snap = c
        .request(json!({"type": "subscribe", "sub": "n", "resource": "notes", "since": {"epoch": "not-this-store", "pos": 5}}))
        .await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["resync"], "epoch_changed");
    assert_eq!(snap["records"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_keeps_working() {
    let s = TestServer::start_with(|c| c.max_message_bytes = 4096).await;
    let mut c = s.client().await;
    c.recv().await;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "bad_json"),
        ("[1,2,3]".into(), "bad_request"),
        (json!({"req": 1, "type": "teleport"}).to_string(), "unknown_type"),
        (json!({"req": 2, "type": "get", "resource": 42, "id": "a"}).to_string(), "bad_request"),
        (json!({"req": 3, "type": "get", "resource": "todos"}).to_string(), "bad_request"),
        (json!({"req": 4, "type": "get", "resource": "bad/name", "id": "a"}).to_string(), "invalid_name"),
        (json!({"req": 5, "type": "get", "resource": "todos", "id": "has space"}).to_string(), "invalid_name"),
        (json!({"req": 6, "type": "create", "resource": "todos", "id": "a", "data": [1]}).to_string(), "bad_request"),
        (json!({"req": 7, "type": "unsubscribe", "sub": "nope"}).to_string(), "unknown_subscription"),
        (json!({"req": 8, "type": "create", "resource": "todos", "data": {"big": "x".repeat(5000)}}).to_string(), "too_large"),
    ];
    for (text, code) in cases {
        c.send_text(&text).await;
        let e = c.recv().await;
        assert_eq!(e["type"], "error", "{text} -> {e}");
        assert_eq!(e["code"], code, "{text} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(req) = parsed.get("req") {
            if code != "too_large" {
                assert_eq!(&e["req"], req, "the error names the request");
            }
        }
    }
    // Binary frames are refused with an error, not a close.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_eq!(c.recv().await["code"], "bad_request");
    let r = c
        .request(json!({"type": "create", "resource": "todos", "id": "ok", "data": {}}))
        .await;
    assert_eq!(r["type"], "result", "the connection still works: {r}");
}

#[tokio::test]
async fn topics_carry_ephemeral_messages_from_ws_and_http() {
    let s = TestServer::start().await;
    let mut sub = s.client().await;
    sub.recv().await;
    let snap = sub
        .request(json!({"type": "subscribe", "sub": "logs", "topic": "logs/node-1"}))
        .await;
    assert_eq!(snap["type"], "snapshot");
    let mut publisher = s.client().await;
    publisher.recv().await;
    let r = publisher
        .request(json!({"type": "publish", "topic": "logs/node-1", "data": {"line": "booted"}}))
        .await;
    assert_eq!(r["type"], "result");
    let m = sub.recv().await;
    assert_eq!(
        (m["type"].clone(), m["data"].clone()),
        (json!("message"), json!({"line": "booted"}))
    );
    let status = reqwest::Client::new()
        .post(s.http("/publish/logs/node-1"))
        .body(r#"{"line":"from http"}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert_eq!(sub.recv().await["data"]["line"], "from http");
}

#[tokio::test]
async fn presence_join_and_leave_are_announced() {
    let s = TestServer::start().await;
    let mut a = s.client().await;
    a.recv().await;
    let r = a
        .request(json!({"type": "join", "room": "doc-1", "user": "alice"}))
        .await;
    assert_eq!(r["members"], json!(["alice"]));
    let mut b = s.client().await;
    b.recv().await;
    let r = b
        .request(json!({"type": "join", "room": "doc-1", "user": "bob"}))
        .await;
    assert_eq!(r["members"], json!(["alice", "bob"]));
    let joined = a.recv().await;
    assert_eq!(
        (joined["event"].clone(), joined["user"].clone()),
        (json!("join"), json!("bob"))
    );
    drop(b);
    let left = a.recv().await;
    assert_eq!(
        (left["event"].clone(), left["members"].clone()),
        (json!("leave"), json!(["alice"]))
    );
}

#[tokio::test]
async fn retry_resends_a_reply_and_flush_releases_holdings() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.recv().await;
    c.send(json!({"req": "w1", "type": "create", "resource": "docs", "id": "d", "data": {"v": 1}}))
        .await;
    let first = c.recv().await;
    c.send(json!({"req": "w1", "type": "retry"})).await;
    let again = c.recv().await;
    assert_eq!(first["record"], again["record"]);
    assert_eq!(again["msg"], first["msg"].as_u64().unwrap() + 1);
    c.send(json!({"req": "w1", "type": "done"})).await;
    c.send(json!({"req": "w1", "type": "retry"})).await;
    assert_eq!(c.recv().await["code"], "not_found");

    c.request(json!({"type": "subscribe", "sub": "d", "resource": "docs", "id": "d"}))
        .await;
    let r = c
        .request(json!({"type": "flush", "resource": "docs", "id": "d"}))
        .await;
    assert_eq!(r["subs"], json!(["d"]));
    let mut w = s.client().await;
    w.recv().await;
    w.request(json!({"type": "patch", "resource": "docs", "id": "d", "data": {"v": 2}}))
        .await;
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn pipelined_writes_are_answered_in_order_and_seen_by_what_follows() {
    let s = TestServer::start().await;
    let (mut c, _) = Client::canonical(&s.url("/ws")).await;
    // 200 writes sent without waiting (more than one connection may have in flight),
    // a refused one among them, then a read: every answer in request order.
    let mut batch = Vec::new();
    for i in 1..=200u64 {
        batch.push(
            json!({"req": i, "type": "upsert", "resource": "pipe", "id": "one", "data": {"n": i}}),
        );
        if i == 100 {
            batch.push(json!({"req": "stale", "type": "update", "resource": "pipe", "id": "one", "data": {}, "version": 1}));
        }
    }
    batch.push(json!({"req": "read", "type": "get", "resource": "pipe", "id": "one"}));
    for m in batch {
        c.send(m).await;
    }

    let mut version = 0;
    for i in 1..=200u64 {
        let r = c.recv().await;
        assert_eq!(r["req"], i, "answers in request order: {r}");
        assert_eq!(r["type"], "result", "{r}");
        version += 1;
        assert_eq!(r["version"], version, "{r}");
        if i == 100 {
            let r = c.recv().await;
            assert_eq!(r["req"], "stale", "{r}");
            assert_eq!(r["code"], "version_conflict", "{r}");
        }
    }
    let r = c.recv().await;
    assert_eq!(r["req"], "read", "{r}");
    assert_eq!(
        r["record"]["version"], 200,
        "the read sees every write before it: {r}"
    );
    assert_eq!(r["record"]["data"]["n"], 200, "{r}");
}

#[tokio::test]
async fn retry_keeps_small_replies_but_not_a_megabyte_of_them() {
    let s = TestServer::start().await;
    let (mut c, _) = Client::canonical(&s.url("/ws")).await;
    let blob = "x".repeat(100_000);
    for i in 0..12 {
        let r = c
            .request(json!({"type": "upsert", "resource": "big", "id": format!("b{i}"), "data": {"blob": blob}}))
            .await;
        assert_eq!(r["type"], "result", "{r}");
    }
    c.send(json!({"req": "small", "type": "get", "resource": "big", "id": "b0"}))
        .await;
    assert_eq!(c.recv().await["req"], "small");
    c.send(json!({"req": "huge", "type": "query", "resource": "big"}))
        .await;
    let huge = c.recv().await;
    assert_eq!(huge["records"].as_array().map(Vec::len), Some(12));

    // The 1.2 MB answer was sent but not kept; the small one still is.
    c.send(json!({"type": "retry", "req": "huge"})).await;
    let r = c.recv().await;
    assert_eq!(
        (&r["req"], &r["code"]),
        (&json!("huge"), &json!("not_found")),
        "{r}"
    );
    c.send(json!({"type": "retry", "req": "small"})).await;
    let r = c.recv().await;
    assert_eq!(r["req"], "small", "{r}");
    assert_eq!(r["record"]["id"], "b0", "{r}");
}
