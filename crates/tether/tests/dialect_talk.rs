//! `/talk` (seed 003) against the real server: the seed's own example exchange, the
//! `route` form, documents watched across dialects, presence, relays shared with `/ws`,
//! and bad input.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

async fn talk(s: &TestServer) -> Client {
    Client::connect(&s.url("/talk")).await
}

/// A message without its `msg` (checked for gaps by `Client::recv`).
fn body(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("msg");
    v
}

#[tokio::test]
async fn the_seed_example_exchange() {
    let s = TestServer::start().await;
    let mut client1 = talk(&s).await;
    let mut client2 = talk(&s).await;

    // Client1 -> Server: Create an empty document
    client1
        .send(json!({"command": "document:create", "id": "hello-world"}))
        .await;
    // Server -> Client1: Done.
    assert_eq!(client1.recv().await, json!({"msg": 1, "status": "success"}));

    // Client2 -> Server: Open document `hello-world`
    client2
        .send(json!({"command": "document:get", "id": "hello-world"}))
        .await;
    // Server -> Client2: Done. There's two active users, including you.
    let answer = client2.recv().await;
    assert_eq!(answer["msg"], 1);
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["document"], json!({"id": "hello-world"}));
    let users = answer["active-users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 2, "{answer}");

    // The others are told: Client1 learns that Client2 joined.
    let joined = client1.recv().await;
    assert_eq!(joined["command"], "user:join");
    assert_eq!(joined["document"], "hello-world");
    assert!(users.contains(&joined["user"]), "{joined}");
    assert_eq!(joined["active-users"].as_array().unwrap().len(), 2);

    // Client1 -> Server: Create new task
    let task =
        json!({"command": "node:create", "type": "/type/task", "data": {"name": "A new task"}});
    client1.send(task.clone()).await;
    // Server -> Client 1: Confirmed.
    assert_eq!(body(client1.recv().await), json!({"status": "success"}));
    // Server -> Client 2: the command, exactly.
    assert_eq!(body(client2.recv().await), task);
    // Only the *others* get it.
    client1.expect_silence(QUIET).await;
    client2.expect_silence(QUIET).await;
}

#[tokio::test]
async fn active_users_name_the_users_when_they_say_who_they_are() {
    let s = TestServer::start().await;
    let mut client1 = talk(&s).await;
    let mut client2 = talk(&s).await;
    client1
        .send(json!({"command": "document:create", "id": "hello-world", "user": "client1"}))
        .await;
    assert_eq!(client1.recv().await["status"], "success");
    client2
        .send(json!({"command": "document:get", "id": "hello-world", "user": "client2"}))
        .await;
    assert_eq!(
        body(client2.recv().await),
        json!({"status": "success", "document": {"id": "hello-world"}, "active-users": ["client1", "client2"]})
    );
    assert_eq!(
        body(client1.recv().await),
        json!({"command": "user:join", "document": "hello-world", "user": "client2", "active-users": ["client1", "client2"]})
    );
}

#[tokio::test]
async fn route_form_updates_and_changes_from_elsewhere() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let mut a = talk(&s).await;
    let mut b = talk(&s).await;
    a.send(json!({"command": "document:create", "id": "doc", "data": {"title": "Draft"}}))
        .await;
    assert_eq!(a.recv().await["status"], "success");
    // The REST-like form of the seed: route "document/get".
    b.send(json!({"route": "document/get", "id": "doc"})).await;
    let answer = b.recv().await;
    assert_eq!(answer["document"], json!({"id": "doc", "title": "Draft"}));
    assert_eq!(a.recv().await["command"], "user:join");

    // document:update: stored, confirmed to the writer, the others see the document.
    a.send(json!({"command": "document:update", "id": "doc", "data": {"title": "Final"}}))
        .await;
    assert_eq!(body(a.recv().await), json!({"status": "success"}));
    assert_eq!(
        body(b.recv().await),
        json!({"command": "document:update", "id": "doc", "data": {"title": "Final"}})
    );
    a.expect_silence(QUIET).await; // the writer does not get its own update back
    let stored: Value = http
        .get(s.http("/api/documents/doc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["data"], json!({"title": "Final"}));

    // A change through the HTTP API reaches everyone with the document open.
    let status = http
        .patch(s.http("/api/documents/doc"))
        .body(r#"{"tags":["x"]}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    for c in [&mut a, &mut b] {
        assert_eq!(
            body(c.recv().await),
            json!({"command": "document:update", "id": "doc", "data": {"title": "Final", "tags": ["x"]}})
        );
    }
    // document:open answers like document:get; opening it again keeps one stream.
    b.send(json!({"command": "document:open", "id": "doc"}))
        .await;
    let again = b.recv().await;
    assert_eq!(again["document"]["tags"], json!(["x"]));
    assert_eq!(again["active-users"].as_array().unwrap().len(), 2);
    a.expect_silence(QUIET).await; // re-opening is not a leave and a join

    // A delete reaches the others as document:delete.
    b.send(json!({"command": "document:delete", "id": "doc"}))
        .await;
    assert_eq!(body(b.recv().await), json!({"status": "success"}));
    assert_eq!(
        body(a.recv().await),
        json!({"command": "document:delete", "id": "doc"})
    );
    b.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_others_hear_joins_and_leaves() {
    let s = TestServer::start().await;
    let mut a = talk(&s).await;
    a.send(json!({"command": "document:create", "id": "d1", "user": "ann"}))
        .await;
    a.recv().await;
    a.send(json!({"command": "document:create", "id": "d2", "user": "ann"}))
        .await;
    a.recv().await;
    a.send(json!({"command": "document:open", "id": "d1", "user": "ann"}))
        .await;
    assert_eq!(a.recv().await["active-users"], json!(["ann"]));

    let mut b = talk(&s).await;
    b.send(json!({"command": "document:open", "id": "d1", "user": "bob"}))
        .await;
    b.recv().await;
    assert_eq!(
        body(a.recv().await),
        json!({"command": "user:join", "document": "d1", "user": "bob", "active-users": ["ann", "bob"]})
    );
    // Opening another document leaves the first: a client has one open at a time.
    b.send(json!({"command": "document:open", "id": "d2", "user": "bob"}))
        .await;
    assert_eq!(b.recv().await["active-users"], json!(["bob"]));
    assert_eq!(
        body(a.recv().await),
        json!({"command": "user:leave", "document": "d1", "user": "bob", "active-users": ["ann"]})
    );
    // Relays now go to d2's room only.
    b.send(json!({"command": "node:create", "data": {}})).await;
    assert_eq!(b.recv().await["status"], "success");
    a.expect_silence(QUIET).await;

    // Closing the connection leaves too.
    b.send(json!({"command": "document:open", "id": "d1", "user": "bob"}))
        .await;
    b.recv().await;
    assert_eq!(a.recv().await["command"], "user:join");
    drop(b);
    let left = a.recv().await;
    assert_eq!(
        (left["command"].clone(), left["user"].clone()),
        (json!("user:leave"), json!("bob"))
    );

    // document:close leaves, and is confirmed.
    let mut c = talk(&s).await;
    c.send(json!({"command": "document:open", "id": "d1", "user": "cat"}))
        .await;
    c.recv().await;
    assert_eq!(a.recv().await["user"], "cat");
    c.send(json!({"command": "document:close"})).await;
    assert_eq!(body(c.recv().await), json!({"status": "success"}));
    assert_eq!(a.recv().await["command"], "user:leave");
    c.send(json!({"command": "node:create"})).await;
    assert_eq!(c.recv().await["code"], "bad_request", "nothing is open now");
}

#[tokio::test]
async fn ws_clients_share_the_rooms_and_relays() {
    let s = TestServer::start().await;
    let mut t = talk(&s).await;
    t.send(json!({"command": "document:create", "id": "shared", "user": "tess"}))
        .await;
    t.recv().await;
    let mut ws = s.client().await;
    ws.recv().await;
    let r = ws
        .request(json!({"type": "join", "room": "documents/shared", "user": "walt"}))
        .await;
    assert_eq!(r["members"], json!(["tess", "walt"]));
    assert_eq!(t.recv().await["user"], "walt");

    // /talk -> /ws: a relay, from the user it came from.
    t.send(json!({"command": "node:create", "type": "/type/task", "data": {"name": "A"}}))
        .await;
    t.recv().await;
    let relay = ws.recv().await;
    assert_eq!(
        body(relay),
        json!({"type": "relay", "room": "documents/shared", "from": "tess",
               "data": {"command": "node:create", "type": "/type/task", "data": {"name": "A"}}})
    );
    // /ws -> /talk.
    let r = ws
        .request(json!({"type": "relay", "room": "documents/shared", "data": {"command": "node:delete", "id": "n1"}}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(
        body(t.recv().await),
        json!({"command": "node:delete", "id": "n1"})
    );
    // Relaying into a room the connection is not in is refused.
    let r = ws
        .request(json!({"type": "relay", "room": "documents/elsewhere", "data": {}}))
        .await;
    assert_eq!(r["code"], "bad_request");
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let s = TestServer::start_with(|c| c.max_message_bytes = 4096).await;
    let mut other = talk(&s).await;
    other
        .send(json!({"command": "document:create", "id": "exists"}))
        .await;
    other.recv().await;

    let mut c = talk(&s).await;
    let cases: Vec<(String, &str, Value)> = vec![
        ("{not json".into(), "bad_json", Value::Null),
        ("[1, 2]".into(), "bad_request", Value::Null),
        (json!({"id": "x"}).to_string(), "bad_request", Value::Null),
        (
            json!({"command": 7}).to_string(),
            "bad_request",
            Value::Null,
        ),
        (
            json!({"route": ["document", "get"]}).to_string(),
            "bad_request",
            Value::Null,
        ),
        (
            json!({"command": "dance"}).to_string(),
            "unknown_type",
            json!("dance"),
        ),
        (
            json!({"command": "document:fly", "id": "x"}).to_string(),
            "unknown_type",
            json!("document:fly"),
        ),
        (
            json!({"command": "document:get"}).to_string(),
            "bad_request",
            json!("document:get"),
        ),
        (
            json!({"command": "document:get", "id": "a b"}).to_string(),
            "invalid_name",
            json!("document:get"),
        ),
        (
            json!({"command": "document:get", "id": "missing"}).to_string(),
            "not_found",
            json!("document:get"),
        ),
        (
            json!({"command": "document:create", "id": "exists"}).to_string(),
            "already_exists",
            json!("document:create"),
        ),
        (
            json!({"command": "document:update", "id": "exists", "data": "text"}).to_string(),
            "bad_request",
            json!("document:update"),
        ),
        (
            json!({"command": "document:update", "id": "missing", "data": {}}).to_string(),
            "not_found",
            json!("document:update"),
        ),
        (
            json!({"command": "document:create", "id": "x", "user": ""}).to_string(),
            "bad_request",
            json!("document:create"),
        ),
        (
            json!({"command": "node:create", "type": "/type/task"}).to_string(),
            "bad_request",
            json!("node:create"),
        ),
        (
            json!({"command": "user:join"}).to_string(),
            "bad_request",
            json!("user:join"),
        ),
        (
            json!({"command": "node:create", "pad": "x".repeat(5000)}).to_string(),
            "too_large",
            Value::Null,
        ),
    ];
    for (text, code, command) in cases {
        c.send_text(&text).await;
        let e = c.recv().await;
        assert_eq!(e["status"], "error", "{text} -> {e}");
        assert_eq!(e["code"], code, "{text} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert_eq!(
            e.get("command").cloned().unwrap_or(Value::Null),
            command,
            "{text} -> {e}"
        );
    }
    // A failed open or create did not join anyone: the other client heard nothing.
    other.expect_silence(QUIET).await;
    c.send(json!({"command": "document:open", "id": "exists"}))
        .await;
    let r = c.recv().await;
    assert_eq!(r["status"], "success", "the connection still works: {r}");
    assert_eq!(other.recv().await["command"], "user:join");
}
