//! TLS (`--tls-cert`/`--tls-key`: wss:// and https:// with a certificate the test
//! makes) and the browser Origin allow-list for WebSocket upgrades.

mod common;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The next text message as JSON.
async fn recv<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the wait")
            .expect("the socket is open")
            .expect("a valid frame");
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// A server on a self-signed certificate for `localhost`, and a client that trusts it.
async fn tls_server() -> (TestServer, TlsConnector, tempfile::TempDir) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(|c| {
        c.security.tls_cert = Some(cert);
        c.security.tls_key = Some(key);
    })
    .await;
    let mut roots = RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    (s, TlsConnector::from(Arc::new(config)), dir)
}

async fn tls_connect(
    s: &TestServer,
    tls: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(s.server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tls.connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds")
}

#[tokio::test]
async fn serves_wss_and_https_with_the_configured_certificate() {
    let (s, tls, _dir) = tls_server().await;
    let port = s.server.addr.port();

    // wss://: the canonical protocol over TLS.
    let stream = tls_connect(&s, &tls).await;
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), stream)
        .await
        .expect("the WebSocket upgrade over TLS succeeds");
    let mut ws = ws;
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    let create =
        json!({"req": 1, "type": "create", "resource": "todos", "id": "t", "data": {"x": 1}});
    ws.send(Message::Text(create.to_string().into()))
        .await
        .unwrap();
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "result", "{r}");

    // https://: the HTTP API over TLS sees that write.
    let mut stream = tls_connect(&s, &tls).await;
    stream
        .write_all(
            format!(
                "GET /api/todos/t HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    // A peer that closes without close_notify is fine here; the bytes are what count.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"x\":1"), "{response}");

    // Plain HTTP on the TLS port gets no answer it could mistake for one.
    let plain = reqwest::get(s.http("/health")).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
    // ...and neither does a client that does not trust the certificate.
    let untrusting = TlsConnector::from(Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    ));
    let tcp = TcpStream::connect(s.server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(untrusting.connect(name, tcp).await.is_err());
}

#[tokio::test]
async fn bad_certificate_files_stop_the_server_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut config = tether::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("d"));
    config.security.tls_cert = Some(junk.clone());
    config.security.tls_key = Some(junk);
    let e = tether::start(config).await.err().expect("refused");
    assert!(e.message.contains("--tls-cert"), "{}", e.message);
}

/// Opens `/ws` with this Origin header (or none); the HTTP status if refused.
async fn upgrade_from(s: &TestServer, origin: Option<&str>) -> Result<(), u16> {
    let mut request = s.url("/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(o).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let s = TestServer::start_with(|c| {
        c.security.allow_origins =
            vec!["https://app.example".into(), "http://localhost:3000".into()];
    })
    .await;
    assert_eq!(
        upgrade_from(&s, Some("https://evil.example")).await,
        Err(403)
    );
    assert_eq!(upgrade_from(&s, Some("null")).await, Err(403));
    assert_eq!(upgrade_from(&s, Some("http://app.example")).await, Err(403));
    assert_eq!(upgrade_from(&s, Some("https://app.example")).await, Ok(()));
    assert_eq!(
        upgrade_from(&s, Some("http://localhost:3000")).await,
        Ok(())
    );
    assert_eq!(
        upgrade_from(&s, None).await,
        Ok(()),
        "no Origin: not a browser page, so not a hijack"
    );
    // Without an allow-list any origin may connect (the zero-set-up default).
    let open = TestServer::start().await;
    assert_eq!(
        upgrade_from(&open, Some("https://evil.example")).await,
        Ok(())
    );
}
