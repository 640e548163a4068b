//! RabbitMQ-fed channels against a real broker: lines published with a real AMQP
//! client reach a `/ws` topic subscriber and a `/monorail/<channel>` watcher in order;
//! when the broker goes away the server keeps serving and the source reconnects.
//!
//! Needs `TETHER_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`); without it
//! every test prints a notice and passes without running. Each test uses its own
//! exchange, deleted at the end, so runs never collide. The broker "going away" is a
//! TCP proxy between the server and the broker being cut, so the shared broker is
//! never stopped.

mod common;

use common::amqp::Publisher;
use common::proxy::{reroute, Proxy};
use common::{unique, Client, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn broker() -> Option<String> {
    common::service("TETHER_TEST_AMQP", "RabbitMQ source tests")
}

/// A `/ws` topic subscriber and a `/monorail/<channel>` watcher of one channel.
struct Watchers {
    ws: Client,
    monorail: Client,
}

impl Watchers {
    async fn new(server: &TestServer, channel: &str) -> Watchers {
        let (mut ws, _) = Client::canonical(&server.url("/ws")).await;
        let reply = ws
            .request(json!({"type": "subscribe", "sub": "logs", "topic": channel}))
            .await;
        assert_eq!(reply["type"], "snapshot", "{reply}");
        let mut monorail = Client::connect(&server.url(&format!("/monorail/{channel}"))).await;
        monorail
            .send(json!({"handler": "watch", "params": {}}))
            .await;
        let list = monorail.recv().await;
        assert_eq!(list["handler"], "list", "{list}");
        Watchers { ws, monorail }
    }

    /// The next relayed line at each watcher.
    async fn next(&mut self) -> (Value, Value) {
        (self.next_ws().await, self.next_monorail().await)
    }

    async fn next_ws(&mut self) -> Value {
        loop {
            let m = self.ws.recv().await;
            if m["type"] == "message" {
                assert_eq!(m["sub"], "logs", "{m}");
                return m["data"].clone();
            }
        }
    }

    async fn next_monorail(&mut self) -> Value {
        loop {
            let m = self.monorail.recv().await;
            if m["handler"] == "item" {
                return m["data"].clone();
            }
        }
    }

    /// Publishes probes until one arrives (the source is bound), then a marker, and
    /// reads both watchers up to it, so what follows starts on a clean slate.
    async fn wait_until_relaying(&mut self, publisher: &Publisher, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for probe in 0.. {
            assert!(
                Instant::now() < deadline,
                "the source never started relaying"
            );
            publisher
                .publish(key, json!({"probe": probe}).to_string().as_bytes())
                .await;
            // Cancel-safe: an unfinished wait loses no frame.
            if tokio::time::timeout(Duration::from_millis(300), self.next_ws())
                .await
                .is_ok()
            {
                break;
            }
        }
        let marker = json!({"marker": true});
        publisher.publish(key, marker.to_string().as_bytes()).await;
        while self.next_ws().await != marker {}
        while self.next_monorail().await != marker {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_reach_ws_and_monorail_watchers_in_order() {
    let Some(url) = broker() else {
        return;
    };
    let publisher = Publisher::new(&url).await;
    let channel = unique("wf");
    let spec = format!("{url}#{}/logs.{channel}.*={channel}", publisher.exchange);
    let server = TestServer::start_with(|c| c.sources = vec![spec]).await;
    let mut watchers = Watchers::new(&server, &channel).await;
    let key = format!("logs.{channel}.step");
    watchers.wait_until_relaying(&publisher, &key).await;

    for n in 0..50 {
        publisher
            .publish(&key, json!({"n": n}).to_string().as_bytes())
            .await;
    }
    publisher.publish(&key, b"plain text line\n").await;
    // Another routing key is not this source's.
    publisher
        .publish("logs.elsewhere.step", b"{\"n\": -1}")
        .await;
    for n in 0..50 {
        let (a, b) = watchers.next().await;
        assert_eq!(a, json!({"n": n}), "/ws in order");
        assert_eq!(b, json!({"n": n}), "/monorail in order");
    }
    let (a, b) = watchers.next().await;
    assert_eq!((a, b), (json!("plain text line"), json!("plain text line")));
    watchers.ws.expect_silence(Duration::from_millis(300)).await;
    // Relayed lines are not records.
    let all: Value = reqwest::get(server.http(&format!("/api/{channel}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all, json!([]));
    server.server.stop().await.unwrap();
    publisher.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_is_reconnected_and_the_server_keeps_serving() {
    let Some(url) = broker() else {
        return;
    };
    let publisher = Publisher::new(&url).await;
    let (upstream, _) = reroute(&url, "unused", 5672);
    let proxy = Proxy::start(upstream).await;
    let (_, through_proxy) = reroute(&url, &proxy.addr, 5672);
    let channel = unique("wf");
    let key = format!("logs.{channel}");
    let spec = format!("{through_proxy}#{}/{key}={channel}", publisher.exchange);
    let server = TestServer::start_with(|c| c.sources = vec![spec]).await;
    let mut watchers = Watchers::new(&server, &channel).await;
    watchers.wait_until_relaying(&publisher, &key).await;
    publisher.publish(&key, b"{\"before\": 1}").await;
    assert_eq!(watchers.next().await.0, json!({"before": 1}));

    proxy.cut();
    // Everything else keeps working while the broker is away.
    let http = reqwest::Client::new();
    let health = http.get(server.http("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let created = http
        .post(server.http("/api/notes"))
        .json(&json!({"id": "n1", "text": "still serving"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    tokio::time::sleep(Duration::from_millis(1500)).await; // a few failed retries

    proxy.restore();
    watchers.wait_until_relaying(&publisher, &key).await;
    for n in 0..20 {
        publisher
            .publish(&key, json!({"after": n}).to_string().as_bytes())
            .await;
    }
    for n in 0..20 {
        let (a, b) = watchers.next().await;
        assert_eq!((a, b), (json!({"after": n}), json!({"after": n})));
    }
    server.server.stop().await.unwrap();
    publisher.delete().await;
}
