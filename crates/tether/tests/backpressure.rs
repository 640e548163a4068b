//! A slow consumer is cut off (4008) while a fast one keeps receiving everything.

mod common;

use common::{Client, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn slow_consumer_is_disconnected_and_fast_one_keeps_up() {
    // A small outbox bound so the test needs few writes.
    let s = TestServer::start_with(|c| c.outbox_max_bytes = 64 * 1024).await;
    let mut fast = s.client().await;
    fast.recv().await;
    fast.request(json!({"type": "subscribe", "sub": "f", "resource": "blobs"}))
        .await;

    // The slow client subscribes and then never reads again.
    let mut slow = s.client().await;
    slow.recv().await;
    slow.request(json!({"type": "subscribe", "sub": "s", "resource": "blobs"}))
        .await;

    // Large enough that the kernel's socket buffers cannot absorb it all.
    let payload = "x".repeat(64 * 1024);
    let writes = 300;
    let fast_reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < writes {
            let m = fast.recv().await;
            if m["type"] == "PUT" {
                seen.push(m["pos"].as_u64().unwrap());
            }
        }
        seen
    });
    let http = reqwest::Client::new();
    for i in 0..writes {
        let r = http
            .put(s.http(&format!("/api/blobs/b{i}")))
            .body(json!({"payload": payload}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), fast_reader)
        .await
        .unwrap()
        .unwrap();
    let expected: Vec<u64> = (1..=writes as u64).collect();
    assert_eq!(seen, expected, "the fast reader got every change in order");

    // The slow one, when it finally reads, finds its stream ended: with a 4008 close
    // frame if there was room for it, otherwise cut. It never received everything.
    let mut received = 0;
    let mut close_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                close_code = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the slow consumer's connection was never ended"),
        }
    }
    assert!(
        received < writes,
        "the slow consumer was cut off before the end"
    );
    assert!(matches!(close_code, None | Some(4008)), "{close_code:?}");
    let metrics = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tether_slow_consumer_disconnects_total 1"),
        "the disconnect is counted: {metrics}"
    );
    let _ = Client::connect(&s.url("/ws")).await; // and the server still accepts
}
