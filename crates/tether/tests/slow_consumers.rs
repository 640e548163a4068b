//! 1,000 connections, of which 100 never read: the other 900 receive every change in
//! order, the 100 are cut off as slow consumers (4008) instead of queuing without
//! bound, and the server's peak memory stays within what the outbox bound allows.
//!
//! The server runs as its own process so its memory can be read from /proc. The
//! assertions are on correctness and a generous memory bound, never on timing.

mod common;
#[path = "common/process.rs"]
mod process;

use common::Client;
use futures_util::StreamExt;
use process::{metric, Process};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const READERS: usize = 900;
const SLOW: usize = 100;
/// Small changes everyone watches.
const FEED: usize = 200;
/// Large changes only the slow connections watch: far more than kernel socket
/// buffers hold (at most 4 MiB each way here), so their outboxes must overflow.
const BULK: usize = 96;
const BULK_BYTES: usize = 64 * 1024;
const OUTBOX: usize = 128 * 1024;
const WAIT: Duration = Duration::from_secs(120);

/// Connects and subscribes to each resource; a small receive buffer for the ones that
/// will not read, so the server's writes to them block early.
async fn subscriber(addr: &str, resources: &[&str], small_buffer: bool) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    if small_buffer {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), MaybeTlsStream::Plain(stream))
            .await
            .expect("admitted");
    let mut c = Client { ws, last_msg: 0 };
    assert_eq!(c.recv().await["type"], "welcome");
    for resource in resources {
        let snap = c
            .request(json!({"type": "subscribe", "sub": resource, "resource": resource}))
            .await;
        assert_eq!(snap["type"], "snapshot", "{snap}");
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_a_hundred_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = OUTBOX.to_string();
    let server = Process::start(
        dir.path(),
        &[
            "--outbox-max-bytes",
            &outbox,
            "--max-connections-per-ip",
            "0",
            "--max-messages-per-sec",
            "0",
        ],
        None,
    );
    let addr = server.addr.clone();

    // Connect everyone, a hundred at a time.
    let mut readers = Vec::new();
    let mut slow = Vec::new();
    for batch in 0..(READERS + SLOW) / 100 {
        let mut set = JoinSet::new();
        for i in 0..100 {
            let addr = addr.clone();
            let is_slow = (batch * 100 + i) % 10 == 0;
            set.spawn(async move {
                if is_slow {
                    (true, subscriber(&addr, &["feed", "bulk"], true).await)
                } else {
                    (false, subscriber(&addr, &["feed"], false).await)
                }
            });
        }
        while let Some(done) = set.join_next().await {
            match done.unwrap() {
                (true, c) => slow.push(c),
                (false, c) => readers.push(c),
            }
        }
    }
    assert_eq!((readers.len(), slow.len()), (READERS, SLOW));
    let baseline_kib = server.status_kib("VmRSS");

    // The readers read everything, checking order and message numbers.
    let mut reading = JoinSet::new();
    for mut c in readers {
        reading.spawn(async move {
            let mut next = 0;
            while next < FEED {
                let m = c.recv().await;
                if m["type"] == "PUT" && m["sub"] == "feed" {
                    assert_eq!(m["id"], format!("f{next}"), "in order, none missing: {m}");
                    next += 1;
                }
            }
            c
        });
    }

    // One writer, feed and bulk changes interleaved. It waits for each result: its
    // results carry the 64 KiB records, and a writer that did not read them would be
    // a slow consumer itself.
    let mut writer = subscriber(&addr, &[], false).await;
    let payload = "x".repeat(BULK_BYTES);
    for i in 0..FEED.max(BULK) {
        if i < FEED {
            let r = writer
                .request(json!({"type": "upsert", "resource": "feed", "id": format!("f{i}"), "data": {"i": i}}))
                .await;
            assert_eq!(r["type"], "result", "every write is acknowledged: {r}");
        }
        if i < BULK {
            let r = writer
                .request(json!({"type": "upsert", "resource": "bulk", "id": format!("b{i}"), "data": {"blob": payload}}))
                .await;
            assert_eq!(r["type"], "result", "every write is acknowledged: {r}");
        }
    }

    // Every reader got every change, in order.
    let mut readers = Vec::new();
    let all_read = async {
        while let Some(done) = reading.join_next().await {
            readers.push(done.expect("a reader saw every change in order"));
        }
    };
    tokio::time::timeout(WAIT, all_read)
        .await
        .expect("the readers receive everything");
    assert_eq!(readers.len(), READERS);

    // Memory stayed bounded: at most two outboxes' worth per slow connection (the
    // queue, and the batch its writer is blocked on) over the baseline, plus slack
    // for allocator and buffers. Without the bound the slow ones alone would hold
    // 100 x 6 MiB.
    let peak_kib = server.status_kib("VmHWM");
    let bound_kib = baseline_kib + (SLOW * 2 * OUTBOX / 1024) as u64 + 96 * 1024;
    eprintln!("server RSS: {baseline_kib} KiB with 1,000 connections, peak {peak_kib} KiB, bound {bound_kib} KiB");
    assert!(
        peak_kib <= bound_kib,
        "server peak RSS {peak_kib} KiB > bound {bound_kib} KiB (baseline {baseline_kib} KiB)"
    );

    // The slow ones were cut off: their streams end (with 4008 when the close frame
    // fits), after far less than everything.
    for mut c in slow {
        let mut received = 0usize;
        let code = loop {
            match tokio::time::timeout(WAIT, c.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(m))) => received += m.len(),
                Ok(Some(Err(_)) | None) => break None,
                Err(_) => panic!("a slow consumer was never cut off"),
            }
        };
        assert!(matches!(code, None | Some(4008)), "{code:?}");
        assert!(received < BULK * BULK_BYTES, "cut before the end");
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, "tether_slow_consumer_disconnects_total"),
        SLOW as f64,
        "{metrics}"
    );

    // The readers are still connected and served.
    for c in readers.iter_mut().step_by(9) {
        let r = c.request(json!({"type": "ping"})).await;
        assert_eq!(r["type"], "result");
    }
}
