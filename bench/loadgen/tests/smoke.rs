//! Keeps the harness working: a tiny version of each scenario against a real Tether
//! started in-process. Only correctness is asserted (zero missing or duplicate
//! deliveries, every request answered), never a timing.

use std::net::SocketAddr;
use std::time::Duration;
use tether_loadgen::proto::Protocol;
use tether_loadgen::{durable, fanout, idle, reqresp};

async fn server() -> (tether::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = tether::start(tether::Config::new(addr, dir.path().to_path_buf()))
        .await
        .unwrap();
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_write_once() {
    let (s, _dir) = server().await;
    let mut o = fanout::Options::new(s.addr, "smoke_fan", 10, 20);
    o.rate = 200.0;
    o.server_pid = Some(std::process::id());
    let r = fanout::run(o).await.unwrap();
    let m = &r["metrics"];
    assert_eq!(m["writes_ok"], 20, "{r}");
    assert_eq!(m["expected"], 200, "{r}");
    assert_eq!(m["delivered"], 200, "{r}");
    assert_eq!(m["missing"], 0, "{r}");
    assert_eq!(m["duplicates"], 0, "{r}");
    assert_eq!(m["latency_ms"]["count"], 200, "{r}");
}

/// Runs only once the MonoRail dialect is mounted; until then the server refuses the
/// upgrade and there is nothing to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_monorail_when_mounted() {
    let (s, _dir) = server().await;
    let mounted = tether_dialects_has_monorail();
    let mut o = fanout::Options::new(s.addr, "smoke_mono", 5, 10);
    o.protocol = Protocol::Monorail;
    o.time_limit = Duration::from_secs(30);
    let r = fanout::run(o).await;
    if !mounted {
        assert!(
            r.is_err(),
            "no MonoRail dialect yet, so the watch must fail: {r:?}"
        );
        return;
    }
    let r = r.unwrap();
    assert_eq!(r["metrics"]["missing"], 0, "{r}");
    assert_eq!(r["metrics"]["duplicates"], 0, "{r}");
    assert_eq!(r["metrics"]["delivered"], 50, "{r}");
}

fn tether_dialects_has_monorail() -> bool {
    // The registry is the source of truth for what the transport mounts.
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/tether-dialects/src/lib.rs"
    ))
    .is_ok_and(|s| s.contains("monorail::Monorail"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqresp_and_durable_get_answers() {
    let (s, _dir) = server().await;
    let r = reqresp::run(reqresp::Options {
        addr: s.addr,
        resource: "smoke_rr".into(),
        clients: 3,
        rate: 300.0,
        duration: Duration::from_millis(300),
        max_requests: 40,
        mix: reqresp::Mix::GetPut,
    })
    .await
    .unwrap();
    assert_eq!(r["metrics"]["errors"], 0, "{r}");
    assert!(r["metrics"]["requests"].as_u64().unwrap() > 0, "{r}");
    assert!(r["metrics"]["put_ms"]["count"].as_u64().unwrap() > 0, "{r}");

    let r = durable::run(durable::Options {
        addr: s.addr,
        resource: "smoke_dw".into(),
        clients: 4,
        window: 2,
        duration: Duration::from_secs(5),
        max_writes: 10,
        // The server runs in this process.
        server_pid: Some(std::process::id()),
    })
    .await
    .unwrap();
    assert_eq!(r["metrics"]["errors"], 0, "{r}");
    assert_eq!(r["metrics"]["acked"], 40, "{r}");
    assert!(
        r["metrics"]["server_cpu_us_per_write"].as_f64().unwrap() > 0.0,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_opens_connections_from_worker_processes() {
    let (s, _dir) = server().await;
    let r = idle::run(idle::Options {
        addr: s.addr,
        protocol: Protocol::Canonical,
        resource: "smoke_idle".into(),
        connections: 20,
        procs: 2,
        steps: 2,
        worker_exe: env!("CARGO_BIN_EXE_loadgen").into(),
        first_source: 2,
        settle: Duration::from_millis(50),
        time_limit: Duration::from_secs(60),
        server_pid: Some(std::process::id()),
    })
    .await
    .unwrap();
    assert_eq!(r["metrics"]["connections"], 20, "{r}");
    assert_eq!(r["metrics"]["failed"], 0, "{r}");
    assert_eq!(r["metrics"]["points"].as_array().unwrap().len(), 2, "{r}");
    assert!(r["metrics"]["close_cpu_us_per_conn"].is_f64(), "{r}");
}
