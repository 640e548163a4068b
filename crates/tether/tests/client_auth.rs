//! Bearer tokens end to end: the Rust client and the CLI tools against the real
//! server with auth on. Without a token they get the server's own refusal; with one
//! they work, including a subscription that sees its owner's writes.

mod common;

use common::TestServer;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::Duration;
use tether_client::{Client, ClientError, Event, Target};

const SECRET: &str = "a-client-test-secret-of-at-least-32-bytes";
const WAIT: Duration = Duration::from_secs(10);

fn token(sub: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn server(files: &tempfile::TempDir) -> TestServer {
    let path = files.path().join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[resources.\"*\"]\nread = \"token.sub != null\"\nwrite = \"token.sub != null\"\n\n[jwt]\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    TestServer::start_with(|c| c.security.auth_config = Some(path)).await
}

#[tokio::test]
async fn the_client_connects_with_a_token_and_is_refused_without() {
    let files = tempfile::tempdir().unwrap();
    let s = server(&files).await;
    let url = s.url("/ws");

    let refused = Client::connect(&url).await.unwrap_err();
    assert!(matches!(refused, ClientError::Connect { .. }), "{refused}");
    assert!(refused.to_string().contains("(HTTP 401)"), "{refused}");

    let client = Client::builder(&url)
        .token(token("ann"))
        .connect()
        .await
        .unwrap();
    let mut todos = client.subscribe(Target::resource("todos")).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, todos.next()).await.unwrap(),
        Some(Ok(Event::Snapshot { .. }))
    ));
    client
        .create("todos", Some("a"), json!({"owner": "ann"}))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, todos.next()).await.unwrap() {
        Some(Ok(Event::Put { record, .. })) => assert_eq!(record.id, "a"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_cli_tools_send_tether_token() {
    let files = tempfile::tempdir().unwrap();
    let s = server(&files).await;
    let base = s.http("");
    let run = |args: Vec<String>, token: Option<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(args).env_remove("TETHER_TOKEN");
        if let Some(t) = token {
            command.env("TETHER_TOKEN", t);
        }
        async move {
            tokio::time::timeout(WAIT, command.output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let put = |token| {
        run(
            ["put", &base, "todos", "b", r#"{"owner": "bob"}"#]
                .map(String::from)
                .to_vec(),
            token,
        )
    };

    let refused = put(None).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.starts_with("error: unauthorized:") && err.trim().ends_with("(HTTP 401)"),
        "{err}"
    );

    let ok = put(Some(token("bob"))).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let got = run(
        ["get", &base, "todos", "b"].map(String::from).to_vec(),
        Some(token("bob")),
    )
    .await;
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stdout).contains("\"owner\": \"bob\""));
}
