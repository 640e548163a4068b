//! `/crud` (seed 000) against the real server: the seed's own examples, holding ids,
//! updates from other connections and dialects, and bad input.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

async fn crud(s: &TestServer) -> Client {
    Client::connect(&s.url("/crud")).await
}

/// The seed's record for `id`.
fn event(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "start_time": "2014-7-13-101200",
        "end_time": "2014-7-13-101200",
        "user_id": "asdfk1kl1"
    })
}

fn with_msg(mut v: Value, msg: u64) -> Value {
    v["msg"] = msg.into();
    v
}

#[tokio::test]
async fn the_seed_examples_replay() {
    let s = TestServer::start().await;
    let mut c = crud(&s).await;

    // POST: the client populates the id; the server's POST is the confirmation.
    let post =
        json!({"action": "POST", "data": {"event": event("lkajdsf12", "This is my new event")}});
    c.send(post.clone()).await;
    assert_eq!(
        c.recv().await,
        with_msg(post, 1),
        "the first message is msg 1"
    );

    // GET of an id someone else created: answered with a POST naming the asked id.
    let mut other = crud(&s).await;
    let created =
        json!({"action": "POST", "data": {"event": event("alksdj1", "This is the event")}});
    other.send(created.clone()).await;
    other.recv().await;
    c.send(json!({"action": "GET", "data": {"event": {"id": "alksdj1"}}}))
        .await;
    assert_eq!(c.recv().await, with_msg(created, 2));

    // DELETE: success answers DELETE with the id.
    other
        .send(json!({"action": "POST", "data": {"event": event("kaljslfjk1", "This is my new event")}}))
        .await;
    other.recv().await;
    let delete = json!({"action": "DELETE", "data": {"event": {"id": "kaljslfjk1"}}});
    c.send(delete.clone()).await;
    assert_eq!(c.recv().await, with_msg(delete, 3));
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_get_of_a_missing_id_is_answered_when_it_appears() {
    let s = TestServer::start().await;
    let mut waiting = crud(&s).await;
    waiting
        .send(json!({"action": "GET", "data": {"event": {"id": "later"}}}))
        .await;
    waiting.expect_silence(QUIET).await;

    let mut writer = crud(&s).await;
    writer
        .send(json!({"action": "POST", "data": {"event": {"id": "later", "name": "here now"}}}))
        .await;
    let confirmed = writer.recv().await;
    assert_eq!(confirmed["data"]["event"]["name"], "here now");

    let answer = waiting.recv().await;
    assert_eq!(
        answer,
        json!({"msg": 1, "action": "POST", "data": {"event": {"id": "later", "name": "here now"}}})
    );
    // Asking again answers again.
    waiting
        .send(json!({"action": "GET", "data": {"event": {"id": "later"}}}))
        .await;
    assert_eq!(waiting.recv().await["data"]["event"]["name"], "here now");
}

#[tokio::test]
async fn everyone_holding_an_id_gets_its_updates_once() {
    let s = TestServer::start().await;
    let mut a = crud(&s).await;
    let mut b = crud(&s).await;
    let mut c = crud(&s).await;
    b.send(json!({"action": "POST", "data": {"event": {"id": "e1", "v": 1}}}))
        .await;
    assert_eq!(b.recv().await["data"]["event"]["v"], 1);
    a.send(json!({"action": "GET", "data": {"event": {"id": "e1"}}}))
        .await;
    assert_eq!(a.recv().await["data"]["event"]["v"], 1);

    // C writes: A (asked) and B (wrote) are told; C is confirmed once.
    for v in 2..=4 {
        c.send(json!({"action": "POST", "data": {"event": {"id": "e1", "v": v}}}))
            .await;
        assert_eq!(c.recv().await["data"]["event"], json!({"id": "e1", "v": v}));
        for holder in [&mut a, &mut b] {
            let update = holder.recv().await;
            assert_eq!(update["action"], "POST");
            assert_eq!(update["data"]["event"], json!({"id": "e1", "v": v}));
        }
    }
    // B writes again: it is confirmed once, not also told of its own change.
    b.send(json!({"action": "POST", "data": {"event": {"id": "e1", "v": 5}}}))
        .await;
    assert_eq!(b.recv().await["data"]["event"]["v"], 5);
    for holder in [&mut a, &mut c] {
        assert_eq!(holder.recv().await["data"]["event"]["v"], 5);
    }

    c.send(json!({"action": "DELETE", "data": {"event": {"id": "e1"}}}))
        .await;
    let gone = json!({"action": "DELETE", "data": {"event": {"id": "e1"}}});
    for holder in [&mut c, &mut a, &mut b] {
        let mut m = holder.recv().await;
        m.as_object_mut().unwrap().remove("msg");
        assert_eq!(m, gone);
    }
    for holder in [&mut a, &mut b, &mut c] {
        holder.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_post_replaces_the_record_and_a_delete_of_nothing_is_a_delete() {
    let s = TestServer::start().await;
    let mut c = crud(&s).await;
    c.send(json!({"action": "POST", "data": {"event": {"id": "r", "a": 1, "b": 2}}}))
        .await;
    c.recv().await;
    c.send(json!({"action": "POST", "data": {"event": {"id": "r", "b": 3}}}))
        .await;
    assert_eq!(c.recv().await["data"]["event"], json!({"id": "r", "b": 3}));

    let delete = json!({"action": "DELETE", "data": {"event": {"id": "never-was"}}});
    c.send(delete.clone()).await;
    let mut m = c.recv().await;
    m.as_object_mut().unwrap().remove("msg");
    assert_eq!(m, delete);

    // A POST without an id gets one made by the server.
    c.send(json!({"action": "POST", "data": {"note": {"text": "hi"}}}))
        .await;
    let made = c.recv().await;
    assert_eq!(made["action"], "POST");
    assert!(made["data"]["note"]["id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(made["data"]["note"]["text"], "hi");
}

#[tokio::test]
async fn lists_numbers_and_several_kinds() {
    let s = TestServer::start().await;
    let mut c = crud(&s).await;
    c.send(json!({"action": "POST", "data": {"event": [{"id": 7, "n": 1}, {"id": "b", "n": 2}], "user": {"id": "u"}}}))
        .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = c.recv().await;
        assert_eq!(m["action"], "POST");
        seen.push(m["data"].clone());
    }
    assert!(
        seen.contains(&json!({"event": {"id": 7, "n": 1}})),
        "{seen:?}"
    );
    assert!(seen.contains(&json!({"event": {"id": "b", "n": 2}})));
    assert!(seen.contains(&json!({"user": {"id": "u"}})));
}

#[tokio::test]
async fn changes_from_other_dialects_reach_holders_and_back() {
    let s = TestServer::start().await;
    let mut holder = crud(&s).await;
    holder
        .send(json!({"action": "GET", "data": {"todos": {"id": "a"}}}))
        .await;
    holder.expect_silence(Duration::from_millis(100)).await;

    // One /ws connection writes, another watches, so pushes and results don't mix.
    let (mut ws, _) = Client::canonical(&s.url("/ws")).await;
    let (mut watcher, _) = Client::canonical(&s.url("/ws")).await;
    let snap = watcher
        .request(json!({"type": "subscribe", "sub": "t", "resource": "todos"}))
        .await;
    assert_eq!(snap["type"], "snapshot");

    ws.request(
        json!({"type": "create", "resource": "todos", "id": "a", "data": {"title": "milk"}}),
    )
    .await;
    assert_eq!(
        holder.recv().await["data"],
        json!({"todos": {"id": "a", "title": "milk"}})
    );
    assert_eq!(watcher.recv_type("PUT").await["id"], "a");

    ws.request(json!({"type": "patch", "resource": "todos", "id": "a", "data": {"done": true}}))
        .await;
    assert_eq!(
        holder.recv().await["data"],
        json!({"todos": {"id": "a", "title": "milk", "done": true}})
    );
    watcher.recv_type("PATCH").await;

    // The HTTP API too.
    let r = reqwest::Client::new()
        .put(s.http("/api/todos/a"))
        .body(r#"{"title":"eggs"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        holder.recv().await["data"],
        json!({"todos": {"id": "a", "title": "eggs"}})
    );
    watcher.recv_type("PUT").await;

    // And a /crud write reaches the /ws watcher.
    holder
        .send(json!({"action": "POST", "data": {"todos": {"id": "a", "title": "bread"}}}))
        .await;
    assert_eq!(holder.recv().await["data"]["todos"]["title"], "bread");
    let put = watcher.recv_type("PUT").await;
    assert_eq!(put["data"], json!({"title": "bread"}));

    ws.request(json!({"type": "delete", "resource": "todos", "id": "a"}))
        .await;
    assert_eq!(holder.recv().await["action"], "DELETE");
    holder.expect_silence(QUIET).await;
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let s = TestServer::start().await;
    let mut c = crud(&s).await;
    let cases: [(&str, &str); 11] = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        (r#"{"data": {"event": {"id": "a"}}}"#, "bad_request"),
        (
            r#"{"action": 5, "data": {"event": {"id": "a"}}}"#,
            "bad_request",
        ),
        (
            r#"{"action": "PUT", "data": {"event": {"id": "a"}}}"#,
            "unknown_type",
        ),
        (r#"{"action": "GET"}"#, "bad_request"),
        (r#"{"action": "GET", "data": "event"}"#, "bad_request"),
        (r#"{"action": "GET", "data": {}}"#, "bad_request"),
        (r#"{"action": "GET", "data": {"event": {}}}"#, "bad_request"),
        (
            r#"{"action": "DELETE", "data": {"event": 42}}"#,
            "bad_request",
        ),
        (
            r#"{"action": "GET", "data": {"event": {"id": "no spaces"}}}"#,
            "invalid_name",
        ),
    ];
    for (text, code) in cases {
        c.send_text(text).await;
        let m = c.recv().await;
        assert_eq!(m["action"], "ERROR", "{text}: {m}");
        assert_eq!(m["data"]["error"]["code"], code, "{text}: {m}");
        assert_eq!(m["data"]["error"]["status"], 400, "{text}: {m}");
        assert!(m["data"]["error"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    // The error names the record when it can.
    c.send_text(r#"{"action": "GET", "data": {"event": {"id": "no spaces"}}}"#)
        .await;
    assert_eq!(c.recv().await["data"]["event"]["id"], "no spaces");

    // Still open and working.
    c.send(json!({"action": "POST", "data": {"event": {"id": "ok"}}}))
        .await;
    let m = c.recv().await;
    assert_eq!(m["action"], "POST");
    assert_eq!(m["msg"], cases.len() as u64 + 2);
}

#[tokio::test]
async fn a_burst_of_own_posts_is_confirmed_once_each() {
    let s = TestServer::start().await;
    let mut c = crud(&s).await;
    for i in 0..50 {
        c.send(json!({"action": "POST", "data": {"event": {"id": "k", "i": i}}}))
            .await;
    }
    for i in 0..50 {
        let m = c.recv().await;
        assert_eq!(m["data"]["event"], json!({"id": "k", "i": i}), "{m}");
    }
    c.expect_silence(QUIET).await;
}
