//! The HTTP API for services: status codes, bodies, and fan-out to WebSocket watchers.

mod common;

use common::TestServer;
use serde_json::{json, Value};

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    let r = reqwest::get(s.http("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(s.http("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(s.http("/")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Tether inspector"));
}

#[tokio::test]
async fn status_codes() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = |p: &str| s.http(p);

    let r = http
        .post(url("/api/todos"))
        .body(r#"{"id":"a","title":"milk"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/api/todos/a");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!({"title": "milk"}),
        "the id lives beside the body"
    );
    assert_eq!(body["version"], 1);

    let r = http
        .post(url("/api/todos"))
        .body(r#"{"id":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_exists");

    let r = http
        .post(url("/api/todos"))
        .body(r#"{"title":"no id"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    assert!(made["id"].as_str().is_some_and(|s| !s.is_empty()));

    let r = http.get(url("/api/todos/a")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(
        http.get(url("/api/todos/missing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let r = http
        .put(url("/api/todos/a"))
        .header("If-Match", "\"7\"")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http
        .put(url("/api/todos/a"))
        .header("If-Match", "1")
        .body(r#"{"title":"oat milk"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .put(url("/api/todos/b"))
        .body(r#"{"title":"new"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "PUT of a new id creates");

    let r = http
        .patch(url("/api/todos/a"))
        .body(r#"{"done":true,"title":null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"done": true}));
    assert_eq!(
        http.patch(url("/api/todos/zzz"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert_eq!(
        http.post(url("/api/todos"))
            .body("{oops")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.post(url("/api/todos"))
            .body("[1]")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.get(url("/api/bad%20name"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let list: Value = http
        .get(url("/api/todos?done=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let list: Value = http
        .get(url("/api/todos?order=-id&limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    assert_eq!(
        http.delete(url("/api/todos/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.delete(url("/api/todos/a"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let r: Value = http
        .get(url("/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["resources"][0]["name"], "todos");
}

#[tokio::test]
async fn http_writes_fan_out_to_websocket_watchers() {
    let s = TestServer::start().await;
    let mut w = s.client().await;
    w.recv().await;
    w.request(json!({"type": "subscribe", "sub": "t", "resource": "todos"}))
        .await;
    let http = reqwest::Client::new();
    http.post(s.http("/api/todos"))
        .body(r#"{"id":"h","n":1}"#)
        .send()
        .await
        .unwrap();
    http.patch(s.http("/api/todos/h"))
        .body(r#"{"n":2}"#)
        .send()
        .await
        .unwrap();
    http.delete(s.http("/api/todos/h")).send().await.unwrap();
    let kinds: Vec<Value> = [w.recv().await, w.recv().await, w.recv().await]
        .iter()
        .map(|m| m["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("PUT"), json!("PATCH"), json!("DELETE")]);
}
