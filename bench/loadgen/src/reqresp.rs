//! Request/response: K clients doing get/put round trips over the canonical `/ws`.
//!
//! Each client alternates an `upsert` of its own record and a `get` of it, one request
//! at a time ([`Mix::GetPut`]), or only gets after one initial put ([`Mix::Get`]: the
//! read path alone, which a durable put's `fsync` cannot hide).
//!
//! With a target rate the requests follow a fixed schedule (client k sends at
//! k/R + i*K/R). A client that is behind its schedule because a reply came late counts
//! latency from the scheduled time, so a server that falls behind is charged for the
//! queue it caused (no coordinated omission); a client that slept until its slot counts
//! from the actual send, since the sleep's overshoot (tokio's timer has 1 ms
//! granularity) is the client's own. With rate 0 the clients go as fast as round trips
//! allow.
//!
//! A put is acknowledged by Tether only once it is durable (an fsync'd group commit);
//! a get is served from the store. Both are reported separately and together.

use crate::net;
use crate::stats::{self, per_sec};
use crate::Outcome;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub resource: String,
    pub clients: usize,
    /// Requests per second over all clients; 0 for as fast as possible.
    pub rate: f64,
    pub duration: Duration,
    /// Per client, at most.
    pub max_requests: usize,
    pub mix: Mix,
}

/// Which requests the clients send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Alternate puts (upserts) and gets.
    #[default]
    GetPut,
    /// Only gets (after one put per client that is not timed).
    Get,
}

#[derive(Default)]
struct ClientReport {
    get: Option<Histogram<u64>>,
    put: Option<Histogram<u64>>,
    done: u64,
    errors: u64,
    behind: u64,
}

async fn client(o: Options, k: usize, start: Instant) -> Result<ClientReport, String> {
    let sources = net::sources(2, 4);
    let timeout = Duration::from_secs(10);
    let mut ws = net::connect(o.addr, "/ws", Some(sources[k % sources.len()]), timeout).await?;
    let mut get = stats::histogram();
    let mut put = stats::histogram();
    let mut report = ClientReport::default();
    let period = if o.rate > 0.0 {
        Some(Duration::from_secs_f64(o.clients as f64 / o.rate))
    } else {
        None
    };
    let offset = Duration::from_secs_f64(if o.rate > 0.0 { k as f64 / o.rate } else { 0.0 });
    let end = start + o.duration;
    for i in 0..o.max_requests {
        let due = match period {
            Some(p) => start + offset + p * i as u32,
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        // Latency counts from the scheduled time when the client is behind (the
        // previous reply came late: that queue is the server's doing), but from the
        // actual send after a sleep, whose overshoot (tokio's timer has 1 ms
        // granularity) is the client's own.
        let from = if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
            Instant::now()
        } else {
            if period.is_some() && Instant::now() - due > Duration::from_millis(1) {
                report.behind += 1;
            }
            due
        };
        let is_put = match o.mix {
            Mix::GetPut => i % 2 == 0,
            Mix::Get => i == 0,
        };
        let text = if is_put {
            format!(
                r#"{{"type":"upsert","req":{i},"resource":"{}","id":"c{k}","data":{{"n":{i},"who":"client {k}"}}}}"#,
                o.resource
            )
        } else {
            format!(
                r#"{{"type":"get","req":{i},"resource":"{}","id":"c{k}"}}"#,
                o.resource
            )
        };
        ws.send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let reply = loop {
            let frame = tokio::time::timeout(timeout, ws.next())
                .await
                .map_err(|_| "no reply within 10 s".to_owned())?;
            match frame {
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"welcome""#) => continue,
                Some(Ok(Message::Text(t))) => break t,
                Some(Ok(_)) => continue,
                _ => return Err("the server closed the connection".into()),
            }
        };
        let us = from.elapsed().as_micros() as u64;
        if reply.contains(r#""type":"result""#) {
            if o.mix == Mix::GetPut || !is_put {
                stats::record(if is_put { &mut put } else { &mut get }, us);
            }
            report.done += 1;
        } else {
            report.errors += 1;
        }
    }
    let _ = ws.close(None).await;
    report.get = Some(get);
    report.put = Some(put);
    Ok(report)
}

pub async fn run(o: Options) -> Outcome {
    net::check_loopback(o.addr)?;
    // Connect first (Tether and the peer both send a welcome), then start the clock.
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = JoinSet::new();
    for k in 0..o.clients {
        tasks.spawn(client(o.clone(), k, start));
    }
    let (mut get, mut put, mut all) = (stats::histogram(), stats::histogram(), stats::histogram());
    let (mut done, mut errors, mut behind) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let r = joined.map_err(|e| format!("client task failed: {e}"))??;
        for (h, from) in [(&mut get, &r.get), (&mut put, &r.put)] {
            if let Some(from) = from {
                h.add(from).map_err(|e| e.to_string())?;
                all.add(from).map_err(|e| e.to_string())?;
            }
        }
        done += r.done;
        errors += r.errors;
        behind += r.behind;
    }
    // Every scheduled request is sent, late or not, so a server that falls behind
    // stretches the run: the achieved rate is over the whole span.
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok(json!({
        "scenario": "reqresp",
        "params": {
            "clients": o.clients, "rate": o.rate, "duration_secs": o.duration.as_secs_f64(),
            "mix": format!("{:?}", o.mix),
        },
        "metrics": {
            "requests": done,
            "errors": errors,
            "late_sends": behind,
            "requests_per_sec": per_sec(done, secs),
            "latency_ms": stats::summary(&all),
            "get_ms": stats::summary(&get),
            "put_ms": stats::summary(&put),
        },
    }))
}
