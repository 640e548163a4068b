//! The operator's command line, run as the real binary: config files (checked, layered
//! under environment variables and flags), JSON logs, SIGHUP, and the tools `get`,
//! `put`, `patch`, `delete`, `import` and `watch` against a real server.

mod common;

use common::TestServer;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tether::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(15);

fn tether() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    // The tests set what they mean to; nothing leaks in from the environment.
    for var in [
        "TETHER_LISTEN",
        "TETHER_DATA",
        "TETHER_CONFIG",
        "TETHER_LOG",
        "TETHER_LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, tether().args(args).stdin(Stdio::null()).output())
        .await
        .expect("the command finishes")
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Starts `tether serve` with `args` and returns it with its first stdout lines (the
/// address line and the data line).
async fn serve(args: &[&str], env: &[(&str, &str)]) -> (Child, String, String) {
    let mut command = tether();
    command
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the server prints its address")
            .unwrap()
            .unwrap_or_default()
    };
    let listening = next().await;
    let data = next().await;
    (child, listening, data)
}

#[tokio::test]
async fn config_check_reports_every_problem_with_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "# tether.toml\nlisten = \"nowhere\"\nmax_mesage_bytes = 5\nmax_frame_bytes = \"big\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", bad.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    let file = bad.display();
    assert!(
        lines[0].starts_with(&format!(
            "error: {file}:2:10: key `listen`: invalid value 'nowhere'"
        )),
        "{err}"
    );
    assert_eq!(
        lines[1],
        format!("error: {file}:3:1: key `max_mesage_bytes`: unknown key; did you mean `max_message_bytes`?")
    );
    assert!(
        lines[2].starts_with(&format!(
            "error: {file}:4:19: key `max_frame_bytes`: invalid value 'big'"
        )),
        "{err}"
    );

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(
        &syntax,
        "listen = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", syntax.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with(&format!("error: {}:2:", syntax.display())),
        "{}",
        stderr(&out)
    );

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:0\"\nmax-message-bytes = 4096\nlog_format = \"json\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", good.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "{}: ok (3 settings: listen, max-message-bytes, log_format)",
            good.display()
        )
    );

    let out = run(&["config", "check", "/nonexistent/tether.toml"]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    let out = run(&["config", "keys"]).await;
    assert!(
        stdout(&out).contains("max_message_bytes"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("TETHER_MAX_MESSAGE_BYTES"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn serve_layers_flags_over_environment_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env, from_flag) = (
        dir.path().join("file"),
        dir.path().join("env"),
        dir.path().join("flag"),
    );
    let config = dir.path().join("tether.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nlog_format = \"json\"\n",
            from_file.display().to_string()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (mut child, listening, data) = serve(&["--config", config], &[]).await;
    assert!(
        listening.starts_with("tether listening on http://127.0.0.1:"),
        "{listening}"
    );
    assert!(data.contains(&from_file.display().to_string()), "{data}");
    // The file asked for JSON logs: the first log line is a JSON object.
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, logs.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let log: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(log["level"], "INFO", "{log}");
    assert!(
        log["timestamp"].is_string() && log["message"].is_string(),
        "{log}"
    );
    child.kill().await.unwrap();

    // The environment overrides the file ...
    let env_data = from_env.display().to_string();
    let (mut child, _, data) = serve(&["--config", config], &[("TETHER_DATA", &env_data)]).await;
    assert!(data.contains(&env_data), "{data}");
    child.kill().await.unwrap();

    // ... and a flag overrides both; TETHER_CONFIG names the file too.
    let (mut child, _, data) = serve(
        &["--data", from_flag.to_str().unwrap()],
        &[("TETHER_DATA", &env_data), ("TETHER_CONFIG", config)],
    )
    .await;
    assert!(data.contains(&from_flag.display().to_string()), "{data}");
    child.kill().await.unwrap();

    // A bad file stops serve before it starts, one line per problem.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 7070\nport = 1\n").unwrap();
    let out = run(&["serve", "--config", bad.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with(&format!("error: {}:", bad.display()))),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = run(&["serve", "--log", "no=such=level", "--listen", "127.0.0.1:0"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).starts_with("error: --log"), "{}", stderr(&out));
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, listening, _) = serve(
        &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()],
        &[],
    )
    .await;
    let addr = listening
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(WAIT, async {
        while let Some(line) = logs.next_line().await.unwrap() {
            if line.contains("SIGHUP: nothing reloaded") {
                return line;
            }
        }
        panic!("the server stopped logging");
    })
    .await
    .unwrap();
    assert!(said.contains("WARN"), "{said}");
    assert!(said.contains("no --auth-config file"), "{said}");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn get_put_patch_delete_over_the_http_api() {
    let s = TestServer::start().await;
    let url = s.http("");
    let url = url.as_str();

    let put = json_out(
        &run(&[
            "put",
            url,
            "todos",
            "milk",
            r#"{"title": "milk", "done": false}"#,
        ])
        .await,
    );
    assert_eq!(
        (put["id"].as_str(), put["version"].as_u64()),
        (Some("milk"), Some(1))
    );

    // The data may come on stdin.
    let mut child = tether()
        .args(["put", url, "todos", "eggs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(br#"{"title": "eggs", "done": true}"#)
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(json_out(&out)["data"]["title"], "eggs");

    let patched = json_out(
        &run(&[
            "patch",
            url,
            "todos",
            "milk",
            r#"{"done": true}"#,
            "--if-version",
            "1",
        ])
        .await,
    );
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["data"], json!({"title": "milk", "done": true}));

    let one = json_out(&run(&["get", url, "todos", "milk"]).await);
    assert_eq!(one["version"], 2);
    let done = json_out(
        &run(&[
            "get",
            &s.url("/ws"),
            "todos",
            "--where",
            "done=true",
            "--order",
            "-title",
            "--limit",
            "5",
        ])
        .await,
    );
    let titles: Vec<&str> = done
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["milk", "eggs"]);

    // Refusals are one line with the server's code and the HTTP status.
    let stale = run(&["delete", url, "todos", "milk", "--if-version", "1"]).await;
    assert!(!stale.status.success());
    assert_eq!(
        stderr(&stale).trim(),
        "error: version_conflict: todos/milk is at version 2, not 1 (HTTP 412)"
    );
    let deleted = json_out(&run(&["delete", url, "todos", "milk"]).await);
    assert_eq!(deleted["deleted"], true);
    let missing = run(&["get", url, "todos", "milk"]).await;
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(
        err.starts_with("error: not_found:") && err.trim().ends_with("(HTTP 404)"),
        "{err}"
    );

    for (args, says) in [
        (
            vec!["put", url, "todos", "x", "[1]"],
            "error: the record data must be a JSON object",
        ),
        (
            vec!["put", url, "todos", "x", "{"],
            "error: the record data is not valid JSON",
        ),
        (
            vec!["get", "ftp://x", "todos"],
            "error: ftp://x: expected an http:// URL",
        ),
        (
            vec!["get", url, "todos", "a", "--limit", "3"],
            "error: --where, --order and --limit apply to lists",
        ),
    ] {
        let out = run(&args).await;
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = run(&["get", &nobody, "todos"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is `tether serve` running there?"), "{err}");
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn import_loads_json_lines_and_reports_bad_ones() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.jsonl");
    let mut lines: Vec<String> = (0..500)
        .map(|i| json!({"id": format!("i{i:03}"), "n": i}).to_string())
        .collect();
    lines.insert(3, "{not json".into());
    lines.insert(10, "".into());
    lines.insert(20, "[1, 2]".into());
    write_lines(&file, &lines);

    let out = run(&[
        "import",
        &s.url("/ws"),
        file.to_str().unwrap(),
        "--resource",
        "items",
        "--concurrency",
        "16",
    ])
    .await;
    assert!(!out.status.success(), "two lines were bad");
    let err = stderr(&out);
    assert!(err.contains("line 4: not valid JSON"), "{err}");
    assert!(err.contains("line 21: not a JSON object"), "{err}");
    assert!(err.contains("imported 500 records from"), "{err}");
    assert!(err.contains("; 2 failed"), "{err}");

    let http = reqwest::Client::new();
    let all: Value = http
        .get(s.http("/api/items?limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 500);
    assert_eq!(all[7]["data"], json!({"n": 7}));

    // Records in the shape `tether get` prints; importing again is an upsert.
    let records = dir.path().join("records.jsonl");
    write_lines(
        &records,
        &[
            json!({"resource": "items", "id": "i007", "version": 1, "data": {"n": 70}}).to_string(),
            json!({"resource": "other", "id": "o1", "data": {"x": true}}).to_string(),
        ],
    );
    let out = run(&["import", &s.http(""), records.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let seven: Value = http
        .get(s.http("/api/items/i007"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (seven["version"].as_u64(), seven["data"]["n"].as_u64()),
        (Some(2), Some(70))
    );

    let out = run(&["import", &s.http(""), "/nonexistent.jsonl"]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}

#[tokio::test]
async fn watch_prints_changes_and_rides_out_a_restart() {
    let s = TestServer::start().await;
    let (addr, data) = (s.server.addr, s.dir.path().join("data"));
    let http = reqwest::Client::new();
    let api = |base: String, path: &str| format!("{base}{path}");
    http.put(s.http("/api/todos/a"))
        .json(&json!({"done": false}))
        .send()
        .await
        .unwrap();

    let mut child = tether()
        .args([
            "watch",
            &format!("{addr}"),
            "todos",
            "--where",
            "done=false",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(WAIT, out.next_line())
            .await
            .expect("a line")
            .unwrap()
            .expect("open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let snapshot = next().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["records"][0]["id"], "a");

    http.put(s.http("/api/todos/b"))
        .json(&json!({"done": false}))
        .send()
        .await
        .unwrap();
    let put = next().await;
    assert_eq!(
        (
            put["type"].as_str(),
            put["id"].as_str(),
            put["pos"].as_u64()
        ),
        (Some("PUT"), Some("b"), Some(2))
    );

    // The server goes away; a change is made while the watcher is cut off (through a
    // second server on the same data); the server comes back on the same port.
    let other = tether::start(Config::new("127.0.0.1:0".parse().unwrap(), data.clone()))
        .await
        .unwrap();
    s.server.stop().await.unwrap();
    http.patch(api(format!("http://{}", other.addr), "/api/todos/a"))
        .json(&json!({"done": true}))
        .send()
        .await
        .unwrap();
    other.stop().await.unwrap();
    let back = tether::start(Config::new(addr, data)).await.unwrap();

    let left = next().await;
    assert_eq!(
        (
            left["type"].as_str(),
            left["id"].as_str(),
            left["pos"].as_u64()
        ),
        (Some("DELETE"), Some("a"), Some(3))
    );
    http.put(api(format!("http://{addr}"), "/api/todos/c"))
        .json(&json!({"done": false}))
        .send()
        .await
        .unwrap();
    let live = next().await;
    assert_eq!(
        (live["id"].as_str(), live["pos"].as_u64()),
        (Some("c"), Some(4))
    );

    child.kill().await.unwrap();
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(err.contains("connection lost (1001)"), "{err}");
    assert!(err.contains("reconnected; resumed"), "{err}");
    back.stop().await.unwrap();
}
