//! Connections past the open-file limit: the server refuses them cleanly, never
//! crashes, and accepts again once descriptors free up. Each test runs the binary
//! under a low `ulimit -n`, which only a separate process can have.

#[path = "common/process.rs"]
mod process;

use futures_util::StreamExt;
use process::{metric, Process};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite;

/// Long enough for any healthy upgrade here; an upgrade waiting behind `EMFILE` in the
/// kernel's accept queue takes longer. Only used to stop waiting, never asserted on:
/// the assertions below are on what the server reports and on recovery.
const PATIENCE: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `n` WebSocket connections at once; each ends admitted, refused (with its HTTP
/// status) or still waiting after PATIENCE.
async fn open_many(url: &str, n: usize) -> (Vec<Ws>, Vec<u16>, usize) {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let url = url.to_owned();
        tasks.spawn(async move {
            tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await
        });
    }
    let (mut open, mut refused, mut waiting) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(Ok((ws, _))) => open.push(ws),
            Ok(Err(tungstenite::Error::Http(r))) => refused.push(r.status().as_u16()),
            Ok(Err(_)) | Err(_) => waiting += 1,
        }
    }
    (open, refused, waiting)
}

/// Retries until an upgrade succeeds and the welcome arrives.
async fn connects_eventually(url: &str) {
    let give_up = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await
        {
            if let Ok(Some(Ok(m))) = tokio::time::timeout(PATIENCE, ws.next()).await {
                assert!(m.to_text().unwrap().contains("welcome"), "{m:?}");
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the server never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn by_default_connections_past_the_file_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    // 128 descriptors: the default connection limit (64 here) keeps a reserve below
    // that, so connections past it are answered instead of left in the kernel's queue.
    let mut server = Process::start(dir.path(), &["--max-connections-per-ip", "0"], Some(128));
    let url = format!("ws://{}/ws", server.addr);
    let (open, refused, _waiting) = open_many(&url, 100).await;
    assert!(open.len() <= 64, "{}", open.len());
    assert!(!open.is_empty());
    assert!(!refused.is_empty(), "some were refused");
    assert!(refused.iter().all(|&s| s == 503), "{refused:?}");
    assert!(server.alive());
    drop(open);
    connects_eventually(&url).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tether_connections_refused_total{reason=\"full\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A connection limit above the file limit, so accept itself runs out (EMFILE).
    let mut server = Process::start(
        dir.path(),
        &[
            "--max-connections",
            "100000",
            "--max-connections-per-ip",
            "0",
        ],
        Some(64),
    );
    let url = format!("ws://{}/ws", server.addr);
    let (open, _refused, waiting) = open_many(&url, 80).await;
    assert!(!open.is_empty());
    assert!(waiting > 0, "80 connections cannot fit in 64 descriptors");
    assert!(
        server.alive(),
        "running out of descriptors does not crash the server"
    );

    // Free the descriptors: the server accepts and serves again.
    drop(open);
    connects_eventually(&url).await;
    let metrics = server.metrics().await;
    assert!(
        metric(&metrics, "tether_accept_errors_total") > 0.0,
        "accept failed for want of descriptors and was retried: {metrics}"
    );
    assert!(server.alive());
}
