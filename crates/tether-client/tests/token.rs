//! Bearer tokens: sent on every connection attempt, replaceable while the client runs,
//! and a refused upgrade reads as the server's own error. Against a scripted server,
//! which records the handshake headers.

// tungstenite's handshake callback fixes the (large) error type of these closures.
#![allow(clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_client::{Backoff, Client, ClientError};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_token_goes_with_every_attempt_and_can_be_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = tokio::spawn({
        let seen = seen.clone();
        async move {
            for n in 1..=2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let record = move |request: &Request, response: Response| {
                    let auth = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push(auth);
                    Ok::<_, ErrorResponse>(response)
                };
                let mut ws = tokio_tungstenite::accept_hdr_async(tcp, record)
                    .await
                    .unwrap();
                let welcome = json!({"msg": 1, "type": "welcome", "session": format!("S{n}"), "epoch": "E", "pos": 0, "protocol": 1});
                ws.send(Message::Text(welcome.to_string().into()))
                    .await
                    .unwrap();
                if n == 1 {
                    // As when a token expires: the server closes the connection.
                    ws.close(None).await.unwrap();
                } else {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                }
            }
        }
    });

    let client = Client::builder(&format!("ws://{addr}/ws"))
        .token("first")
        .reconnect(Backoff {
            initial: Duration::from_millis(200),
            ..Backoff::default()
        })
        .connect()
        .await
        .unwrap();
    client.set_token(Some("second".into()));
    let mut status = client.watch_status();
    tokio::time::timeout(WAIT, async {
        while seen.lock().unwrap().len() < 2 {
            status.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    client.close().await;
    script.await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some("Bearer first".to_owned()),
            Some("Bearer second".to_owned())
        ]
    );
    assert!(!format!("{:?}", Client::builder("ws://h").token("secret")).contains("secret"));
}

#[tokio::test]
async fn a_refused_upgrade_reads_as_the_servers_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let refuse = |_: &Request, _: Response| {
            let body =
                json!({"error": {"code": "unauthorized", "message": "a bearer token is required"}});
            let mut response = ErrorResponse::new(Some(body.to_string()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Err(response)
        };
        let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
    });
    let e = Client::connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("unauthorized: a bearer token is required (HTTP 401)"),
        "{e}"
    );
}
