//! Live reload of the auth file against the real server: a changed file is applied
//! without a restart (by polling, and on SIGHUP for the binary); connections filtered
//! by a changed read rule are closed with 1012 and resume under the new rule with a
//! fresh snapshot; connections that depend on no changed rule keep going; a broken file
//! changes nothing; rotated keys take effect for new connections.

mod common;
#[path = "common/process.rs"]
mod process;

use common::{Client, TestServer, WAIT};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use process::{metric, Process};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes";
const ROTATED: &str = "the-rotated-secret-also-at-least-32-bytes";

/// Everyone signed in reads and writes notes and logs.
const OPEN_NOTES: &str = r#"
[resources.notes]
read = "token.sub != null"
write = "token.sub != null"
[resources.logs]
read = "token.sub != null"
write = "token.sub != null"
"#;

/// Notes become private to their owner; logs are unchanged.
const OWNED_NOTES: &str = r#"
[resources.notes]
read = "data.owner == token.sub"
write = "token.sub != null"
[resources.logs]
read = "token.sub != null"
write = "token.sub != null"
"#;

fn auth_file(rules: &str, secret: &str) -> String {
    format!("{rules}\n[jwt]\nsecret = \"{secret}\"\n")
}

fn token(sub: &str, secret: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A `/ws` connection past its welcome, or the HTTP status it was refused with.
async fn connect(addr: &str, token: &str) -> Result<(Client, Value), u16> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => {
            let mut c = Client { ws, last_msg: 0 };
            let welcome = c.recv().await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            Ok((c, welcome))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// Replaces the file the way editors and ConfigMaps do: write aside, then rename.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The close code the server ends this connection with (pushes before it are skipped).
async fn close_code(c: &mut Client) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame.code.into(),
            Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket error instead of a close frame: {e}"),
            Ok(None) => panic!("socket ended without a close frame"),
            Err(_) => panic!("no close frame within the wait"),
        }
    }
}

async fn put(c: &mut Client, resource: &str, id: &str, data: Value) -> Value {
    let reply = c
        .request(json!({"type": "upsert", "resource": resource, "id": id, "data": data}))
        .await;
    assert_eq!(reply["type"], "result", "{reply}");
    reply
}

async fn server(path: &Path) -> TestServer {
    let path = path.to_owned();
    TestServer::start_with(|c| {
        c.security.auth_config = Some(path);
        c.security.auth_reload_interval = Duration::from_millis(100);
    })
    .await
}

#[tokio::test]
async fn a_changed_rule_applies_live_and_affected_subscriptions_resume_under_it() {
    let files = tempfile::tempdir().unwrap();
    let path: PathBuf = files.path().join("auth.toml");
    std::fs::write(&path, auth_file(OPEN_NOTES, SECRET)).unwrap();
    let s = server(&path).await;
    let addr = s.server.addr.to_string();

    let (mut bob, _) = connect(&addr, &token("bob", SECRET)).await.unwrap();
    put(
        &mut bob,
        "notes",
        "b1",
        json!({"owner": "bob", "text": "bob's"}),
    )
    .await;
    put(
        &mut bob,
        "notes",
        "a1",
        json!({"owner": "ann", "text": "ann's"}),
    )
    .await;

    // Ann watches every note (she may read bob's for now); Cat only watches logs.
    let (mut ann, welcome) = connect(&addr, &token("ann", SECRET)).await.unwrap();
    let epoch = welcome["epoch"].clone();
    let snap = ann
        .request(json!({"type": "subscribe", "sub": "n", "resource": "notes"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["records"].as_array().unwrap().len(), 2, "{snap}");
    let pos = snap["pos"].clone();
    let (mut cat, _) = connect(&addr, &token("cat", SECRET)).await.unwrap();
    let snap = cat
        .request(json!({"type": "subscribe", "sub": "l", "resource": "logs"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");

    // Notes become private. Ann's pushes were filtered by the old rule: she is closed
    // with 1012 (service restart) to resume under the new one.
    replace(&path, &auth_file(OWNED_NOTES, SECRET));
    assert_eq!(close_code(&mut ann).await, 1012);

    // Cat depends on no changed rule: her connection goes on and gets live pushes.
    put(&mut bob, "logs", "x", json!({"line": 1})).await;
    let push = cat.recv_type("PUT").await;
    assert_eq!(push["id"], "x", "{push}");

    // Ann resumes from where she was: not the missed changes under the old rule, but a
    // fresh snapshot of what she may read now.
    let (mut ann, _) = connect(&addr, &token("ann", SECRET)).await.unwrap();
    let snap = ann
        .request(json!({"type": "subscribe", "sub": "n", "resource": "notes", "since": {"epoch": epoch, "pos": pos}}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["resync"], "access_changed", "{snap}");
    let ids: Vec<&str> = snap["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1"], "only her own note: {snap}");
    // And the new rule filters live pushes: bob's new note never reaches her.
    put(&mut bob, "notes", "b2", json!({"owner": "bob"})).await;
    put(&mut bob, "notes", "a2", json!({"owner": "ann"})).await;
    let push = ann.recv_type("PUT").await;
    assert_eq!(push["id"], "a2", "{push}");
    let got = ann
        .request(json!({"type": "get", "resource": "notes", "id": "b1"}))
        .await;
    assert_eq!(got["code"], "forbidden", "{got}");
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_rotated_keys_apply_to_new_connections() {
    let files = tempfile::tempdir().unwrap();
    let path: PathBuf = files.path().join("auth.toml");
    std::fs::write(&path, auth_file(OPEN_NOTES, SECRET)).unwrap();
    let s = server(&path).await;
    let addr = s.server.addr.to_string();
    let (mut ann, _) = connect(&addr, &token("ann", SECRET)).await.unwrap();
    let snap = ann
        .request(json!({"type": "subscribe", "sub": "n", "resource": "notes"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    // The writer is another connection: `request` skips pushes that come before its
    // reply.
    let (mut bob, _) = connect(&addr, &token("bob", SECRET)).await.unwrap();

    // A typo, a bad rule, a missing key file: each is refused whole, by the poll and by
    // a direct reload (what SIGHUP calls), and the rules in force stay.
    for broken in [
        "[resources.notes]\nreed = \"true\"\n".to_owned(),
        auth_file("[resources.notes]\nread = \"data.owner ==\"\n", SECRET),
        "[jwt]\nsecret_file = \"missing-secret\"\n".to_owned(),
    ] {
        replace(&path, &broken);
        let e = s.server.reload_auth().unwrap_err();
        assert!(e.contains("auth.toml"), "the error names the file: {e}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    put(&mut bob, "notes", "n1", json!({"owner": "bob"})).await;
    let push = ann.recv_type("PUT").await;
    assert_eq!(
        push["id"], "n1",
        "still subscribed under the old rule: {push}"
    );
    assert!(connect(&addr, &token("cat", SECRET)).await.is_ok());

    // Rotate the key: new connections need the new one; a reload that changes no rule
    // closes nobody.
    replace(&path, &auth_file(OPEN_NOTES, ROTATED));
    let reloaded = s.server.reload_auth().unwrap();
    assert_eq!(reloaded.closed_connections, 0);
    assert_eq!(
        connect(&addr, &token("cat", SECRET)).await.err(),
        Some(401),
        "the old key no longer verifies"
    );
    assert!(connect(&addr, &token("cat", ROTATED)).await.is_ok());
    put(&mut bob, "notes", "n2", json!({"owner": "bob"})).await;
    assert_eq!(ann.recv_type("PUT").await["id"], "n2");
}

#[tokio::test]
async fn the_binary_reloads_on_sighup() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("auth.toml");
    // Notes closed to everyone at first.
    std::fs::write(
        &path,
        auth_file("[resources.notes]\nwrite = \"true\"\n", SECRET),
    )
    .unwrap();
    let data = files.path().join("data");
    let auth = path.to_str().unwrap();
    // No polling: only the signal reloads.
    let p = Process::start(
        &data,
        &["--auth-config", auth, "--auth-reload-interval", "0"],
        None,
    );
    let (mut ann, _) = connect(&p.addr, &token("ann", SECRET)).await.unwrap();
    let sub = json!({"type": "subscribe", "sub": "n", "resource": "notes"});
    let refused = ann.request(sub.clone()).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    replace(&path, &auth_file(OPEN_NOTES, SECRET));
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &p.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup();
    let metrics = || async {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", p.addr))
            .bearer_auth(token("ops", SECRET))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = metrics().await;
        if m.contains("tether_auth_reloads_total{result=\"ok\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload seen:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = ann.request(sub).await;
    assert_eq!(snap["type"], "snapshot", "allowed after SIGHUP: {snap}");

    // A broken file on SIGHUP: counted as an error, the server keeps serving.
    replace(&path, "not toml [");
    hup();
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(
        &metrics().await,
        "tether_auth_reloads_total{result=\"error\"}",
    ) < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reload seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut p = p;
    assert!(p.alive(), "SIGHUP never stops the server");
    let (mut cat, _) = connect(&p.addr, &token("cat", SECRET)).await.unwrap();
    let snap = cat
        .request(json!({"type": "subscribe", "sub": "n", "resource": "notes"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "the last good rules stay: {snap}");
}
