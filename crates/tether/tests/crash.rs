//! Durability: writes acknowledged before a `kill -9` are all there after a restart, and
//! the command line fails with one clear line on bad input.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tokio_tungstenite::tungstenite::Message;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// Starts `tether serve` on an ephemeral port and returns it with its address.
fn spawn(data: &std::path::Path) -> (Child, String) {
    let mut child = tether()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // Keep draining stdout so the server never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr)
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    // Send many writes without waiting; count the acknowledged ones, then kill.
    for i in 0..2000 {
        let m = json!({"req": i, "type": "create", "resource": "events", "id": format!("e{i}"), "data": {"i": i}});
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let frame = ws.next().await;
        let Some(Ok(Message::Text(t))) = frame else {
            panic!("stream ended: {frame:?}")
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "result" {
            acked.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(acked.len() >= 300);

    let (mut child, addr) = spawn(dir.path());
    let http = reqwest::Client::new();
    let all: Value = http
        .get(format!("http://{addr}/api/events?limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged write {id} survived");
    }
    // Positions are gap-free: the log head equals the number of records written.
    let health: Value = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["pos"].as_u64().unwrap(), stored.len() as u64);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_flags_and_bad_environments_fail_with_one_line() {
    let out = tether()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A port already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = tether()
        .args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot listen on"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A data directory that cannot be created (its parent is a file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = tether()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = tether().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data", "--store", "--bus"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut code = None;
    while let Ok(Some(frame)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await
    {
        if let Ok(Message::Close(Some(f))) = frame {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(
        code,
        Some(1001),
        "clients are told the server is going away"
    );
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
