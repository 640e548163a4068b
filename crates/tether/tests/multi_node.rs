//! Several nodes: three real `tether serve` processes on one PostgreSQL schema and one
//! NATS. Writes made on any node reach watchers on every node in change-log order, once
//! each, carried by the bus (not only by the hub's store polling); a node is killed and
//! its client resumes on another node with nothing missed and nothing doubled.
//!
//! Needs `TETHER_TEST_POSTGRES` and `TETHER_TEST_NATS`; without them it prints a notice
//! and passes without running. The schema is new per run and dropped afterwards.

mod common;

use common::Client;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

struct Env {
    postgres: String,
    nats: String,
}

fn env() -> Option<Env> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (get("TETHER_TEST_POSTGRES"), get("TETHER_TEST_NATS")) {
        (Some(postgres), Some(nats)) => Some(Env { postgres, nats }),
        _ => {
            eprintln!(
                "TETHER_TEST_POSTGRES and TETHER_TEST_NATS are not both set: skipping the multi-node test"
            );
            None
        }
    }
}

/// Runs one SQL batch from its own thread and runtime, so it works from `Drop`.
fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(conn);
            let out = client.batch_execute(&sql).await.map_err(|e| e.to_string());
            drop(client);
            let _ = task.await;
            out
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Drops the test's schema when the test ends, however it ends.
struct Schema {
    server: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Err(e) = admin(
            &self.server,
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A `tether serve` process, killed when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    /// Starts the process; call [`Node::ready`] to wait for its address.
    fn spawn(store: &str, bus: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
                "--bus",
                bus,
            ])
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether")
    }

    fn ready(mut child: Child, name: &str) -> Node {
        let stderr = child.stderr.take().expect("piped stderr");
        let label = name.to_owned();
        // Node logs go through the test's output capture: shown only if the test fails.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
            }
        });
        let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("read stdout");
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name} did not start: {line:?} (its log is above)"))
            .to_owned();
        Node { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no goodbye to anyone
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One write through the HTTP API of a node; returns its position.
async fn write(http: &reqwest::Client, node: &str, n: u64) -> u64 {
    // Every seventh write patches t1 (written first), so not every change is a create.
    let response = if n.is_multiple_of(7) {
        http.patch(format!("http://{node}/api/todos/t1"))
            .json(&json!({"patched_by": n}))
            .send()
            .await
    } else {
        http.post(format!("http://{node}/api/todos"))
            .json(&json!({"id": format!("t{n}"), "n": n}))
            .send()
            .await
    }
    .expect("the node answers");
    assert!(
        response.status().is_success(),
        "write {n} on {node}: {}",
        response.status()
    );
    let body: Value = response.json().await.expect("JSON");
    body["pos"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pos in {body}"))
}

/// Reads pushes of subscription `all` until position `until`; returns their positions.
async fn pushes_until(client: &mut Client, until: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < until {
        let m = client.recv().await;
        if m["sub"] == "all"
            && ["PUT", "PATCH", "DELETE"].contains(&m["type"].as_str().unwrap_or(""))
        {
            seen.push(m["pos"].as_u64().expect("a push has pos"));
        }
    }
    seen
}

async fn watch_all(node: &Node) -> (Client, Value) {
    let (mut client, welcome) = Client::canonical(&format!("ws://{}/ws", node.addr)).await;
    let snapshot = client
        .request(json!({"type": "subscribe", "sub": "all", "resource": "todos"}))
        .await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (client, welcome)
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_log_and_resume_on_another_node() {
    let Some(env) = env() else {
        return;
    };
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let schema = Schema {
        server: env.postgres.clone(),
        name: format!("tt_{secs}_{}_0", std::process::id()),
    };
    let sep = if env.postgres.contains('?') { '&' } else { '?' };
    let store = format!("{}{sep}schema={}", env.postgres, schema.name);

    // All three start at once: the first start creates the schema, under a lock the
    // others wait on.
    let children: Vec<Child> = (0..3).map(|_| Node::spawn(&store, &env.nats)).collect();
    let mut nodes: Vec<Node> = children
        .into_iter()
        .enumerate()
        .map(|(i, child)| Node::ready(child, &format!("node{}", i + 1)))
        .collect();

    let mut watchers = Vec::new();
    for node in &nodes {
        watchers.push(watch_all(node).await);
    }
    let epochs: Vec<&Value> = watchers.iter().map(|(_, w)| &w["epoch"]).collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one store, one epoch: {epochs:?}"
    );
    let epoch = epochs[0].clone();
    let http = reqwest::Client::new();

    // The bus carries changes: a write on node 1 reaches node 2's watcher far sooner
    // than the hub's 500 ms store check would (a median over several writes, so one
    // slow moment on a busy machine does not fail the test).
    let mut delays = Vec::new();
    for n in 1..=7 {
        let started = Instant::now();
        let pos = write(&http, &nodes[0].addr, n).await;
        assert_eq!(pushes_until(&mut watchers[1].0, pos).await, [pos]);
        delays.push(started.elapsed());
    }
    for i in [0, 2] {
        assert_eq!(pushes_until(&mut watchers[i].0, 7).await, range(1, 7));
    }
    delays.sort();
    assert!(
        delays[3] < Duration::from_millis(150),
        "changes cross nodes by polling, not the bus: {delays:?}"
    );

    // Writes on all three nodes at once: every watcher sees every position once, in
    // order, whichever node committed it.
    let mut writers = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        let (http, addr) = (http.clone(), node.addr.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10u64 {
                write(&http, &addr, 8 + i * 3 + k as u64).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for (client, _) in &mut watchers {
        assert_eq!(pushes_until(client, 37).await, range(8, 37));
    }

    // Kill node 3 while writes keep coming on nodes 1 and 2.
    let writer = {
        let (http, a, b) = (http.clone(), nodes[0].addr.clone(), nodes[1].addr.clone());
        tokio::spawn(async move {
            for n in 38..=77u64 {
                write(&http, if n.is_multiple_of(2) { &a } else { &b }, n).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (mut orphan, welcome) = watchers.pop().expect("three watchers");
    let before = pushes_until(&mut orphan, 45).await;
    assert_eq!(before, range(38, *before.last().unwrap()));
    let mut last = *before.last().unwrap();
    nodes[2].kill();
    // Whatever was already on the wire before the socket died counts as seen.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), orphan.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(pos) = m["pos"].as_u64().filter(|_| m["sub"] == "all") {
                    assert_eq!(pos, last + 1, "in order before the kill");
                    last = pos;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the socket stayed open after its node was killed"),
        }
    }

    // Its client reconnects to node 1 and resumes from the last position it saw.
    let (mut resumed, _) = Client::canonical(&format!("ws://{}/ws", nodes[0].addr)).await;
    resumed
        .send(json!({
            "req": "r1",
            "type": "resume",
            "session": welcome["session"],
            "subs": [{"sub": "all", "resource": "todos", "since": {"epoch": epoch, "pos": last}}],
        }))
        .await;
    writer.await.unwrap();
    let mut got = Vec::new();
    let mut marker = None;
    let mut result = None;
    while got.last().copied().unwrap_or(last) < 77 || result.is_none() {
        let m = resumed.recv().await;
        match m["type"].as_str() {
            Some("resumed") => marker = Some(m),
            Some("result") if m["req"] == "r1" => result = Some(m),
            Some("PUT" | "PATCH" | "DELETE") if m["sub"] == "all" => {
                assert!(marker.is_some(), "pushes follow the resumed marker: {m}");
                got.push(m["pos"].as_u64().unwrap());
            }
            Some("snapshot") => panic!("expected an exact resume, got a resync: {m}"),
            _ => {}
        }
    }
    let marker = marker.unwrap();
    assert_eq!(marker["from"].as_u64(), Some(last), "{marker}");
    assert_eq!(got, range(last + 1, 77), "nothing missed, nothing doubled");
    assert_eq!(result.unwrap()["subs"], json!(["all"]));

    // The survivors saw everything too.
    for (client, _) in &mut watchers {
        assert_eq!(pushes_until(client, 77).await, range(38, 77));
    }
    drop(nodes);
    drop(schema);
}

/// Joins `room` as `user` and returns the members the reply names.
async fn join(client: &mut Client, room: &str, user: &str) -> Vec<String> {
    let reply = client
        .request(json!({"type": "join", "room": room, "user": user}))
        .await;
    assert_eq!(reply["type"], "result", "{reply}");
    serde_json::from_value(reply["members"].clone()).expect("members")
}

/// Waits for a presence event about `user` in `room`; returns (event, members).
async fn presence_of(client: &mut Client, room: &str, user: &str) -> (String, Value) {
    loop {
        let m = client.recv_type("presence").await;
        if m["room"] == room && m["user"] == user {
            return (
                m["event"].as_str().unwrap_or("").to_owned(),
                m["members"].clone(),
            );
        }
    }
}

/// Seed 003's active users and relays across nodes: users on different nodes see each
/// other join and leave, relays cross nodes, and a killed node's users leave everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_relays_cross_nodes() {
    let Some(env) = env() else {
        return;
    };
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let schema = Schema {
        server: env.postgres.clone(),
        name: format!("tt_{secs}_{}_1", std::process::id()),
    };
    let sep = if env.postgres.contains('?') { '&' } else { '?' };
    let store = format!("{}{sep}schema={}", env.postgres, schema.name);
    let children: Vec<Child> = (0..2).map(|_| Node::spawn(&store, &env.nats)).collect();
    let mut nodes: Vec<Node> = children
        .into_iter()
        .enumerate()
        .map(|(i, child)| Node::ready(child, &format!("node{}", i + 1)))
        .collect();
    let url = |n: &Node| format!("ws://{}/ws", n.addr);
    let (mut alice, _) = Client::canonical(&url(&nodes[0])).await;
    let (mut bob, _) = Client::canonical(&url(&nodes[1])).await;

    let at_alice = join(&mut alice, "doc-1", "alice").await;
    let at_bob = join(&mut bob, "doc-1", "bob").await;
    // Whichever node learnt of the other user first, each side ends up told.
    if !at_alice.contains(&"bob".to_owned()) {
        let (event, members) = presence_of(&mut alice, "doc-1", "bob").await;
        assert_eq!((event.as_str(), members), ("join", json!(["alice", "bob"])));
    }
    if !at_bob.contains(&"alice".to_owned()) {
        let (event, members) = presence_of(&mut bob, "doc-1", "alice").await;
        assert_eq!((event.as_str(), members), ("join", json!(["alice", "bob"])));
    }

    // A relay from node 1 reaches the room's member on node 2.
    let reply = alice
        .request(json!({"type": "relay", "room": "doc-1", "data": {"cursor": 7}}))
        .await;
    assert_eq!(reply["type"], "result", "{reply}");
    let relayed = bob.recv_type("relay").await;
    assert_eq!(
        (&relayed["room"], &relayed["from"], &relayed["data"]),
        (&json!("doc-1"), &json!("alice"), &json!({"cursor": 7}))
    );

    // A clean disconnect on node 2 is a leave on node 1.
    drop(bob);
    let (event, members) = presence_of(&mut alice, "doc-1", "bob").await;
    assert_eq!((event.as_str(), members), ("leave", json!(["alice"])));

    // A node that dies takes its users with it, once its heartbeats stop.
    let (mut carol, _) = Client::canonical(&url(&nodes[1])).await;
    join(&mut carol, "doc-1", "carol").await;
    let (event, _) = presence_of(&mut alice, "doc-1", "carol").await;
    assert_eq!(event, "join");
    nodes[1].kill();
    let started = Instant::now();
    let (event, members) = presence_of(&mut alice, "doc-1", "carol").await;
    assert_eq!((event.as_str(), members), ("leave", json!(["alice"])));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(nodes);
    drop(schema);
}
