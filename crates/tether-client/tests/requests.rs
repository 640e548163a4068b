//! Typed requests against the real server: answers are typed, refusals keep the
//! server's error code, and bad input is caught before it is sent.

mod common;

use common::TestServer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tether_client::{Client, ClientError, ErrorCode, Query, Write};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Todo {
    title: String,
    done: bool,
}

#[tokio::test]
async fn reads_and_writes_are_typed() {
    let s = TestServer::start().await;
    let client = Client::connect(&s.ws()).await.unwrap();

    let milk = Todo {
        title: "milk".into(),
        done: false,
    };
    let w = client.create("todos", Some("milk"), &milk).await.unwrap();
    assert_eq!((w.id.as_str(), w.version, w.pos), ("milk", 1, 1));
    assert_eq!(w.record.unwrap().data_as::<Todo>().unwrap(), milk);

    // The server makes an id when there is none.
    let made = client
        .create("todos", None, json!({"title": "eggs", "done": true}))
        .await
        .unwrap();
    assert!(!made.id.is_empty());

    let patched = client
        .patch("todos", "milk", json!({"done": true}))
        .await
        .unwrap();
    assert_eq!(patched.version, 2);
    assert_eq!(patched.record.as_ref().unwrap().data["done"], true);

    let got = client.get("todos", "milk").await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(client.get("todos", "nope").await.unwrap(), None);

    let all = client.all("todos").await.unwrap();
    assert_eq!(all.len(), 2);
    let done = client
        .query(
            "todos",
            &Query::new().filter("done", true).order("title").limit(10),
        )
        .await
        .unwrap();
    assert_eq!(
        done.iter()
            .map(|r| r.data["title"].clone())
            .collect::<Vec<_>>(),
        [json!("eggs"), json!("milk")]
    );

    let upserted = client
        .upsert("todos", "bread", json!({"title": "bread", "done": false}))
        .await
        .unwrap();
    assert_eq!(upserted.version, 1);
    let updated = client
        .update("todos", "bread", json!({"title": "rye", "done": false}))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let deleted = client.delete("todos", "bread").await.unwrap();
    assert_eq!((deleted.version, deleted.record), (3, None));
    client.ping().await.unwrap();
    client.publish("news", json!({"hello": 1})).await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn refusals_carry_the_servers_code() {
    let s = TestServer::start().await;
    let client = Client::connect(&s.ws()).await.unwrap();
    client
        .create("todos", Some("a"), json!({"n": 1}))
        .await
        .unwrap();

    let dup = client
        .create("todos", Some("a"), json!({"n": 2}))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(&ErrorCode::AlreadyExists), "{dup}");

    let stale = client
        .write(Write::update("todos", "a", Default::default()).if_version(7))
        .await
        .unwrap_err();
    match &stale {
        ClientError::Server {
            code: ErrorCode::VersionConflict,
            version: Some(1),
            ..
        } => {}
        other => panic!("expected a version conflict at version 1, got {other:?}"),
    }

    let missing = client.delete("todos", "zzz").await.unwrap_err();
    assert_eq!(missing.code(), Some(&ErrorCode::NotFound));
    let bad_name = client.get("no spaces", "a").await.unwrap_err();
    assert_eq!(bad_name.code(), Some(&ErrorCode::InvalidName));
    let bad_sub = client
        .subscribe(tether_client::Target::resource("bad name"))
        .await
        .unwrap_err();
    assert_eq!(bad_sub.code(), Some(&ErrorCode::InvalidName));

    // Caught before sending: data must be an object, and updates need an id.
    let not_object = client
        .create("todos", None, json!([1, 2]))
        .await
        .unwrap_err();
    assert!(
        matches!(not_object, ClientError::Invalid(_)),
        "{not_object}"
    );
    let no_id = client
        .write(Write::new(tether_client::WriteKind::Update, "todos"))
        .await
        .unwrap_err();
    assert!(matches!(no_id, ClientError::Invalid(_)), "{no_id}");

    // The connection is still fine after every refusal.
    assert_eq!(client.get("todos", "a").await.unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn a_wrong_url_fails_at_once_with_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    drop(taken);
    let e = Client::connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot connect to ws://"), "{e}");

    let e = Client::connect("ftp://nowhere").await.unwrap_err();
    assert!(matches!(e, ClientError::Invalid(_)), "{e}");

    // A server, but not the canonical endpoint.
    let s = TestServer::start().await;
    let e = Client::connect(&s.http("/health")).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}
