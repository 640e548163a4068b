//! Issue 3's cross-dialect promise: a change made through any dialect or the HTTP API
//! reaches matching watchers on every other dialect and on `/ws`.
//!
//! One record, `documents/shared`, is watched at once from every dialect the server
//! speaks: `/ws` (a record subscription), `/monorail/documents` (a watch by id),
//! `/talk` (the document open), `/crud` (a GET holds the id) and `/txn` (a retrieve
//! holds the record). Then every writer takes a turn: the HTTP API, `/ws`, `/talk`,
//! `/crud` and `/txn` (MonoRail's clients only read, as the seed says). After each
//! write, every watcher must see exactly that write: every pair "write on A, watch on
//! B" is covered, same-dialect pairs on separate connections included.
//!
//! The dialects are taken from `registry()`, so a dialect added later joins the test
//! when it has an entry below; one that is registered but unknown here fails it.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const ID: &str = "shared";

/// A connection that watches `documents/shared`, set up and past its first answer.
async fn watcher(s: &TestServer, dialect: &str) -> Client {
    match dialect {
        "canonical" => {
            let mut c = s.client().await;
            c.recv().await;
            let snap = c
                .request(
                    json!({"type": "subscribe", "sub": "w", "resource": "documents", "id": ID}),
                )
                .await;
            assert_eq!(snap["type"], "snapshot", "{snap}");
            c
        }
        "monorail" => {
            let mut c = Client::connect(&s.url("/monorail/documents")).await;
            c.send(json!({"handler": "watch", "params": {"id": ID}}))
                .await;
            let list = c.recv().await;
            assert_eq!(list["handler"], "list", "{list}");
            c
        }
        "talk" => {
            let mut c = Client::connect(&s.url("/talk")).await;
            c.send(json!({"command": "document:open", "id": ID})).await;
            let answer = c.recv().await;
            assert_eq!(answer["status"], "success", "{answer}");
            c
        }
        "crud" => {
            let mut c = Client::connect(&s.url("/crud")).await;
            c.send(json!({"action": "GET", "data": {"documents": {"id": ID}}}))
                .await;
            let answer = c.recv().await;
            assert_eq!(answer["action"], "POST", "{answer}");
            c
        }
        "txn" => {
            let mut c = Client::connect(&s.url("/txn")).await;
            c.send(json!({"trans_id": "watch", "action": "retrieve", "resource": "documents", "parameters": {"id": ID}}))
                .await;
            let answer = c.recv().await;
            assert_eq!(answer["action"], "RETRIEVED", "{answer}");
            c
        }
        other => panic!("registered dialect {other:?} has no watcher in this test: add one"),
    }
}

/// The record body a watcher's next message reports.
async fn seen(dialect: &str, c: &mut Client) -> Value {
    let m = c.recv().await;
    let (kind, data) = match dialect {
        "canonical" => (m["type"].clone(), m["data"].clone()),
        "monorail" => (m["handler"].clone(), m["data"].clone()),
        "talk" => (m["command"].clone(), m["data"].clone()),
        "crud" => (m["action"].clone(), m["data"]["documents"].clone()),
        "txn" => (m["action"].clone(), m["response"]["data"].clone()),
        other => panic!("no reader for {other:?}"),
    };
    let expected_kind = match dialect {
        "canonical" => "PUT",
        "monorail" => "item",
        "talk" => "document:update",
        "crud" => "POST",
        _ => "UPDATE",
    };
    assert_eq!(kind, expected_kind, "{dialect} got {m}");
    data
}

/// A connection that writes through `dialect` (None for the HTTP API).
async fn writer(s: &TestServer, dialect: &str) -> Option<Client> {
    match dialect {
        "http" => None,
        "canonical" => {
            let mut c = s.client().await;
            c.recv().await;
            Some(c)
        }
        "talk" => Some(Client::connect(&s.url("/talk")).await),
        "crud" => Some(Client::connect(&s.url("/crud")).await),
        "txn" => Some(Client::connect(&s.url("/txn")).await),
        other => panic!("no writer for {other:?}"),
    }
}

/// Replaces `documents/shared` with `{"by": dialect, "n": n}` and waits for the answer.
async fn write(s: &TestServer, dialect: &str, c: Option<&mut Client>, n: u64) {
    let body = json!({"by": dialect, "n": n});
    let Some(c) = c else {
        let status = reqwest::Client::new()
            .put(s.http(&format!("/api/documents/{ID}")))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        return;
    };
    let ack = match dialect {
        "canonical" => {
            c.request(json!({"type": "update", "resource": "documents", "id": ID, "data": body}))
                .await
        }
        "talk" => {
            c.send(json!({"command": "document:update", "id": ID, "data": body}))
                .await;
            c.recv().await
        }
        "crud" => {
            let mut record = body.clone();
            record["id"] = ID.into();
            c.send(json!({"action": "POST", "data": {"documents": record}}))
                .await;
            c.recv().await
        }
        "txn" => {
            let mut parameters = body.clone();
            parameters["id"] = ID.into();
            c.send(json!({"trans_id": format!("w{n}"), "action": "update", "resource": "documents", "parameters": parameters}))
                .await;
            c.recv().await
        }
        other => panic!("no writer for {other:?}"),
    };
    let ok = match dialect {
        "canonical" => ack["type"] == "result",
        "talk" => ack["status"] == "success",
        "crud" => ack["action"] == "POST",
        _ => ack["action"] == "UPDATE",
    };
    assert!(ok, "the write through {dialect} failed: {ack}");
}

#[tokio::test]
async fn every_write_reaches_every_watcher_on_every_dialect() {
    let registered: Vec<&str> = tether_dialects::registry()
        .iter()
        .map(|d| d.name())
        .collect();
    for required in ["canonical", "monorail", "talk"] {
        assert!(
            registered.contains(&required),
            "{required} is not registered"
        );
    }
    let s = TestServer::start().await;
    let created = reqwest::Client::new()
        .post(s.http("/api/documents"))
        .body(json!({"id": ID, "by": "setup", "n": 0}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(created, 201);

    let mut watchers = Vec::new();
    for dialect in &registered {
        watchers.push((*dialect, watcher(&s, dialect).await));
    }
    // Every dialect that can write, and the HTTP API. MonoRail's clients only read.
    let writers: Vec<&str> = std::iter::once("http")
        .chain(registered.iter().copied().filter(|d| *d != "monorail"))
        .collect();

    let mut pairs = Vec::new();
    for (n, by) in (1u64..).zip(&writers) {
        let mut conn = writer(&s, by).await;
        write(&s, by, conn.as_mut(), n).await;
        for (dialect, c) in &mut watchers {
            let data = seen(dialect, c).await;
            assert_eq!(
                data["by"], *by,
                "{dialect} watcher, write through {by}: {data}"
            );
            assert_eq!(
                data["n"], n,
                "{dialect} watcher, write through {by}: {data}"
            );
            pairs.push(format!("{by} -> {dialect}"));
        }
    }
    // Each write reached each watcher once: nothing more is on its way.
    for (_, c) in &mut watchers {
        c.expect_silence(QUIET).await;
    }
    assert_eq!(pairs.len(), writers.len() * registered.len());
    eprintln!(
        "covered {} write/watch pairs: {}",
        pairs.len(),
        pairs.join(", ")
    );
}
