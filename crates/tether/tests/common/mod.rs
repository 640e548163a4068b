//! Test helpers: a real server on an ephemeral port over a real SQLite file, and a
//! real WebSocket client.
#![allow(dead_code)]

pub mod amqp;
pub mod proxy;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tether::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// The URL of a shared service from the environment variable `var`; `None`, with a
/// notice naming the skipped `tests`, when it is unset (the test then passes unrun).
pub fn service(var: &str, tests: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("{var} is not set: skipping the {tests}");
            None
        }
    }
}

/// A name no other run shares (process id and clock), for exchanges and databases on
/// shared services.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        tune(&mut config);
        let server = tether::start(config).await.expect("server starts");
        TestServer { server, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.server.addr, path)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr, path)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url("/ws")).await
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `msg` of the last message received, to check there is no gap.
    pub last_msg: u64,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        Client { ws, last_msg: 0 }
    }

    /// Connects to the canonical endpoint and returns the welcome too.
    pub async fn canonical(url: &str) -> (Client, Value) {
        let mut c = Client::connect(url).await;
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .unwrap();
    }

    /// Next text message as JSON; checks `msg` numbers rise by one when present.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait")
                .expect("the socket is open")
                .expect("a valid frame");
            match frame {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if let Some(n) = v.get("msg").and_then(Value::as_u64) {
                        assert_eq!(n, self.last_msg + 1, "message numbers have no gap: {v}");
                        self.last_msg = n;
                    }
                    return v;
                }
                Message::Close(f) => panic!("closed unexpectedly: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Receives until a message with this `type` (and, if given, `req`) arrives.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Sends a request and returns its answer (the first message with this `req`).
    pub async fn request(&mut self, mut v: Value) -> Value {
        let req = Value::from(format!("r{}", self.last_msg + 1000 + rand_suffix()));
        v["req"] = req.clone();
        self.send(v).await;
        loop {
            let m = self.recv().await;
            if m["req"] == req {
                return m;
            }
        }
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self, for_: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(for_, self.ws.next()).await {
            panic!("expected nothing, got {t}");
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
