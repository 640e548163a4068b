//! Fan-out: N watchers of one resource, one writer doing W writes through the HTTP API.
//!
//! Each write is `PUT /api/<resource>/<id>` with `{"bseq": <write number>, "bt": <send
//! time in µs>}` in its data, so every watcher can tell which write a push is for and
//! how long it took from the writer's send to its own receive (the writer and the
//! watchers share one clock: they are one process). Each watcher keeps a bit per write:
//! a second push for one write is a duplicate, an acknowledged write it never saw by
//! the end is missing. Both must be zero.
//!
//! The writer offers writes at a fixed rate (or as fast as its in-flight bound allows)
//! and stamps each with the time it actually sent it; whether it kept up with the
//! offered rate is reported beside the results.

use crate::net::{self, Ws};
use crate::procfs::CpuMeter;
use crate::proto::{find_u64, Protocol};
use crate::stats::{self, per_sec};
use crate::Outcome;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub resource: String,
    pub watchers: usize,
    pub writes: usize,
    /// Writes offered per second; 0 sends as fast as `in_flight` allows.
    pub rate: f64,
    /// Writes awaiting their HTTP response at once, at most.
    pub in_flight: usize,
    /// Distinct record ids the writes cycle through.
    pub ids: usize,
    pub sources: Vec<Ipv4Addr>,
    /// Watchers connecting at once.
    pub connect_parallel: usize,
    /// The whole scenario, connecting included, ends by this deadline.
    pub time_limit: Duration,
    /// After the last write, give up waiting once no delivery arrived for this long.
    pub quiet: Duration,
    pub server_pid: Option<u32>,
}

impl Options {
    pub fn new(addr: SocketAddr, resource: &str, watchers: usize, writes: usize) -> Options {
        Options {
            addr,
            protocol: Protocol::Canonical,
            resource: resource.to_owned(),
            watchers,
            writes,
            rate: 0.0,
            in_flight: 32,
            ids: 64,
            sources: net::sources(2, 4),
            connect_parallel: 256,
            time_limit: Duration::from_secs(120),
            quiet: Duration::from_secs(5),
            server_pid: None,
        }
    }
}

/// What every watcher shares: the clock, progress counters and the latency histogram.
struct Shared {
    base: Instant,
    delivered: AtomicU64,
    /// µs since `base` of the latest delivery anywhere.
    last_delivery: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

struct WatcherReport {
    seen: Vec<u64>,
    duplicates: u64,
    stray: u64,
    closed_early: bool,
}

/// Latencies are batched before taking the shared histogram's lock.
const LATENCY_BATCH: usize = 256;

async fn watch_loop(
    mut ws: Ws,
    writes: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> WatcherReport {
    let mut report = WatcherReport {
        seen: vec![0; writes.div_ceil(64)],
        duplicates: 0,
        stray: 0,
        closed_early: false,
    };
    let mut batch = Vec::with_capacity(LATENCY_BATCH);
    let flush = |batch: &mut Vec<u64>| {
        let mut h = shared.latency.lock().unwrap_or_else(|p| p.into_inner());
        for us in batch.drain(..) {
            stats::record(&mut h, us);
        }
    };
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = stop.changed() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                report.closed_early = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Some(seq) = find_u64(&text, "bseq") else {
            continue;
        };
        let now = shared.now_us();
        let Some(word) = report.seen.get_mut(seq as usize / 64) else {
            report.stray += 1;
            continue;
        };
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            report.duplicates += 1;
            continue;
        }
        *word |= bit;
        if let Some(sent) = find_u64(&text, "bt") {
            batch.push(now.saturating_sub(sent));
            if batch.len() == LATENCY_BATCH {
                flush(&mut batch);
            }
        }
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared.last_delivery.fetch_max(now, Ordering::Relaxed);
    }
    flush(&mut batch);
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    report
}

/// Connects and watches; returns once the server answered the watch.
async fn open_watcher(
    addr: SocketAddr,
    protocol: Protocol,
    resource: &str,
    source: Ipv4Addr,
    timeout: Duration,
) -> Result<Ws, String> {
    let mut ws = net::connect(addr, &protocol.path(resource), Some(source), timeout).await?;
    ws.send(Message::Text(protocol.watch(resource, None).into()))
        .await
        .map_err(|e| format!("send watch: {e}"))?;
    let answered = async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame.map_err(|e| format!("read: {e}"))? {
                if protocol.watch_answer(&text)? {
                    return Ok(());
                }
            }
        }
        Err("the server closed before answering the watch".to_owned())
    };
    tokio::time::timeout(timeout, answered)
        .await
        .map_err(|_| "no answer to the watch in time".to_owned())??;
    Ok(ws)
}

pub async fn run(o: Options) -> Outcome {
    net::check_loopback(o.addr)?;
    let deadline = Instant::now() + o.time_limit;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        delivered: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
        latency: Mutex::new(stats::histogram()),
    });

    // Connect every watcher, a bounded number at a time.
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(o.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    for i in 0..o.watchers {
        let (gate, resource) = (gate.clone(), o.resource.clone());
        let source = o.sources[i % o.sources.len()];
        let (addr, protocol) = (o.addr, o.protocol);
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await;
            open_watcher(addr, protocol, &resource, source, Duration::from_secs(30)).await
        });
    }
    let mut sockets = Vec::with_capacity(o.watchers);
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => return Err(format!("watcher {} could not connect: {e}", sockets.len())),
            Err(e) => return Err(format!("connect task failed: {e}")),
        }
        if Instant::now() > deadline {
            return Err("connecting the watchers ran past the time limit".into());
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watchers = JoinSet::new();
    for ws in sockets {
        watchers.spawn(watch_loop(ws, o.writes, shared.clone(), stop_rx.clone()));
    }

    // The writer.
    let server_cpu = o.server_pid.map(CpuMeter::start);
    let client_cpu = CpuMeter::own();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.in_flight)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let acked: Arc<Vec<AtomicBool>> =
        Arc::new((0..o.writes).map(|_| AtomicBool::new(false)).collect());
    let write_errors = Arc::new(AtomicU64::new(0));
    let ack_latency = Arc::new(Mutex::new(stats::histogram()));
    let first_send = shared.now_us();
    let in_flight = Arc::new(Semaphore::new(o.in_flight.max(1)));
    let mut writes = JoinSet::new();
    let started = Instant::now();
    for seq in 0..o.writes {
        if o.rate > 0.0 {
            let due = started + Duration::from_secs_f64(seq as f64 / o.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() > deadline {
            break;
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}/api/{}/k{}",
            o.addr,
            o.resource,
            seq % o.ids.max(1)
        );
        let sent = shared.now_us();
        let body = format!(r#"{{"bseq":{seq},"bt":{sent}}}"#);
        let request = http
            .put(url)
            .header("content-type", "application/json")
            .body(body);
        let (acked, errors, ack_latency, shared) = (
            acked.clone(),
            write_errors.clone(),
            ack_latency.clone(),
            shared.clone(),
        );
        writes.spawn(async move {
            let ok = match tokio::time::timeout(Duration::from_secs(30), request.send()).await {
                Ok(Ok(r)) => r.status().is_success(),
                _ => false,
            };
            drop(permit);
            if ok {
                acked[seq].store(true, Ordering::Relaxed);
                let mut h = ack_latency.lock().unwrap_or_else(|p| p.into_inner());
                stats::record(&mut h, shared.now_us() - sent);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while writes.try_join_next().is_some() {}
    }
    let last_send = shared.now_us();
    while writes.join_next().await.is_some() {}
    let ok_writes = acked.iter().filter(|a| a.load(Ordering::Relaxed)).count() as u64;
    let expected = ok_writes * o.watchers as u64;

    // Wait for every delivery, for quiet, or for the deadline.
    let mut last_count = shared.delivered.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    loop {
        let now_count = shared.delivered.load(Ordering::Relaxed);
        if now_count >= expected || Instant::now() > deadline {
            break;
        }
        if now_count != last_count {
            last_count = now_count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > o.quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_cpu_secs = server_cpu.and_then(|m| m.elapsed());
    let client_cpu_secs = client_cpu.elapsed();
    let _ = stop_tx.send(true);

    let mut missing = 0u64;
    let mut duplicates = 0u64;
    let mut stray = 0u64;
    let mut closed_early = 0u64;
    while let Some(joined) = watchers.join_next().await {
        let r = joined.map_err(|e| format!("watcher task failed: {e}"))?;
        for (seq, flag) in acked.iter().enumerate() {
            if flag.load(Ordering::Relaxed) && r.seen[seq / 64] & (1 << (seq % 64)) == 0 {
                missing += 1;
            }
        }
        duplicates += r.duplicates;
        stray += r.stray;
        closed_early += u64::from(r.closed_early);
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let span_secs = shared
        .last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_send) as f64
        / 1e6;
    let write_secs = (last_send - first_send) as f64 / 1e6;
    let latency = shared.latency.lock().unwrap_or_else(|p| p.into_inner());
    let ack = ack_latency.lock().unwrap_or_else(|p| p.into_inner());
    Ok(json!({
        "scenario": "fanout",
        "params": {
            "protocol": o.protocol.name(), "watchers": o.watchers, "writes": o.writes,
            "rate": o.rate, "in_flight": o.in_flight, "ids": o.ids,
        },
        "metrics": {
            "connect_secs": connect_secs,
            "writes_ok": ok_writes,
            "write_errors": write_errors.load(Ordering::Relaxed),
            "write_rate_achieved": per_sec(o.writes as u64, write_secs),
            "expected": expected,
            "delivered": delivered,
            "missing": missing,
            "duplicates": duplicates,
            "stray": stray,
            "closed_early": closed_early,
            "deliveries_per_sec": per_sec(delivered, span_secs),
            "span_secs": span_secs,
            "latency_ms": stats::summary(&latency),
            "write_ack_ms": stats::summary(&ack),
            "server_cpu_secs": server_cpu_secs,
            "server_cpu_us_per_delivery": server_cpu_secs.map(|s| s * 1e6 / delivered.max(1) as f64),
            "client_cpu_secs": client_cpu_secs,
        },
    }))
}
