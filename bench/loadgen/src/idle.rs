//! Idle: many WebSocket connections, each watching one record, doing nothing else; the
//! server's resident memory per connection, and how long opening them all took.
//!
//! One process may hold at most 20,000 open files here, so the connections are opened
//! by several worker processes (this binary's `idle-worker`), each from its own
//! loopback source address. The orchestrator grows the total in steps and reads the
//! server's `VmRSS` after each, so the result has a slope (memory per additional
//! connection) as well as an average, and the slope projects larger counts.
//!
//! Workers take commands on stdin (`open <n>`, `exit`) and answer on stdout (`opened
//! <ok> <failed> <secs>`). A worker whose stdin closes exits, so an orchestrator that
//! dies never leaves connections behind.

use crate::net::{self, Ws};
use crate::procfs;
use crate::proto::Protocol;
use crate::Outcome;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// How long after the clients left the server's CPU is counted as closing them.
const CLOSE_WINDOW: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub resource: String,
    pub connections: usize,
    /// Worker processes; each opens an equal share from its own source address.
    pub procs: usize,
    /// Measurement points: the total grows to connections * k / steps, k = 1..=steps.
    pub steps: usize,
    /// The worker binary (this one, `loadgen`).
    pub worker_exe: PathBuf,
    /// The first source address is 127.0.0.<first_source>.
    pub first_source: u8,
    /// Time for the server to settle after a step before its memory is read.
    pub settle: Duration,
    pub time_limit: Duration,
    pub server_pid: Option<u32>,
}

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn command(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("worker stdin: {e}"))
    }

    /// `(ok, failed)` from the worker's `opened` answer.
    async fn answer(&mut self) -> Result<(u64, u64), String> {
        let line = self
            .stdout
            .next_line()
            .await
            .map_err(|e| format!("worker stdout: {e}"))?
            .ok_or("a worker exited early")?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("opened"), Some(ok), Some(failed)) => Ok((
                ok.parse()
                    .map_err(|_| format!("bad worker line {line:?}"))?,
                failed
                    .parse()
                    .map_err(|_| format!("bad worker line {line:?}"))?,
            )),
            _ => Err(format!("unexpected worker line {line:?}")),
        }
    }
}

pub async fn run(o: Options) -> Outcome {
    net::check_loopback(o.addr)?;
    let deadline = Instant::now() + o.time_limit;
    let procs = o.procs.max(1);
    let steps = o.steps.max(1);
    let mut workers = Vec::with_capacity(procs);
    for i in 0..procs {
        let source = Ipv4Addr::new(127, 0, 0, o.first_source.saturating_add(i as u8));
        let mut child = tokio::process::Command::new(&o.worker_exe)
            .arg("idle-worker")
            .args(["--addr", &o.addr.to_string()])
            .args(["--protocol", o.protocol.name()])
            .args(["--resource", &o.resource])
            .args(["--source", &source.to_string()])
            .args(["--prefix", &format!("p{i}-")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", o.worker_exe.display()))?;
        let stdin = child.stdin.take().ok_or("no worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no worker stdout")?).lines();
        workers.push(Worker {
            child,
            stdin,
            stdout,
        });
    }
    // Let the workers start before the baseline, so their start-up is not timed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = |pid: Option<u32>| pid.and_then(procfs::rss_kib);
    let baseline = rss(o.server_pid);
    let mut points = Vec::new();
    let mut total = 0u64;
    let mut failed = 0u64;
    let mut open_secs = 0.0;
    let mut stopped_early = None;
    for step in 1..=steps {
        let target = o.connections * step / steps;
        let add = target.saturating_sub(total as usize + failed as usize);
        let started = Instant::now();
        for (i, w) in workers.iter_mut().enumerate() {
            let share = add / procs + usize::from(i < add % procs);
            w.command(&format!("open {share}")).await?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let answers = async {
            let mut sum = (0, 0);
            for w in workers.iter_mut() {
                let (ok, bad) = w.answer().await?;
                sum = (sum.0 + ok, sum.1 + bad);
            }
            Ok::<_, String>(sum)
        };
        let (ok, bad) = tokio::time::timeout(left, answers)
            .await
            .map_err(|_| "opening connections ran past the time limit".to_owned())??;
        open_secs += started.elapsed().as_secs_f64();
        total += ok;
        failed += bad;
        tokio::time::sleep(o.settle).await;
        points.push(json!({"connections": total, "rss_kib": rss(o.server_pid)}));
        if bad > 0 {
            stopped_early = Some(format!(
                "{bad} connections failed at step {step}: the machine's limit is near"
            ));
            break;
        }
    }
    // Then every client leaves at once, as after a network blip: the server's CPU
    // for closing them all, over a fixed window that covers it.
    let close_cpu = o.server_pid.map(procfs::CpuMeter::start);
    for w in workers.iter_mut() {
        let _ = w.command("exit").await;
    }
    for mut w in workers {
        if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
            .await
            .is_err()
        {
            let _ = w.child.kill().await;
        }
    }
    tokio::time::sleep(CLOSE_WINDOW).await;
    let close_cpu_secs = close_cpu.and_then(|m| m.elapsed());

    let last_rss = points.last().and_then(|p| p["rss_kib"].as_u64());
    let per_conn = match (baseline, last_rss) {
        (Some(b), Some(l)) if total > 0 => Some((l as f64 - b as f64) / total as f64),
        _ => None,
    };
    let mut xy: Vec<(f64, f64)> = baseline.map(|b| (0.0, b as f64)).into_iter().collect();
    xy.extend(
        points
            .iter()
            .filter_map(|p| Some((p["connections"].as_f64()?, p["rss_kib"].as_f64()?))),
    );
    let slope = slope(&xy);
    let project = |n: f64| -> Value {
        match (baseline, slope) {
            (Some(b), Some(s)) => json!((b as f64 + s * n) / 1024.0),
            _ => Value::Null,
        }
    };
    Ok(json!({
        "scenario": "idle",
        "params": {
            "protocol": o.protocol.name(), "connections": o.connections, "procs": procs,
            "steps": steps,
        },
        "metrics": {
            "connections": total,
            "failed": failed,
            "stopped_early": stopped_early,
            "open_secs": open_secs,
            "connections_per_sec": if open_secs > 0.0 { total as f64 / open_secs } else { 0.0 },
            "close_cpu_secs": close_cpu_secs,
            "close_cpu_us_per_conn": close_cpu_secs.map(|s| s * 1e6 / total.max(1) as f64),
            "baseline_rss_kib": baseline,
            "rss_kib": last_rss,
            "rss_per_conn_kib": per_conn,
            "rss_slope_kib": slope,
            "points": points,
            "projected_rss_mib_100k": project(100_000.0),
            "projected_rss_mib_1m": project(1_000_000.0),
        },
    }))
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
fn slope(xy: &[(f64, f64)]) -> Option<f64> {
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return None;
    }
    let (sx, sy) = xy.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = xy.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// A worker process: opens connections on command and holds them until told to exit.
pub async fn worker(
    addr: SocketAddr,
    protocol: Protocol,
    resource: String,
    source: Ipv4Addr,
    prefix: String,
) -> Result<(), String> {
    net::check_loopback(addr)?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut held = JoinSet::new();
    let mut next = 0usize;
    let gate = Arc::new(Semaphore::new(128));
    // Stdin closing (the orchestrator went away) ends the worker like `exit`.
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(n) = line.strip_prefix("open ") else {
            break;
        };
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("bad command {line:?}"))?;
        let started = Instant::now();
        let mut opening = JoinSet::new();
        for _ in 0..n {
            let id = format!("{prefix}{next}");
            next += 1;
            let (gate, resource) = (gate.clone(), resource.clone());
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await;
                open_idle(addr, protocol, &resource, &id, source).await
            });
        }
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(joined) = opening.join_next().await {
            match joined {
                Ok(Ok(ws)) => {
                    ok += 1;
                    held.spawn(hold(ws));
                }
                Ok(Err(e)) => {
                    if failed == 0 {
                        eprintln!("idle-worker {source}: {e}");
                    }
                    failed += 1;
                }
                Err(_) => failed += 1,
            }
        }
        let answer = format!(
            "opened {ok} {failed} {:.3}\n",
            started.elapsed().as_secs_f64()
        );
        out.write_all(answer.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
    }
    held.shutdown().await;
    Ok(())
}

async fn open_idle(
    addr: SocketAddr,
    protocol: Protocol,
    resource: &str,
    id: &str,
    source: Ipv4Addr,
) -> Result<Ws, String> {
    let timeout = Duration::from_secs(30);
    let mut ws = net::connect(addr, &protocol.path(resource), Some(source), timeout).await?;
    ws.send(Message::Text(protocol.watch(resource, Some(id)).into()))
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
        Err("closed before answering the watch".to_owned())
    };
    tokio::time::timeout(timeout, answered)
        .await
        .map_err(|_| "no answer to the watch in time".to_owned())??;
    Ok(ws)
}

/// Keeps a connection open, answering pings, until the server closes it.
async fn hold(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let s = super::slope(&[(0.0, 100.0), (10.0, 150.0), (20.0, 200.0)]).unwrap();
        assert!((s - 5.0).abs() < 1e-9);
        assert_eq!(super::slope(&[(1.0, 1.0)]), None);
    }
}
