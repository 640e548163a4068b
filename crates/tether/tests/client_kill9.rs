//! The Rust client against the real binary killed with SIGKILL: writes acknowledged
//! before the kill survive, a write cut off says so, and a watcher that rides out the
//! kill (and changes made while it was cut off) sees every change exactly once, in
//! order.

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tether_client::{Backoff, Client, ClientError, ConnectionEvent, Event, Target};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

/// `tether serve` on `addr`, once it says it is listening.
async fn serve(addr: &str, data: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--listen", addr, "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .unwrap_or_default();
    assert!(first.starts_with("tether listening"), "{first}");
    // Keep draining stdout so the server never writes into a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// SIGSTOP: the process holds its sockets but reads nothing.
fn freeze(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-STOP", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn kill_9(child: &mut Child) {
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        ..Backoff::default()
    }
}

#[tokio::test]
async fn a_client_rides_out_kill_9_and_sees_every_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let url = format!("ws://{addr}/ws");
    let mut server = serve(&addr, &data).await;

    let watcher = Client::builder(&url)
        .reconnect(fast())
        .local_store(true)
        .connect()
        .await
        .unwrap();
    let mut news = watcher.events();
    let mut sub = watcher.subscribe(Target::resource("events")).await.unwrap();
    let writer = Client::builder(&url)
        .reconnect(fast())
        .request_timeout(WAIT)
        .connect()
        .await
        .unwrap();

    // Many writes in flight; the server dies once a hundred are acknowledged.
    let mut writes: FuturesUnordered<_> = (0..300)
        .map(|i| {
            let writer = writer.clone();
            async move {
                let id = format!("e{i:03}");
                (
                    id.clone(),
                    writer.create("events", Some(&id), json!({"i": i})).await,
                )
            }
        })
        .collect();
    let (mut acked, mut cut_off) = (Vec::new(), 0);
    let mut frozen = Vec::new();
    while let Some((id, result)) = writes.next().await {
        match result {
            Ok(_) => {
                acked.push(id);
                if acked.len() == 100 {
                    // The server pipelines writes, so the rest of the 300 may all be
                    // answered already. Freeze it and send writes it can never answer:
                    // those are surely in flight when it dies.
                    freeze(&server);
                    for i in 300..310 {
                        let writer = writer.clone();
                        frozen.push(tokio::spawn(async move {
                            writer
                                .create("events", Some(&format!("e{i:03}")), json!({"i": i}))
                                .await
                        }));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    kill_9(&mut server).await;
                }
            }
            // In flight when the server died: it may or may not have been committed.
            Err(ClientError::ConnectionLost { .. }) => cut_off += 1,
            Err(e) => panic!("{id}: {e}"),
        }
        if acked.len() + cut_off == 300 {
            break;
        }
    }
    for write in frozen {
        match write.await.unwrap() {
            Err(ClientError::ConnectionLost { .. }) => cut_off += 1,
            other => panic!("a write sent to a frozen server: {other:?}"),
        }
    }
    assert!(
        acked.len() >= 100 && cut_off >= 10,
        "{} acked, {cut_off} cut off",
        acked.len()
    );

    // While the watcher is cut off, another server on the same data takes changes.
    let other_addr = free_addr();
    let mut other = serve(&other_addr, &data).await;
    let http = reqwest::Client::new();
    for i in 0..30 {
        let response = http
            .put(format!("http://{other_addr}/api/events/m{i:02}"))
            .json(&json!({"missed": i}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    kill_9(&mut other).await;

    // Back on the first address; both clients reconnect by themselves.
    let mut server = serve(&addr, &data).await;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ConnectionEvent::Connected { resumed: true, .. }) = news.recv().await {
                return;
            }
        }
    })
    .await
    .expect("the watcher resumes");
    for i in 0..20 {
        writer
            .upsert("events", &format!("l{i:02}"), json!({"live": i}))
            .await
            .unwrap();
    }

    let health: Value = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = health["pos"].as_u64().unwrap();

    // Every position from 1 to the head, once, in order; nothing else.
    let mut seen = Vec::new();
    let mut resumed = 0;
    tokio::time::timeout(WAIT, async {
        while seen.last() != Some(&head) {
            match sub.next().await.unwrap().unwrap() {
                Event::Snapshot { pos: 0, .. } => {}
                Event::Resumed { .. } => resumed += 1,
                Event::Put { pos, .. } => seen.push(pos),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("saw {} of {head} changes", seen.len()));
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    assert_eq!(resumed, 1, "one reconnect, one resume");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing after the head"
    );

    // Acknowledged writes survived, and the local store matches the server.
    let stored: Vec<Value> = http
        .get(format!("http://{addr}/api/events?limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: BTreeSet<String> = stored
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} survived the kill");
    }
    let local: BTreeSet<String> = watcher
        .store()
        .unwrap()
        .all("events")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(local, stored);
    assert_eq!(stored.len() as u64, head, "one change per record");
    kill_9(&mut server).await;
}
