//! Auth and access against the real server: every endpoint and dialect refuses a
//! missing, expired or forged token; a valid token cannot read, write or be pushed
//! another user's records (through any dialect, query subscriptions or presence); a
//! record that stops being readable leaves subscriptions; anonymous access is explicit;
//! tokens expire mid-connection; RS256 keys.

mod common;

use common::{Client, TestServer, WAIT};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes";
const QUIET: Duration = Duration::from_millis(300);

/// Owners read and write their own records; an admin everything. Topics and rooms are
/// open to any signed-in user (record rooms still need read access to the record).
const OWNER_RULES: &str = r#"
[resources."*"]
read = "data.owner == token.sub || token.role == 'admin'"
write = "data.owner == token.sub || token.role == 'admin'"

[topics."*"]
subscribe = "token.sub != null"
publish = "token.sub != null"

[rooms]
join = "token.sub != null"
"#;

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid token for `sub`, good for an hour.
fn token(sub: &str) -> String {
    sign(json!({"sub": sub, "exp": now() + 3600}), SECRET)
}

fn admin_token() -> String {
    sign(
        json!({"sub": "root", "role": "admin", "exp": now() + 3600}),
        SECRET,
    )
}

fn expired_token(sub: &str) -> String {
    sign(json!({"sub": sub, "exp": now() - 3600}), SECRET)
}

fn forged_token(sub: &str) -> String {
    sign(
        json!({"sub": sub, "exp": now() + 3600}),
        "another-secret-nobody-configured-32b",
    )
}

struct AuthServer {
    s: TestServer,
    _files: tempfile::TempDir,
}

/// A server with an auth file holding the HS256 secret and `rules`.
async fn server(rules: &str) -> AuthServer {
    // Rules first: a top-level key like `anonymous` must precede every table.
    server_with(&format!("{rules}\n[jwt]\nsecret = \"{SECRET}\"\n"), |_| {}).await
}

async fn server_with(auth_file: &str, tune: impl FnOnce(&mut tether::Config)) -> AuthServer {
    let files = tempfile::tempdir().unwrap();
    let path: PathBuf = files.path().join("auth.toml");
    std::fs::write(&path, auth_file).unwrap();
    let s = TestServer::start_with(|c| {
        c.security.auth_config = Some(path);
        tune(c);
    })
    .await;
    AuthServer { s, _files: files }
}

/// How a WebSocket client presents its token.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    Subprotocol,
    Query,
}

/// Opens a WebSocket, or returns the HTTP status the upgrade was refused with.
async fn ws(url: &str, token: Option<&str>, via: Via) -> Result<Client, u16> {
    let url = match (token, via) {
        (Some(t), Via::Query) => format!("{url}?token={t}"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request().unwrap();
    match (token, via) {
        (Some(t), Via::Header) => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        (Some(t), Via::Subprotocol) => {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("bearer, {t}")).unwrap(),
            );
        }
        _ => {}
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            if let (Some(_), Via::Subprotocol) = (token, via) {
                assert_eq!(
                    response.headers()["sec-websocket-protocol"],
                    "bearer",
                    "the server picks the subprotocol that carried the token"
                );
            }
            Ok(Client { ws, last_msg: 0 })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

async fn connect(s: &TestServer, path: &str, token: &str) -> Client {
    ws(&s.url(path), Some(token), Via::Header)
        .await
        .unwrap_or_else(|status| panic!("{path}: refused with {status}"))
}

/// A `/ws` connection, past its welcome.
async fn canonical(s: &TestServer, token: &str) -> Client {
    let mut c = connect(s, "/ws", token).await;
    assert_eq!(c.recv().await["type"], "welcome");
    c
}

/// Every WebSocket path the server mounts, with a channel filled in.
fn ws_paths() -> Vec<String> {
    tether_dialects::registry()
        .iter()
        .map(|d| d.path().replace("{channel}", "todos"))
        .collect()
}

async fn http(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, s.http(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put_record(s: &TestServer, token: &str, resource: &str, id: &str, data: Value) {
    let (status, body) = http(
        s,
        reqwest::Method::PUT,
        &format!("/api/{resource}/{id}"),
        Some(token),
        Some(data),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// Everything that arrives until the connection is quiet for a while.
async fn drain(c: &mut Client) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(m) = tokio::time::timeout(QUIET, c.recv()).await {
        got.push(m);
    }
    got
}

/// Receives the next message, skipping nothing: it must be the one `pred` expects.
async fn next(c: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let m = c.recv().await;
    assert!(pred(&m), "expected {what}, got {m}");
    m
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_expired_or_forged_token() {
    let a = server(OWNER_RULES).await;
    let s = &a.s;
    let bad: [(&str, Option<String>); 3] = [
        ("no token", None),
        ("expired", Some(expired_token("ann"))),
        ("forged", Some(forged_token("ann"))),
    ];
    let paths = ws_paths();
    assert!(
        paths.len() >= 2,
        "the registry mounts the dialects: {paths:?}"
    );
    for path in &paths {
        for (what, t) in &bad {
            for via in [Via::Header, Via::Subprotocol, Via::Query] {
                let refused = ws(&s.url(path), t.as_deref(), via).await;
                assert_eq!(refused.err(), Some(401), "{path} with {what} via {via:?}");
            }
        }
        for via in [Via::Header, Via::Subprotocol, Via::Query] {
            assert!(
                ws(&s.url(path), Some(&token("ann")), via).await.is_ok(),
                "{path} with a valid token via {via:?}"
            );
        }
    }

    use reqwest::Method;
    let routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api", None),
        (Method::GET, "/api/todos", None),
        (Method::POST, "/api/todos", Some(json!({"owner": "ann"}))),
        (Method::GET, "/api/todos/a1", None),
        (Method::PUT, "/api/todos/a1", Some(json!({"owner": "ann"}))),
        (Method::PATCH, "/api/todos/a1", Some(json!({"x": 1}))),
        (Method::POST, "/api/todos/a1", Some(json!({"owner": "ann"}))),
        (Method::DELETE, "/api/todos/a1", None),
        (Method::POST, "/publish/logs", Some(json!({"line": 1}))),
        (Method::GET, "/metrics", None),
    ];
    for (method, path, body) in &routes {
        for (what, t) in &bad {
            let (status, answer) = http(s, method.clone(), path, t.as_deref(), body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {what}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized");
        }
        // A bad token in the URL is no better than in the header.
        let url = format!("{path}?token={}", expired_token("ann"));
        let (status, _) = http(s, method.clone(), &url, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {url}");
    }
    let r = reqwest::get(s.http("/api")).await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"tether\"",
        "401 says which scheme to use"
    );
    // Health stays open for load balancers and probes.
    assert_eq!(reqwest::get(s.http("/health")).await.unwrap().status(), 200);
    // Nothing was written by any refused request.
    let (status, list) = http(s, Method::GET, "/api/todos", Some(&admin_token()), None).await;
    assert_eq!((status, list), (200, json!([])));
    // The token in the URL is the caller, not a filter.
    put_record(s, &token("ann"), "todos", "a1", json!({"owner": "ann"})).await;
    let url = format!("/api/todos?token={}", token("ann"));
    let (status, list) = http(s, Method::GET, &url, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

/// Writes by ann that bob must never see, then a change to bob's own record that every
/// one of bob's connections watches: pushes arrive in change-log order, so if bob's
/// first message is the push for his own record, nothing of ann's came before it.
async fn ann_writes_then_bob_sentinel(s: &TestServer, round: u32) {
    let ann = token("ann");
    let owner = json!({"owner": "ann", "title": format!("secret {round}")});
    put_record(s, &ann, "todos", "a1", owner.clone()).await;
    put_record(s, &ann, "todos", &format!("a-new-{round}"), owner.clone()).await;
    put_record(s, &ann, "documents", "d1", owner).await;
    put_record(
        s,
        &token("bob"),
        "todos",
        "b1",
        json!({"owner": "bob", "title": format!("mine {round}")}),
    )
    .await;
    put_record(
        s,
        &token("bob"),
        "documents",
        "d-bob",
        json!({"owner": "bob", "title": format!("mine {round}")}),
    )
    .await;
}

#[tokio::test]
async fn a_valid_token_cannot_reach_another_users_records() {
    let a = server(OWNER_RULES).await;
    let s = &a.s;
    let (ann, bob) = (token("ann"), token("bob"));
    put_record(
        s,
        &ann,
        "todos",
        "a1",
        json!({"owner": "ann", "title": "secret"}),
    )
    .await;
    put_record(
        s,
        &ann,
        "documents",
        "d1",
        json!({"owner": "ann", "title": "plan"}),
    )
    .await;
    put_record(
        s,
        &bob,
        "todos",
        "b1",
        json!({"owner": "bob", "title": "mine"}),
    )
    .await;
    put_record(s, &bob, "documents", "d-bob", json!({"owner": "bob"})).await;

    // ---- HTTP -------------------------------------------------------------------
    use reqwest::Method;
    let b = Some(bob.as_str());
    let steal = Some(json!({"owner": "bob", "title": "stolen"}));
    for (method, path, body) in [
        (Method::GET, "/api/todos/a1", None),
        (Method::PUT, "/api/todos/a1", steal.clone()),
        (Method::PATCH, "/api/todos/a1", steal.clone()),
        (Method::DELETE, "/api/todos/a1", None),
        (Method::POST, "/api/todos/a1", steal.clone()),
        // Creating a record in someone else's name.
        (
            Method::POST,
            "/api/todos",
            Some(json!({"id": "x", "owner": "ann"})),
        ),
        (Method::PUT, "/api/todos/x", Some(json!({"owner": "ann"}))),
        // Giving one's own record away is writing another user's record.
        (
            Method::PATCH,
            "/api/todos/b1",
            Some(json!({"owner": "ann"})),
        ),
    ] {
        let (status, answer) = http(s, method.clone(), path, b, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden");
        assert!(
            answer["error"].get("version").is_none(),
            "no stored version leaks"
        );
    }
    let (_, list) = http(s, Method::GET, "/api/todos", b, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "only bob's: {list}");
    assert_eq!(list[0]["id"], "b1");
    let (_, list) = http(s, Method::GET, "/api/todos?owner=ann", b, None).await;
    assert_eq!(list, json!([]));
    let (_, list) = http(s, Method::GET, "/api/todos?limit=1", Some(&ann), None).await;
    assert_eq!(
        list[0]["id"], "a1",
        "the limit counts readable records: {list}"
    );
    let (_, resources) = http(s, Method::GET, "/api", b, None).await;
    assert!(
        resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("records").is_none()),
        "no counts of others' records: {resources}"
    );
    let (status, _) = http(s, Method::GET, "/api/todos/a1", Some(&ann), None).await;
    assert_eq!(status, 200, "the owner reads her own");

    // ---- /ws --------------------------------------------------------------------
    let mut w = canonical(s, &bob).await;
    let r = w
        .request(json!({"type": "get", "resource": "todos", "id": "a1"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = w.request(json!({"type": "all", "resource": "todos"})).await;
    assert_eq!(r["records"].as_array().unwrap().len(), 1, "{r}");
    let r = w
        .request(json!({"type": "query", "resource": "todos", "where": {"owner": "ann"}}))
        .await;
    assert_eq!(r["records"], json!([]));
    let r = w
        .request(json!({"type": "subscribe", "sub": "a1", "resource": "todos", "id": "a1"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    for (what, m) in [
        (
            "patch",
            json!({"type": "patch", "resource": "todos", "id": "a1", "data": {"owner": "bob"}}),
        ),
        (
            "delete",
            json!({"type": "delete", "resource": "todos", "id": "a1"}),
        ),
        (
            "create as ann",
            json!({"type": "create", "resource": "todos", "id": "y", "data": {"owner": "ann"}}),
        ),
        (
            "upsert over",
            json!({"type": "upsert", "resource": "todos", "id": "a1", "data": {"owner": "bob"}}),
        ),
        (
            "join ann's document",
            json!({"type": "join", "room": "documents/d1"}),
        ),
        (
            "join as ann",
            json!({"type": "join", "room": "lobby", "user": "ann"}),
        ),
    ] {
        let r = w.request(m).await;
        assert_eq!(r["code"], "forbidden", "{what}: {r}");
    }
    let snap = w
        .request(json!({"type": "subscribe", "sub": "todos", "resource": "todos"}))
        .await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["records"].as_array().unwrap().len(), 1, "{snap}");
    let snap = w
        .request(json!({"type": "subscribe", "sub": "open", "resource": "todos", "where": {"title": "secret 1"}}))
        .await;
    assert_eq!(snap["records"], json!([]));
    let snap = w
        .request(json!({"type": "subscribe", "sub": "new", "resource": "todos", "id": "a-new-1"}))
        .await;
    assert_eq!(
        snap["records"],
        json!([]),
        "a record that does not exist yet may be watched"
    );
    let snap = w
        .request(json!({"type": "subscribe", "sub": "docs", "resource": "documents"}))
        .await;
    assert_eq!(snap["records"].as_array().unwrap().len(), 1, "{snap}");
    let r = w.request(json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(
        r["members"],
        json!(["bob"]),
        "bob appears as his token's subject"
    );

    // ---- /crud: GET holds ids; ann's record is refused, a missing one is held ----
    let mut crud = connect(s, "/crud", &bob).await;
    // A write also tries to hold the id, so it may be refused twice (the write and
    // the hold): every answer is a `forbidden` ERROR without the record's data.
    for m in [
        json!({"action": "GET", "data": {"todos": {"id": "a1"}}}),
        json!({"action": "POST", "data": {"todos": {"id": "a1", "owner": "bob"}}}),
        json!({"action": "DELETE", "data": {"todos": {"id": "a1"}}}),
    ] {
        crud.send(m.clone()).await;
        let answers = drain(&mut crud).await;
        assert!(!answers.is_empty(), "{m} is answered");
        for r in answers {
            assert_eq!(r["action"], "ERROR", "{m} -> {r}");
            assert_eq!(r["data"]["error"]["code"], "forbidden", "{r}");
            assert_eq!(
                r["data"]["todos"],
                json!({"id": "a1"}),
                "no data leaks: {r}"
            );
        }
    }
    crud.send(json!({"action": "GET", "data": {"todos": [{"id": "a-new-1"}, {"id": "b1"}]}}))
        .await;
    let m = next(&mut crud, "b1", |m| m["data"]["todos"]["id"] == "b1").await;
    assert_eq!(m["action"], "POST");
    crud.send(json!({"action": "GET", "data": {"documents": {"id": "d-bob"}}}))
        .await;
    next(&mut crud, "d-bob", |m| {
        m["data"]["documents"]["id"] == "d-bob"
    })
    .await;

    // ---- /txn ---------------------------------------------------------------------
    let mut txn = connect(s, "/txn", &bob).await;
    for (verb, params, fail) in [
        ("retrieve", json!({"id": "a1"}), "RETRIEVE_FAIL"),
        ("update", json!({"id": "a1", "owner": "bob"}), "UPDATE_FAIL"),
        (
            "crt_updt",
            json!({"id": "a1", "owner": "bob"}),
            "CRT_UPDT_FAIL",
        ),
        ("patch", json!({"id": "a1", "owner": "bob"}), "PATCH_FAIL"),
        ("delete", json!({"id": "a1"}), "DELETE_FAIL"),
        ("create", json!({"id": "z", "owner": "ann"}), "CREATE_FAIL"),
    ] {
        txn.send(
            json!({"trans_id": verb, "action": verb, "resource": "todos", "parameters": params}),
        )
        .await;
        // The request, and the holding it would start, are both refused.
        let answers = drain(&mut txn).await;
        assert!(
            answers.iter().any(|r| r["action"] == fail),
            "{verb}: {answers:?}"
        );
        for r in &answers {
            assert_eq!(r["trans_id"], verb, "{r}");
            assert_eq!(r["response"]["code"], 403, "{r}");
            assert_eq!(r["response"]["error"], "forbidden", "{r}");
            assert!(r["response"].get("data").is_none(), "no data leaks: {r}");
        }
    }
    txn.send(json!({"trans_id": "t-b1", "action": "retrieve", "resource": "todos", "parameters": {"id": "b1"}}))
        .await;
    assert_eq!(txn.recv().await["action"], "RETRIEVED");

    // ---- /monorail/todos ------------------------------------------------------------
    let mut rail = connect(s, "/monorail/todos", &bob).await;
    rail.send(json!({"handler": "get", "params": {"id": "a1"}}))
        .await;
    let m = rail.recv().await;
    assert_eq!(m["handler"], "failure", "{m}");
    assert_eq!(m["code"], "forbidden", "{m}");
    rail.send(json!({"handler": "all"})).await;
    let m = rail.recv().await;
    assert_eq!(m["items"].as_array().map(Vec::len), Some(1), "{m}");
    rail.send(json!({"handler": "watch", "params": {}})).await;
    let m = rail.recv().await;
    assert_eq!(m["handler"], "list");
    assert_eq!(m["items"].as_array().map(Vec::len), Some(1), "{m}");

    // ---- /talk: documents as rooms ----------------------------------------------------
    let mut talk = connect(s, "/talk", &bob).await;
    talk.send(json!({"command": "document:open", "id": "d1"}))
        .await;
    let m = talk.recv().await;
    assert_eq!(
        (m["status"].as_str(), m["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{m}"
    );
    assert!(m.get("document").is_none(), "{m}");
    talk.send(json!({"command": "document:create", "id": "d2", "data": {"owner": "ann"}}))
        .await;
    let m = talk.recv().await;
    assert_eq!(m["code"], "forbidden", "{m}");
    talk.send(json!({"command": "document:open", "id": "d-bob"}))
        .await;
    let m = talk.recv().await;
    assert_eq!(m["status"], "success", "{m}");
    // Ann has her document open on /talk and in /ws presence: bob hears nothing of it.
    let mut ann_talk = connect(s, "/talk", &ann).await;
    ann_talk
        .send(json!({"command": "document:open", "id": "d1"}))
        .await;
    assert_eq!(ann_talk.recv().await["status"], "success");
    ann_talk
        .send(json!({"command": "node:create", "x": 1}))
        .await;
    assert_eq!(ann_talk.recv().await["status"], "success");

    // ---- ann writes; bob's every connection sees only his own record change -------------
    ann_writes_then_bob_sentinel(s, 1).await;
    let m = next(&mut w, "the push of b1", |m| {
        m["type"] == "PUT" && m["sub"] == "todos"
    })
    .await;
    assert_eq!(m["id"], "b1", "{m}");
    let m = next(&mut w, "the push of d-bob", |m| m["sub"] == "docs").await;
    assert_eq!(m["id"], "d-bob", "{m}");
    let m = next(&mut crud, "the push of b1", |m| m["action"] == "POST").await;
    assert_eq!(m["data"]["todos"]["id"], "b1", "{m}");
    next(&mut crud, "the push of d-bob", |m| {
        m["data"]["documents"]["id"] == "d-bob"
    })
    .await;
    let m = next(&mut txn, "the indirect response for b1", |m| {
        m.get("trans_id").is_none()
    })
    .await;
    assert_eq!(m["response"]["data"]["id"], "b1", "{m}");
    let m = next(&mut rail, "the item b1", |m| m["handler"] == "item").await;
    assert_eq!(m["data"]["id"], "b1", "{m}");
    let m = next(&mut talk, "the update of d-bob", |m| {
        m.get("command").is_some() || m.get("event").is_some()
    })
    .await;
    assert!(m.to_string().contains("d-bob"), "{m}");
    for c in [&mut w, &mut crud, &mut txn, &mut rail, &mut talk] {
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_record_that_stops_being_readable_leaves_every_subscription() {
    let a = server(OWNER_RULES).await;
    let s = &a.s;
    let (bob, root) = (token("bob"), admin_token());
    put_record(s, &bob, "todos", "b1", json!({"owner": "bob", "n": 1})).await;
    put_record(s, &root, "todos", "a1", json!({"owner": "ann", "n": 1})).await;

    let mut w = canonical(s, &bob).await;
    let snap = w
        .request(json!({"type": "subscribe", "sub": "all", "resource": "todos"}))
        .await;
    assert_eq!(snap["records"].as_array().unwrap().len(), 1);
    w.request(json!({"type": "subscribe", "sub": "one", "resource": "todos", "id": "b1"}))
        .await;
    w.request(json!({"type": "subscribe", "sub": "q", "resource": "todos", "where": {"n": 1}}))
        .await;
    let mut rail = connect(s, "/monorail/todos", &bob).await;
    rail.send(json!({"handler": "watch", "params": {}})).await;
    assert_eq!(rail.recv().await["items"].as_array().map(Vec::len), Some(1));

    // The admin hands bob's record to ann: it leaves all three subscriptions.
    let (status, _) = http(
        s,
        reqwest::Method::PATCH,
        "/api/todos/b1",
        Some(&root),
        Some(json!({"owner": "ann"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut left = Vec::new();
    for _ in 0..3 {
        let m = w.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("DELETE"), Some("b1")),
            "{m}"
        );
        left.push(m["sub"].as_str().unwrap().to_owned());
    }
    left.sort();
    assert_eq!(left, ["all", "one", "q"]);
    let m = rail.recv().await;
    assert_eq!(
        m,
        json!({"msg": 2, "handler": "remove", "params": {"id": "b1"}})
    );

    // A later change to it is not pushed; the record ann hands to bob enters, whole.
    http(
        s,
        reqwest::Method::PATCH,
        "/api/todos/b1",
        Some(&root),
        Some(json!({"n": 2})),
    )
    .await;
    http(
        s,
        reqwest::Method::PATCH,
        "/api/todos/a1",
        Some(&root),
        Some(json!({"owner": "bob"})),
    )
    .await;
    let mut entered = Vec::new();
    for _ in 0..2 {
        let m = w.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("PUT"), Some("a1")),
            "{m}"
        );
        assert_eq!(
            m["data"],
            json!({"owner": "bob", "n": 1}),
            "a PUT, not a PATCH: {m}"
        );
        entered.push(m["sub"].as_str().unwrap().to_owned());
    }
    entered.sort();
    assert_eq!(entered, ["all", "q"]);
    let m = rail.recv().await;
    assert_eq!(
        m["data"],
        json!({"id": "a1", "owner": "bob", "n": 1}),
        "{m}"
    );
    w.expect_silence(QUIET).await;
    rail.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_session_is_taken_over_only_by_its_own_subject() {
    let a = server(OWNER_RULES).await;
    let s = &a.s;
    let mut ann = connect(s, "/ws", &token("ann")).await;
    let welcome = ann.recv().await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    ann.request(json!({"type": "subscribe", "sub": "mine", "resource": "todos"}))
        .await;
    drop(ann);

    // Bob knows the id (services are handed session ids to address broadcasts).
    let mut bob = canonical(s, &token("bob")).await;
    let r = bob
        .request(json!({"type": "resume", "session": session}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let mut rail = connect(s, "/monorail/todos", &token("bob")).await;
    rail.send(json!({"handler": "init", "id": session})).await;
    let m = rail.recv().await;
    assert_eq!(
        (m["handler"].as_str(), m["code"].as_str()),
        (Some("failure"), Some("forbidden")),
        "{m}"
    );

    // Ann herself takes it back, with the subscription it held.
    let mut again = canonical(s, &token("ann")).await;
    let r = again
        .request(json!({"type": "resume", "session": session}))
        .await;
    assert_eq!(r["session"], session.as_str(), "{r}");
    assert_eq!(r["subs"], json!(["mine"]), "{r}");
}

#[tokio::test]
async fn anonymous_access_is_an_explicit_setting() {
    let rules = r#"
anonymous = true
[resources.notes]
read = "data.public == true || data.owner == token.sub"
write = "data.owner == token.sub"
"#;
    let a = server(rules).await;
    let s = &a.s;
    put_record(
        s,
        &token("ann"),
        "notes",
        "pub",
        json!({"owner": "ann", "public": true}),
    )
    .await;
    put_record(s, &token("ann"), "notes", "priv", json!({"owner": "ann"})).await;
    let (status, _) = http(s, reqwest::Method::GET, "/api/notes/pub", None, None).await;
    assert_eq!(status, 200);
    let (status, _) = http(s, reqwest::Method::GET, "/api/notes/priv", None, None).await;
    assert_eq!(status, 403);
    let (status, list) = http(s, reqwest::Method::GET, "/api/notes", None, None).await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (200, Some(1)),
        "{list}"
    );
    // An anonymous caller owns nothing, not even a record without an owner.
    let (status, _) = http(
        s,
        reqwest::Method::PUT,
        "/api/notes/mine",
        None,
        Some(json!({"text": "no owner"})),
    )
    .await;
    assert_eq!(status, 403);
    // A bad token is refused, not downgraded to anonymous.
    let (status, _) = http(
        s,
        reqwest::Method::GET,
        "/api/notes/pub",
        Some(&expired_token("ann")),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let mut c = ws(&s.url("/ws"), None, Via::Header).await.unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    let r = c.request(json!({"type": "all", "resource": "notes"})).await;
    assert_eq!(r["records"].as_array().map(Vec::len), Some(1), "{r}");

    // Without `anonymous = true`, the same rules refuse a caller without a token.
    let closed = server(&rules.replace("anonymous = true", "")).await;
    let (status, _) = http(
        &closed.s,
        reqwest::Method::GET,
        "/api/notes/pub",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        ws(&closed.s.url("/ws"), None, Via::Header).await.err(),
        Some(401)
    );
}

#[tokio::test]
async fn a_connection_closes_when_its_token_expires() {
    let a = server(OWNER_RULES).await;
    let short = sign(json!({"sub": "ann", "exp": now() + 2}), SECRET);
    let mut c = connect(&a.s, "/ws", &short).await;
    assert_eq!(c.recv().await["type"], "welcome");
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed within the wait");
    assert_eq!(close, Some(4001));
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_only() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let private = std::fs::read(fixtures.join("jwt-rs256-test-private.pem")).unwrap();
    let public = fixtures.join("jwt-rs256-test-public.pem");
    let s = TestServer::start_with(|c| {
        c.security.jwt_public_key = Some(public.clone());
        c.security.allow_anonymous = false;
    })
    .await;
    let claims = json!({"sub": "ann", "exp": now() + 3600});
    let rs = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert!(ws(&s.url("/ws"), Some(&rs), Via::Header).await.is_ok());
    // The algorithm-confusion attack: HS256 "signed" with the public key as secret.
    let confused = sign(claims, &std::fs::read_to_string(&public).unwrap());
    assert_eq!(
        ws(&s.url("/ws"), Some(&confused), Via::Header).await.err(),
        Some(401)
    );
    // With a key and no rules, everything is denied.
    let mut c = connect(&s, "/ws", &rs).await;
    c.recv().await;
    let r = c.request(json!({"type": "all", "resource": "todos"})).await;
    assert_eq!(r["code"], "forbidden", "{r}");
}
