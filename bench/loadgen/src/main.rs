//! `loadgen`: runs one benchmark scenario against one server and prints its result as
//! JSON (see `BENCHMARKS.md`; `bench/run.sh` runs them all against every server).

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tether_loadgen::proto::Protocol;
use tether_loadgen::{durable, fanout, idle, net, report, reqresp};

#[derive(Parser)]
#[command(name = "loadgen", about = "Tether's load generator (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a result goes and what it is labelled with in the report.
#[derive(Args, Clone)]
struct Output {
    /// Scenario label in the report (e.g. fanout-1k).
    #[arg(long)]
    label: Option<String>,
    /// Server name in the report: tether or the peer's name.
    #[arg(long, default_value = "tether")]
    server: String,
    /// Position in the run, so the report keeps the order scenarios ran in.
    #[arg(long, default_value_t = 0)]
    order: u64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server's process id: its CPU time and memory are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args, Clone)]
struct Target {
    /// host:port of the server (loopback only).
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: SocketAddr,
    /// The resource (or MonoRail channel) to use; a fresh one per run by default.
    #[arg(long)]
    resource: Option<String>,
}

impl Target {
    fn resource(&self, prefix: &str) -> String {
        self.resource.clone().unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// N watchers of one resource; W timestamped writes through PUT /api.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        output: Output,
        #[arg(long, value_enum, default_value = "canonical")]
        protocol: Protocol,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        #[arg(long, default_value_t = 500)]
        writes: usize,
        /// Writes offered per second (0: as fast as --in-flight allows).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// Loopback source addresses to spread the watchers over (127.0.0.2 on).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        #[arg(long, default_value_t = 180)]
        time_limit_secs: u64,
    },
    /// N idle connections with one watch each; server RSS per connection.
    Idle {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        output: Output,
        #[arg(long, value_enum, default_value = "canonical")]
        protocol: Protocol,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Worker processes (each under the 20,000 open files limit).
        #[arg(long, default_value_t = 4)]
        procs: usize,
        #[arg(long, default_value_t = 4)]
        steps: usize,
        #[arg(long, default_value_t = 1500)]
        settle_ms: u64,
        #[arg(long, default_value_t = 2)]
        first_source: u8,
        #[arg(long, default_value_t = 300)]
        time_limit_secs: u64,
    },
    /// (internal) One process of the idle scenario; commands on stdin.
    IdleWorker {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, value_enum)]
        protocol: Protocol,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        source: Ipv4Addr,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// K clients doing get/put round trips over /ws.
    Reqresp {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        output: Output,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Requests per second over all clients (0: as fast as possible).
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
        #[arg(long, default_value_t = 1_000_000)]
        max_requests: usize,
        /// get-put alternates upserts and gets; get times gets only.
        #[arg(long, value_enum, default_value = "get-put")]
        mix: reqresp::Mix,
    },
    /// K clients writing as fast as they can; acknowledged writes per second.
    Durable {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        output: Output,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Writes outstanding per client.
        #[arg(long, default_value_t = 4)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
        #[arg(long, default_value_t = 1_000_000)]
        max_writes: usize,
    },
    /// Waits until GET /health answers 200.
    Wait {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Prints the Tether / peer / ratio table for a directory of results.
    Report {
        dir: PathBuf,
        #[arg(long, default_value = "node-ws")]
        peer: String,
    },
}

fn finish(result: Result<Value, String>, output: &Output, label: &str) -> ExitCode {
    let mut value = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("loadgen: {label} against {}: {e}", output.server);
            return ExitCode::FAILURE;
        }
    };
    value["label"] = output.label.clone().unwrap_or_else(|| label.into()).into();
    value["server"] = output.server.clone().into();
    value["order"] = output.order.into();
    let text = value.to_string();
    println!("{text}");
    if let Some(path) = &output.out {
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn wait_healthy(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    net::check_loopback(addr)?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{addr}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "http://{addr}/health did not answer 200 within {timeout:?}"
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Fanout {
            target,
            output,
            protocol,
            watchers,
            writes,
            rate,
            in_flight,
            sources,
            time_limit_secs,
        } => {
            let mut o =
                fanout::Options::new(target.addr, &target.resource("fan"), watchers, writes);
            o.protocol = protocol;
            o.rate = rate;
            o.in_flight = in_flight;
            o.sources = net::sources(2, sources);
            o.time_limit = Duration::from_secs(time_limit_secs);
            o.server_pid = output.server_pid;
            finish(fanout::run(o).await, &output, "fanout")
        }
        Command::Idle {
            target,
            output,
            protocol,
            connections,
            procs,
            steps,
            settle_ms,
            first_source,
            time_limit_secs,
        } => {
            let worker_exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("loadgen: cannot find my own binary: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let o = idle::Options {
                addr: target.addr,
                protocol,
                resource: target.resource("idle"),
                connections,
                procs,
                steps,
                worker_exe,
                first_source,
                settle: Duration::from_millis(settle_ms),
                time_limit: Duration::from_secs(time_limit_secs),
                server_pid: output.server_pid,
            };
            finish(idle::run(o).await, &output, "idle")
        }
        Command::IdleWorker {
            addr,
            protocol,
            resource,
            source,
            prefix,
        } => match idle::worker(addr, protocol, resource, source, prefix).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("idle-worker: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Reqresp {
            target,
            output,
            clients,
            rate,
            duration_secs,
            max_requests,
            mix,
        } => {
            let o = reqresp::Options {
                addr: target.addr,
                resource: target.resource("rr"),
                clients,
                rate,
                duration: Duration::from_secs_f64(duration_secs),
                max_requests,
                mix,
            };
            finish(reqresp::run(o).await, &output, "reqresp")
        }
        Command::Durable {
            target,
            output,
            clients,
            window,
            duration_secs,
            max_writes,
        } => {
            let o = durable::Options {
                addr: target.addr,
                resource: target.resource("dw"),
                clients,
                window,
                duration: Duration::from_secs_f64(duration_secs),
                max_writes,
                server_pid: output.server_pid,
            };
            finish(durable::run(o).await, &output, "durable")
        }
        Command::Wait { addr, timeout_secs } => {
            match wait_healthy(addr, Duration::from_secs(timeout_secs)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report { dir, peer } => match report::run(&dir, &peer) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
