//! Operability: `/metrics` is Prometheus text with real histograms and HELP lines, and
//! every HTTP answer carries the request id its log lines use.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn metrics_are_prometheus_text_with_histograms_and_help() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.recv().await;
    c.request(json!({"type": "create", "resource": "m", "id": "a", "data": {}}))
        .await;
    let http = reqwest::Client::new();
    let text = http
        .get(s.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "# TYPE tether_write_seconds histogram",
        "tether_write_seconds_bucket{le=\"0.001\"}",
        "# TYPE tether_commit_batch_size histogram",
        "# HELP tether_connections Open WebSocket connections, by dialect.",
        "tether_connections{dialect=\"canonical\"}",
        "# TYPE tether_http_requests_total counter",
        "tether_changelog_position",
        "tether_bytes_in_total{dialect=\"canonical\"}",
        "tether_bytes_out_total{dialect=\"canonical\"}",
        "tether_messages_out_total{dialect=\"canonical\"}",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let mine = http
        .get(s.http("/health"))
        .header("x-request-id", "lb-42.a")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "lb-42.a");

    // A made-up one when absent, or when the caller's is not a plain token.
    for header in [None, Some("two words")] {
        let mut request = http.get(s.http("/api/things/x"));
        if let Some(h) = header {
            request = request.header("x-request-id", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!id.is_empty() && !id.contains(' '), "{id:?}");
    }
}
