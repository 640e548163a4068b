//! `/txn` (seed 001) against the real server: the seed's example, every verb and its
//! failures, confirmations, indirect responses, flush, and bad input.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

async fn txn(s: &TestServer) -> Client {
    Client::connect(&s.url("/txn")).await
}

/// Sends a request and returns the next message, which must be its direct response.
async fn call(c: &mut Client, request: Value) -> Value {
    let trans_id = request["trans_id"].clone();
    c.send(request).await;
    let m = c.recv().await;
    assert_eq!(
        m["trans_id"], trans_id,
        "the direct response comes next: {m}"
    );
    m
}

fn req(trans_id: &str, action: &str, resource: &str, parameters: Value) -> Value {
    json!({"trans_id": trans_id, "action": action, "resource": resource, "parameters": parameters})
}

#[tokio::test]
async fn the_seed_example_replays() {
    let s = TestServer::start().await;
    let mut c = txn(&s).await;
    let parameters = json!({
        "title": "Canonical PCR",
        "lid": 95,
        "burnIn": {"time": 60, "temp": 95},
        "denature": {"time": 20, "temp": 95},
        "anneal": {"time": 15, "temp": 65}
    });
    let r = call(
        &mut c,
        json!({
            "trans_id": "2c592003-1667-491f-8fd2-796acbae198b",
            "service": null,
            "action": "crt_updt",
            "resource": "experiment",
            "parameters": parameters,
        }),
    )
    .await;
    assert_eq!(r["msg"], 1);
    assert_eq!(r["action"], "CRT_UPTD");
    assert_eq!(r["resource"], "experiment");
    assert_eq!(r["response"]["code"], 200);
    assert_eq!(r["response"]["message"], "OK");
    let data = r["response"]["data"].clone();
    let id = data["id"].as_str().expect("a server-made id").to_owned();
    let mut expected = parameters.clone();
    expected["id"] = id.clone().into();
    assert_eq!(data, expected);

    // The same spelled the seed's other ways, with the client's id.
    for (n, spelling) in ["crt_upd", "CRT_UPDTD", "crt_updt "].iter().enumerate() {
        let r = call(
            &mut c,
            req(
                &format!("t{n}"),
                spelling,
                "experiment",
                json!({"id": id, "lid": n}),
            ),
        )
        .await;
        assert_eq!(r["action"], "CRT_UPTD", "{spelling}");
        assert_eq!(r["response"]["data"], json!({"id": id, "lid": n}));
    }
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn every_verb_and_its_failures() {
    let s = TestServer::start().await;
    let mut c = txn(&s).await;
    let e = "experiment";

    let r = call(
        &mut c,
        req("1", "create", e, json!({"id": "e1", "title": "a"})),
    )
    .await;
    assert_eq!(r["action"], "CREATE");
    assert_eq!(r["response"]["data"], json!({"id": "e1", "title": "a"}));
    assert_eq!(r["response"]["version"], 1);

    // A retried create never duplicates.
    let r = call(
        &mut c,
        req("1", "create", e, json!({"id": "e1", "title": "a"})),
    )
    .await;
    assert_eq!(r["action"], "CREATE_FAIL");
    assert_eq!(r["response"]["code"], 409);
    assert!(r["response"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));

    let r = call(
        &mut c,
        req("2", "update", e, json!({"id": "e1", "title": "b"})),
    )
    .await;
    assert_eq!(r["action"], "UPDATE");
    assert_eq!(r["response"]["data"], json!({"id": "e1", "title": "b"}));

    let r = call(
        &mut c,
        req(
            "3",
            "patch",
            e,
            json!({"id": "e1", "deep": {"x": 1}, "title": null}),
        ),
    )
    .await;
    assert_eq!(r["action"], "PATCHED");
    assert_eq!(r["response"]["data"], json!({"id": "e1", "deep": {"x": 1}}));

    let r = call(&mut c, req("4", "retrieve", e, json!({"id": "e1"}))).await;
    assert_eq!(r["action"], "RETRIEVED");
    assert_eq!(r["response"]["data"], json!({"id": "e1", "deep": {"x": 1}}));
    assert_eq!(r["response"]["version"], 3);

    // Optimistic concurrency (an addition): 412 on a stale version.
    let mut stale = req("5", "update", e, json!({"id": "e1"}));
    stale["version"] = 1.into();
    let r = call(&mut c, stale).await;
    assert_eq!(r["action"], "UPDATE_FAIL");
    assert_eq!(r["response"]["code"], 412);
    assert_eq!(r["response"]["version"], 3);

    let r = call(&mut c, req("6", "delete", e, json!({"id": "e1"}))).await;
    assert_eq!(r["action"], "DELETED");
    assert_eq!(r["response"]["data"], json!({"id": "e1"}));

    for (verb, fail) in [
        ("delete", "DELETE_FAIL"),
        ("update", "UPDATE_FAIL"),
        ("patch", "PATCH_FAIL"),
        ("retrieve", "RETRIEVE_FAIL"),
    ] {
        let r = call(&mut c, req("7", verb, e, json!({"id": "e1", "x": 1}))).await;
        assert_eq!(r["action"], fail);
        assert_eq!(r["response"]["code"], 404, "{r}");
        assert_eq!(r["resource"], e);
    }
    // The client's own writes and failures produced no indirect responses.
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn holders_get_indirect_responses_named_by_the_change() {
    let s = TestServer::start().await;
    let mut holder = txn(&s).await;
    let mut writer = txn(&s).await;
    let e = "experiment";

    // Holding a record that does not exist yet: told when it appears.
    let r = call(&mut holder, req("h1", "retrieve", e, json!({"id": "e1"}))).await;
    assert_eq!(r["action"], "RETRIEVE_FAIL");

    call(
        &mut writer,
        req("w1", "create", e, json!({"id": "e1", "n": 1})),
    )
    .await;
    let m = holder.recv().await;
    assert_eq!(
        m,
        json!({"msg": 2, "action": "CRT_UPTD", "resource": e,
               "response": {"code": 200, "message": "OK", "version": 1, "data": {"id": "e1", "n": 1}}})
    );

    call(
        &mut writer,
        req("w2", "update", e, json!({"id": "e1", "n": 2})),
    )
    .await;
    let m = holder.recv().await;
    assert_eq!(m["action"], "UPDATE");
    assert_eq!(m["response"]["data"], json!({"id": "e1", "n": 2}));
    assert!(m.get("trans_id").is_none(), "indirect: no trans_id");

    call(
        &mut writer,
        req("w3", "crt_updt", e, json!({"id": "e1", "n": 3})),
    )
    .await;
    assert_eq!(holder.recv().await["action"], "UPDATE");

    call(
        &mut writer,
        req("w4", "patch", e, json!({"id": "e1", "m": 0})),
    )
    .await;
    let m = holder.recv().await;
    assert_eq!(m["action"], "PATCHED");
    assert_eq!(m["response"]["data"], json!({"id": "e1", "n": 3, "m": 0}));

    call(&mut writer, req("w5", "delete", e, json!({"id": "e1"}))).await;
    let m = holder.recv().await;
    assert_eq!(m["action"], "DELETED");
    assert_eq!(m["response"]["data"], json!({"id": "e1"}));

    call(
        &mut writer,
        req("w6", "create", e, json!({"id": "e1", "n": 6})),
    )
    .await;
    assert_eq!(holder.recv().await["action"], "CRT_UPTD");

    // The writer holds it too (it wrote it): the holder's write reaches it.
    call(
        &mut holder,
        req("h2", "patch", e, json!({"id": "e1", "n": 7})),
    )
    .await;
    let m = writer.recv().await;
    assert_eq!(m["action"], "PATCHED");
    assert_eq!(m["response"]["data"]["n"], 7);

    // Nobody got an indirect response for their own write.
    holder.expect_silence(QUIET).await;
    writer.expect_silence(QUIET).await;
}

#[tokio::test]
async fn flush_stops_the_notifications() {
    let s = TestServer::start().await;
    let mut holder = txn(&s).await;
    let mut writer = txn(&s).await;
    let e = "experiment";
    call(
        &mut writer,
        req("w0", "create", e, json!({"id": "a", "n": 0})),
    )
    .await;
    call(
        &mut writer,
        req("w1", "create", e, json!({"id": "b", "n": 0})),
    )
    .await;
    call(&mut holder, req("h0", "retrieve", e, json!({"id": "a"}))).await;
    call(&mut holder, req("h1", "retrieve", e, json!({"id": "b"}))).await;

    let r = call(&mut holder, req("h2", "flush", e, json!({"id": "a"}))).await;
    assert_eq!(r["action"], "FLUSHED");
    assert_eq!(r["response"]["code"], 200);
    assert_eq!(r["response"]["data"], json!({"id": "a"}));

    call(
        &mut writer,
        req("w2", "update", e, json!({"id": "a", "n": 1})),
    )
    .await;
    call(
        &mut writer,
        req("w3", "update", e, json!({"id": "b", "n": 1})),
    )
    .await;
    let m = holder.recv().await;
    assert_eq!(
        m["response"]["data"]["id"], "b",
        "only b is still held: {m}"
    );
    holder.expect_silence(QUIET).await;

    // A flush of the whole resource releases the rest.
    let r = call(
        &mut holder,
        json!({"trans_id": "h3", "action": "flush", "resource": e}),
    )
    .await;
    assert_eq!(r["response"]["data"], json!({"ids": ["b"]}));
    call(
        &mut writer,
        req("w4", "update", e, json!({"id": "b", "n": 2})),
    )
    .await;
    holder.expect_silence(QUIET).await;

    // Retrieving again holds it again.
    call(&mut holder, req("h4", "retrieve", e, json!({"id": "a"}))).await;
    call(
        &mut writer,
        req("w5", "update", e, json!({"id": "a", "n": 3})),
    )
    .await;
    assert_eq!(holder.recv().await["response"]["data"]["n"], 3);
}

#[tokio::test]
async fn confirmations_retry_done_abort() {
    let s = TestServer::start().await;
    let mut c = txn(&s).await;
    let e = "experiment";
    let first = call(&mut c, req("t1", "create", e, json!({"id": "x", "n": 1}))).await;

    // retry re-sends the same response with the next message number.
    c.send(json!({"trans_id": "t1", "action": "retry"})).await;
    let again = c.recv().await;
    let mut expected = first.clone();
    expected["msg"] = again["msg"].clone();
    assert_eq!(again, expected);
    assert_eq!(again["msg"], first["msg"].as_u64().unwrap() + 1);

    // A retry of a failure re-sends the failure.
    let failed = call(&mut c, req("t2", "create", e, json!({"id": "x"}))).await;
    assert_eq!(failed["action"], "CREATE_FAIL");
    c.send(json!({"trans_id": "t2", "action": "retry"})).await;
    assert_eq!(c.recv().await["response"], failed["response"]);

    // done forgets it: no answer, and a retry now fails.
    c.send(json!({"trans_id": "t1", "action": "done"})).await;
    c.expect_silence(Duration::from_millis(150)).await;
    c.send(json!({"trans_id": "t1", "action": "retry"})).await;
    let m = c.recv().await;
    assert_eq!(m["action"], "RETRY_FAIL");
    assert_eq!(m["trans_id"], "t1");
    assert_eq!(m["response"]["code"], 404);

    // abort forgets it too, and never undoes the write.
    call(&mut c, req("t3", "update", e, json!({"id": "x", "n": 2}))).await;
    c.send(json!({"trans_id": "t3", "action": "abort"})).await;
    c.expect_silence(Duration::from_millis(150)).await;
    let r = call(&mut c, req("t4", "retrieve", e, json!({"id": "x"}))).await;
    assert_eq!(r["response"]["data"], json!({"id": "x", "n": 2}));
    c.send(json!({"trans_id": "t3", "action": "retry"})).await;
    assert_eq!(c.recv().await["action"], "RETRY_FAIL");

    // Confirming something unknown is harmless.
    c.send(json!({"trans_id": "nope", "action": "done"})).await;
    c.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn changes_cross_dialects() {
    let s = TestServer::start().await;
    let mut holder = txn(&s).await;
    call(
        &mut holder,
        req("h", "retrieve", "todos", json!({"id": "a"})),
    )
    .await;

    // One /ws connection writes, another watches, so pushes and results don't mix.
    let (mut ws, _) = Client::canonical(&s.url("/ws")).await;
    let (mut watcher, _) = Client::canonical(&s.url("/ws")).await;
    watcher
        .request(json!({"type": "subscribe", "sub": "t", "resource": "todos"}))
        .await;
    ws.request(
        json!({"type": "create", "resource": "todos", "id": "a", "data": {"title": "milk"}}),
    )
    .await;
    let m = holder.recv().await;
    assert_eq!(m["action"], "CRT_UPTD");
    assert_eq!(m["response"]["data"], json!({"id": "a", "title": "milk"}));
    watcher.recv_type("PUT").await;

    // /txn writes reach /ws and /crud.
    let mut crud = Client::connect(&s.url("/crud")).await;
    crud.send(json!({"action": "GET", "data": {"todos": {"id": "a"}}}))
        .await;
    assert_eq!(crud.recv().await["data"]["todos"]["title"], "milk");
    call(
        &mut holder,
        req("h2", "patch", "todos", json!({"id": "a", "done": true})),
    )
    .await;
    let patch = watcher.recv_type("PATCH").await;
    assert_eq!(patch["patch"], json!({"done": true}));
    assert_eq!(
        crud.recv().await["data"]["todos"],
        json!({"id": "a", "title": "milk", "done": true})
    );
    // And /crud writes reach /txn.
    crud.send(json!({"action": "DELETE", "data": {"todos": {"id": "a"}}}))
        .await;
    assert_eq!(crud.recv().await["action"], "DELETE");
    assert_eq!(holder.recv().await["action"], "DELETED");
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let s = TestServer::start().await;
    let mut c = txn(&s).await;
    let cases: [(&str, &str, &str); 12] = [
        ("{not json", "ERROR", "bad_json"),
        ("\"just a string\"", "ERROR", "bad_request"),
        (r#"{"trans_id": "a"}"#, "ERROR", "bad_request"),
        (r#"{"trans_id": "a", "action": 3}"#, "ERROR", "bad_request"),
        (
            r#"{"trans_id": "a", "action": "fly", "resource": "e"}"#,
            "ERROR",
            "unknown_type",
        ),
        (
            r#"{"trans_id": {}, "action": "retrieve"}"#,
            "ERROR",
            "bad_request",
        ),
        (
            r#"{"action": "retrieve", "resource": "e", "parameters": {"id": "x"}}"#,
            "RETRIEVE_FAIL",
            "bad_request",
        ),
        (
            r#"{"trans_id": "a", "action": "retrieve", "resource": "e"}"#,
            "RETRIEVE_FAIL",
            "bad_request",
        ),
        (
            r#"{"trans_id": "a", "action": "create", "parameters": {"id": "x"}}"#,
            "CREATE_FAIL",
            "bad_request",
        ),
        (
            r#"{"trans_id": "a", "action": "update", "resource": "e", "parameters": "x"}"#,
            "UPDATE_FAIL",
            "bad_request",
        ),
        (
            r#"{"trans_id": "a", "action": "patch", "resource": "e", "parameters": {"id": "no spaces"}}"#,
            "PATCH_FAIL",
            "invalid_name",
        ),
        (
            r#"{"trans_id": "never-sent", "action": "retry"}"#,
            "RETRY_FAIL",
            "not_found",
        ),
    ];
    for (text, action, error) in cases {
        c.send_text(text).await;
        let m = c.recv().await;
        assert_eq!(m["action"], action, "{text}: {m}");
        assert_eq!(m["response"]["error"], error, "{text}: {m}");
        let code = if error == "not_found" { 404 } else { 400 };
        assert_eq!(m["response"]["code"], code, "{text}: {m}");
        assert!(m["response"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    // A failed request is a response like any other: retry re-sends it.
    c.send(json!({"trans_id": "a", "action": "retry"})).await;
    assert_eq!(c.recv().await["action"], "PATCH_FAIL");

    // Still open and working.
    let r = call(&mut c, req("ok", "crt_updt", "e", json!({"id": "x"}))).await;
    assert_eq!(r["action"], "CRT_UPTD");
    assert_eq!(r["msg"], cases.len() as u64 + 2);
}

#[tokio::test]
async fn a_burst_of_own_writes_gets_only_direct_responses() {
    let s = TestServer::start().await;
    let mut c = txn(&s).await;
    let mut other = txn(&s).await;
    call(&mut c, req("0", "create", "n", json!({"id": "k", "i": 0}))).await;
    call(&mut other, req("o", "retrieve", "n", json!({"id": "k"}))).await;
    // Sent without waiting, so answers and the pushes of the same changes race.
    for i in 1..=50 {
        c.send(req(
            &format!("t{i}"),
            "patch",
            "n",
            json!({"id": "k", "i": i}),
        ))
        .await;
    }
    for i in 1..=50 {
        let m = c.recv().await;
        assert_eq!(m["trans_id"], format!("t{i}"), "{m}");
        assert_eq!(m["action"], "PATCHED");
        assert_eq!(m["response"]["data"]["i"], i);
        let seen = other.recv().await;
        assert_eq!(seen["action"], "PATCHED");
        assert_eq!(seen["response"]["data"]["i"], i);
    }
    c.expect_silence(QUIET).await;
    other.expect_silence(QUIET).await;
}
