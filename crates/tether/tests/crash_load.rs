//! Crash safety under load: SIGKILL in the middle of a heavy write load from many
//! clients (WebSocket connections pipelining writes, HTTP clients), then a restart.
//! Every acknowledged write is there, at least at its acknowledged version, and the
//! change log is gap-free with versions rising by one per record.

#[path = "common/process.rs"]
mod process;

use futures_util::{SinkExt, StreamExt};
use process::Process;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tether_core::{Position, Query, RecordId, ResourceName};
use tether_store::{Replay, SqliteStore, Store};
use tokio_tungstenite::tungstenite::Message;

const WS_CLIENTS: usize = 12;
const HTTP_CLIENTS: usize = 4;
/// Kill once this many writes are acknowledged, with every client still writing.
const ACKED_BEFORE_KILL: usize = 2_000;

/// An acknowledged write: the record, the version the server reported, and for the
/// records only one client writes, the body it wrote.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    version: u64,
    data: Option<Value>,
}

type Acks = Arc<Mutex<Vec<Ack>>>;

fn acked(acks: &Acks) -> usize {
    acks.lock().unwrap().len()
}

/// Pipelines writes as fast as the connection takes them: creates of its own records
/// and upserts of records every client shares. Runs until the connection dies.
async fn ws_client(addr: String, k: usize, acks: Acks) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let sending = async move {
        for i in 0u64.. {
            let m = if i % 4 == 0 {
                json!({"req": i, "type": "upsert", "resource": "load", "id": format!("shared-{}", i % 10), "data": {"by": k, "i": i}})
            } else {
                json!({"req": i, "type": "create", "resource": "load", "id": format!("w{k}-{i}"), "data": {"k": k, "i": i}})
            };
            if sink
                .send(Message::Text(m.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let receiving = async move {
        while let Some(Ok(frame)) = stream.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if v["type"] != "result" {
                continue;
            }
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            let data = (!id.starts_with("shared-")).then(|| v["record"]["data"].clone());
            acks.lock().unwrap().push(Ack {
                id,
                version: v["version"].as_u64().unwrap_or(0),
                data,
            });
        }
    };
    // Whichever ends first (the server died), the other is dropped.
    tokio::select! {
        _ = sending => {}
        _ = receiving => {}
    }
}

/// Writes over the HTTP API, one request at a time, until the server dies.
async fn http_client(addr: String, k: usize, acks: Acks) {
    let http = reqwest::Client::new();
    for i in 0u64.. {
        let id = format!("h{k}-{i}");
        let body = json!({"k": k, "i": i, "via": "http"});
        let Ok(r) = http
            .put(format!("http://{addr}/api/load/{id}"))
            .body(body.to_string())
            .send()
            .await
        else {
            return;
        };
        if !r.status().is_success() {
            continue;
        }
        let Ok(v) = r.json::<Value>().await else {
            return;
        };
        acks.lock().unwrap().push(Ack {
            id,
            version: v["version"].as_u64().unwrap_or(0),
            data: Some(body),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_under_load_and_the_log_has_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(dir.path(), &["--max-messages-per-sec", "0"], None);
    let acks: Acks = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..WS_CLIENTS {
        clients.spawn(ws_client(server.addr.clone(), k, acks.clone()));
    }
    for k in 0..HTTP_CLIENTS {
        clients.spawn(http_client(server.addr.clone(), k, acks.clone()));
    }
    while acked(&acks) < ACKED_BEFORE_KILL {
        assert!(server.alive());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL, with every client mid-write
    server.child.wait().unwrap();
    // Every client notices the dead server and stops.
    while clients.join_next().await.is_some() {}
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() >= ACKED_BEFORE_KILL);

    // Restart on the same data: it serves, at the head of the log it had.
    let restarted = Process::start(dir.path(), &[], None);
    let health: Value = reqwest::get(format!("http://{}/health", restarted.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Read the store itself (WAL mode allows a second reader).
    let store = SqliteStore::open(dir.path().join("tether.db"))
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    assert_eq!(health["pos"].as_u64(), Some(head.0), "{health}");
    assert!(
        head.0 >= acks.len() as u64,
        "no acknowledged write lost its place"
    );

    // The log: positions 1..=head without a gap; each record's versions rise by one.
    let Replay::Changes(log) = store.changes_since(Position(0), usize::MAX).await.unwrap() else {
        panic!("the log was compacted");
    };
    assert_eq!(log.len() as u64, head.0);
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, change) in log.iter().enumerate() {
        assert_eq!(change.position.0, i as u64 + 1, "gap-free");
        let last = versions.entry(change.id.to_string()).or_insert(0);
        assert_eq!(
            change.version,
            *last + 1,
            "versions rise by one: {change:?}"
        );
        *last = change.version;
    }

    // Every acknowledged write is there, at least at the version acknowledged.
    let resource = ResourceName::parse("load").unwrap();
    let records = store.query(&resource, &Query::default()).await.unwrap();
    let stored: HashMap<String, (u64, Value)> = records
        .into_iter()
        .map(|r| (r.id.to_string(), (r.version, Value::Object(r.data))))
        .collect();
    for ack in &acks {
        let Some((version, data)) = stored.get(&ack.id) else {
            panic!("acknowledged write to {} is missing", ack.id);
        };
        assert!(
            *version >= ack.version,
            "{} at {version} < acked {}",
            ack.id,
            ack.version
        );
        if let Some(expected) = &ack.data {
            assert_eq!(data, expected, "{}", ack.id);
        }
    }
    // And the store answers single reads the same way.
    let one = &acks[acks.len() / 2];
    let got = store
        .get(&resource, &RecordId::parse(&one.id).unwrap())
        .await
        .unwrap();
    assert!(got.is_some_and(|r| r.version >= one.version));
    drop(restarted);
}

/// Pipelines creates until the server closes the connection; returns the close code
/// (None: the connection ended without a close frame).
async fn ws_writer_until_closed(addr: String, k: usize, acks: Acks) -> Option<u16> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .ok()?;
    let (mut sink, mut stream) = ws.split();
    let sending = async move {
        for i in 0u64.. {
            let m = json!({"req": i, "type": "create", "resource": "load", "id": format!("t{k}-{i}"), "data": {"k": k, "i": i}});
            if sink
                .send(Message::Text(m.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        // Stopped sending (the server is closing): wait for the receiving side.
        std::future::pending::<()>().await;
    };
    let receiving = async move {
        while let Some(Ok(frame)) = stream.next().await {
            match frame {
                Message::Close(f) => return f.map(|f| u16::from(f.code)),
                Message::Text(text) => {
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if v["type"] == "result" {
                        acks.lock().unwrap().push(Ack {
                            id: v["id"].as_str().unwrap_or_default().to_owned(),
                            version: v["version"].as_u64().unwrap_or(0),
                            data: Some(v["record"]["data"].clone()),
                        });
                    }
                }
                _ => {}
            }
        }
        None
    };
    tokio::select! {
        _ = sending => None,
        code = receiving => code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_writes_in_flight_closes_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(dir.path(), &["--max-messages-per-sec", "0"], None);
    let acks: Acks = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..8 {
        clients.spawn(ws_writer_until_closed(server.addr.clone(), k, acks.clone()));
    }
    while acked(&acks) < 500 {
        assert!(server.alive());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // Every client, though it was still sending, gets the close frame: 1001.
    while let Some(code) = clients.join_next().await {
        assert_eq!(
            code.unwrap(),
            Some(1001),
            "clients are told the server is going away"
        );
    }
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    // Every write answered before the close is in the store.
    let acks = acks.lock().unwrap().clone();
    let store = SqliteStore::open(dir.path().join("tether.db"))
        .await
        .unwrap();
    let resource = ResourceName::parse("load").unwrap();
    for ack in &acks {
        let got = store
            .get(&resource, &RecordId::parse(&ack.id).unwrap())
            .await
            .unwrap();
        let Some(record) = got else {
            panic!("acknowledged write to {} is missing", ack.id);
        };
        assert_eq!(Some(Value::Object(record.data)), ack.data, "{}", ack.id);
    }
    assert_eq!(
        store.head().await.unwrap().0,
        acks.len() as u64,
        "no write committed unanswered"
    );
}
