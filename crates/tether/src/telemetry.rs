//! Telemetry: the Prometheus recorder behind `GET /metrics`, and request ids in logs.
//!
//! Metrics go through the `metrics` facade, whose recorder is process-global, so it is
//! installed once per process (tests start many servers in one). Latencies and batch
//! sizes get explicit buckets: the exporter would otherwise render them as summaries,
//! which Prometheus cannot add up across nodes. Every metric is described here, so
//! `/metrics` carries `# HELP` lines and docs/operations.md has one list to match.
//!
//! Every HTTP request (WebSocket upgrades included) runs in a span `http` with
//! `request_id`, `method` and `path`. The id is the caller's `X-Request-Id` when it is a
//! sane token (so a proxy's id carries through), else a new one, and it is echoed in
//! the response. A WebSocket connection keeps its upgrade's span, so every log line a
//! connection causes names the request that opened it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tracing::Instrument;

/// Seconds: from a tenth of a millisecond (an in-memory reply) to ten seconds (a store
/// in trouble).
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Writes per group commit: powers of two up to the batch limit.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A dialect's connection gauge and message and byte counters, looked up by name once
/// per dialect. Looked up on every message, as the `metrics` macros do, they were 2-3%
/// of the server's CPU in the durable-writes benchmark. Sessions keep a `&'static Traffic`, so it must be
/// made after the recorder is installed (the server does so before it accepts).
pub struct Traffic {
    pub dialect: &'static str,
    pub connections: Gauge,
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
}

/// The counters for `dialect`, made (and kept for the process's life: one per
/// dialect) on first use.
pub fn traffic(dialect: &'static str) -> &'static Traffic {
    static MADE: Mutex<Vec<&'static Traffic>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = made.iter().find(|t| t.dialect == dialect) {
        return t;
    }
    let t: &'static Traffic = Box::leak(Box::new(Traffic {
        dialect,
        connections: metrics::gauge!("tether_connections", "dialect" => dialect),
        messages_in: metrics::counter!("tether_messages_in_total", "dialect" => dialect),
        bytes_in: metrics::counter!("tether_bytes_in_total", "dialect" => dialect),
        messages_out: metrics::counter!("tether_messages_out_total", "dialect" => dialect),
        bytes_out: metrics::counter!("tether_bytes_out_total", "dialect" => dialect),
    }));
    made.push(t);
    t
}

/// `tether_write_seconds`, looked up once (see [`Traffic`]).
pub fn write_seconds() -> &'static Histogram {
    static HISTOGRAM: OnceLock<Histogram> = OnceLock::new();
    HISTOGRAM.get_or_init(|| metrics::histogram!("tether_write_seconds"))
}

/// The process's recorder (installed on first use), or `None` if another recorder was
/// installed first (then `/metrics` answers empty rather than failing).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("tether_commit_batch_size".into()), BATCH)
        })
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    Some(handle)
}

/// HELP text for every metric the server records (docs/operations.md lists the same).
fn describe() {
    describe_gauge!(
        "tether_connections",
        "Open WebSocket connections, by dialect."
    );
    describe_gauge!(
        "tether_subscriptions",
        "Live subscriptions on this node (updated on scrape)."
    );
    describe_gauge!(
        "tether_changelog_position",
        "The last change-log position committed or delivered by this node."
    );
    describe_counter!(
        "tether_messages_in_total",
        "WebSocket text messages received, by dialect."
    );
    describe_counter!(
        "tether_messages_out_total",
        "WebSocket text messages sent, by dialect."
    );
    describe_counter!(
        "tether_bytes_in_total",
        Unit::Bytes,
        "Bytes of WebSocket text messages received, by dialect."
    );
    describe_counter!(
        "tether_bytes_out_total",
        Unit::Bytes,
        "Bytes of WebSocket text messages sent, by dialect."
    );
    describe_counter!(
        "tether_errors_total",
        "Requests answered with an error, by error code."
    );
    describe_counter!(
        "tether_outbox_overflows_total",
        "Connection queues that passed --outbox-max-bytes (the client was too slow)."
    );
    describe_counter!(
        "tether_slow_consumer_disconnects_total",
        "Connections closed with 4008 because their queue overflowed."
    );
    describe_counter!(
        "tether_store_errors_total",
        "Store operations that failed (commits and change-log reads)."
    );
    describe_counter!(
        "tether_bus_errors_total",
        "Bus trouble, by kind: a failed publish, or the hub lagging behind the bus; both are recovered from the store."
    );
    describe_counter!(
        "tether_changes_fanned_out_total",
        "Committed changes delivered to this node's subscribers."
    );
    describe_histogram!(
        "tether_write_seconds",
        Unit::Seconds,
        "Time from a write request to its durable acknowledgement."
    );
    describe_histogram!(
        "tether_commit_seconds",
        Unit::Seconds,
        "Time of one group commit in the store (one transaction, one fsync)."
    );
    describe_histogram!(
        "tether_commit_batch_size",
        "Writes committed together in one group commit."
    );
    // Connection limits, TLS and auth (transport/accept.rs, tls.rs, ws.rs, session.rs).
    describe_counter!(
        "tether_connections_refused_total",
        "Connections refused at accept, by reason: full (--max-connections) or per_ip (--max-connections-per-ip)."
    );
    describe_counter!(
        "tether_accept_errors_total",
        "Errors accepting a TCP connection (such as running out of file descriptors)."
    );
    describe_counter!(
        "tether_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out."
    );
    describe_counter!(
        "tether_upgrades_refused_total",
        "WebSocket upgrades refused, by reason: origin (not an allowed browser origin) or auth (no valid token)."
    );
    describe_counter!(
        "tether_idle_disconnects_total",
        "Connections closed with 4000 after --idle-timeout of silence."
    );
    describe_counter!(
        "tether_rate_limited_total",
        "Messages answered with limit_exceeded because their connection passed --max-messages-per-sec."
    );
    describe_counter!(
        "tether_rate_limit_disconnects_total",
        "Connections closed with 4029 for flooding past the rate limit."
    );
    // RabbitMQ-fed topics (sources/).
    describe_gauge!(
        "tether_source_connected",
        "1 while a --source is connected to its broker, 0 while it reconnects; by topic."
    );
    describe_counter!(
        "tether_source_messages_total",
        "Messages relayed from a --source to its topic, by topic."
    );
    describe_counter!(
        "tether_http_requests_total",
        "HTTP requests (WebSocket upgrades included), by method and status."
    );
    describe_histogram!(
        "tether_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (for an upgrade: until the switch to WebSocket)."
    );
}

/// Middleware: a span with the request id around every request, the id echoed in the
/// response, and the request counted and timed.
pub async fn trace_http(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_token(v))
        .map(str::to_owned)
        .unwrap_or_else(|| tether_core::RecordId::generate().to_string());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %method,
        path = %request.uri().path(),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", v);
    }
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    metrics::counter!("tether_http_requests_total", "method" => method.to_string(), "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("tether_http_request_seconds").record(elapsed.as_secs_f64());
    span.in_scope(|| {
        let ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// A request id worth keeping: short, and nothing a log reader could be fooled by.
fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_must_be_plain_tokens() {
        assert!(is_token("3f2a-bc.9:x_1"));
        assert!(!is_token(""));
        assert!(!is_token("has space"));
        assert!(!is_token("line\nbreak"));
        assert!(!is_token(&"x".repeat(65)));
    }
}
