//! Test helpers: the real Tether server in-process on an ephemeral port over a real
//! SQLite file, and a client tuned to reconnect quickly.
#![allow(dead_code)]

use futures_util::StreamExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tether::{Config, Server};
use tether_client::{Backoff, Client, ConnectionEvent, Event, Subscription};
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let server = start_at("127.0.0.1:0".parse().unwrap(), dir.path().join("data")).await;
        TestServer { server, dir }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.server.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr, path)
    }
}

pub async fn start_at(addr: SocketAddr, data: PathBuf) -> Server {
    tether::start(Config::new(addr, data))
        .await
        .expect("server starts")
}

pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        factor: 2.0,
        jitter: 0.5,
    }
}

pub async fn client(url: &str) -> Client {
    Client::builder(url)
        .reconnect(fast_backoff())
        .local_store(true)
        .connect()
        .await
        .expect("client connects")
}

/// The next event of a subscription, within the wait.
pub async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event within the wait")
        .expect("the stream is open")
        .expect("not an error")
}

/// Asserts the subscription stays quiet for a moment.
pub async fn silence(sub: &mut Subscription) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("expected nothing more, got {event:?}");
    }
}

/// Waits for a connection event matching `want`.
pub async fn wait_event(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    want: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
    .expect("the event within the wait")
}
