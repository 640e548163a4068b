//! Durable writes: K clients writing as fast as they can over the canonical `/ws`;
//! acknowledged writes per second.
//!
//! Tether answers a write only once its group commit is on disk, so every counted
//! acknowledgement is durable. Each client keeps up to `window` writes outstanding
//! (replies come back in order on a connection), each an `upsert` of one of its own 256
//! records, so the store stays small and the run measures commits, not growth.

use crate::net;
use crate::procfs::CpuMeter;
use crate::stats::{self, per_sec};
use crate::Outcome;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub resource: String,
    pub clients: usize,
    pub window: usize,
    pub duration: Duration,
    /// Per client, at most.
    pub max_writes: usize,
    /// The server's process, for its CPU time per acknowledged write.
    pub server_pid: Option<u32>,
}

struct ClientReport {
    acked: u64,
    /// Including those that arrived after the run's end, for CPU per write.
    acked_in_all: u64,
    errors: u64,
    latency: Histogram<u64>,
}

async fn client(o: Options, k: usize, start: Instant) -> Result<ClientReport, String> {
    let sources = net::sources(2, 4);
    let timeout = Duration::from_secs(10);
    let mut ws = net::connect(o.addr, "/ws", Some(sources[k % sources.len()]), timeout).await?;
    let mut report = ClientReport {
        acked: 0,
        acked_in_all: 0,
        errors: 0,
        latency: stats::histogram(),
    };
    tokio::time::sleep_until(start.into()).await;
    let end = start + o.duration;
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut sent = 0usize;
    loop {
        while outstanding.len() < o.window.max(1) && sent < o.max_writes && Instant::now() < end {
            let text = format!(
                r#"{{"type":"upsert","req":{sent},"resource":"{}","id":"c{k}-{}","data":{{"n":{sent},"client":{k}}}}}"#,
                o.resource,
                sent % 256
            );
            ws.feed(Message::Text(text.into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            outstanding.push_back(Instant::now());
            sent += 1;
        }
        ws.flush().await.map_err(|e| format!("send: {e}"))?;
        if outstanding.is_empty() {
            break;
        }
        let frame = tokio::time::timeout(timeout, ws.next())
            .await
            .map_err(|_| "no reply within 10 s".to_owned())?;
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => return Err("the server closed the connection".into()),
        };
        if text.contains(r#""type":"welcome""#) {
            continue;
        }
        let Some(at) = outstanding.pop_front() else {
            continue;
        };
        let acked = text.contains(r#""type":"result""#);
        if acked {
            report.acked_in_all += 1;
        }
        // Only acknowledgements that arrive within the run count toward the rate.
        if Instant::now() <= end {
            if acked {
                report.acked += 1;
                stats::record(&mut report.latency, at.elapsed().as_micros() as u64);
            } else {
                report.errors += 1;
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(report)
}

pub async fn run(o: Options) -> Outcome {
    net::check_loopback(o.addr)?;
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = JoinSet::new();
    // From before the first connection to after the last reply: the server's CPU for
    // connecting is in it too, a small share of a run of several seconds.
    let server_cpu = o.server_pid.map(CpuMeter::start);
    for k in 0..o.clients {
        tasks.spawn(client(o.clone(), k, start));
    }
    let mut latency = stats::histogram();
    let (mut acked, mut acked_in_all, mut errors) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let r = joined.map_err(|e| format!("client task failed: {e}"))??;
        latency.add(&r.latency).map_err(|e| e.to_string())?;
        acked += r.acked;
        acked_in_all += r.acked_in_all;
        errors += r.errors;
    }
    let server_cpu_secs = server_cpu.and_then(|m| m.elapsed());
    let secs = o.duration.as_secs_f64();
    Ok(json!({
        "scenario": "durable",
        "params": {"clients": o.clients, "window": o.window, "duration_secs": secs},
        "metrics": {
            "acked": acked,
            "errors": errors,
            "acked_writes_per_sec": per_sec(acked, secs),
            "ack_latency_ms": stats::summary(&latency),
            "server_cpu_secs": server_cpu_secs,
            "server_cpu_us_per_write": server_cpu_secs.map(|s| s * 1e6 / acked_in_all.max(1) as f64),
        },
    }))
}
