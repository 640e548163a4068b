//! The `tether` binary as a child process, for tests that need what an in-process
//! server cannot give: its own open-file limit, its own memory figures, SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `tether serve`; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub addr: String,
}

impl Process {
    /// Starts `tether serve --listen 127.0.0.1:0 --data DIR ARGS...`, optionally under
    /// `ulimit -n NOFILE` (set by a shell, the portable way), and waits for it to
    /// print its address.
    pub fn start(data: &Path, args: &[&str], nofile: Option<u32>) -> Process {
        let tether = env!("CARGO_BIN_EXE_tether");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(tether);
                c
            }
            None => Command::new(tether),
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("tether starts");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep draining both pipes so the server never blocks on a full one.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let mut stderr = child.stderr.take().unwrap();
        // TETHER_TEST_LOG=1 shows the server's log, for debugging a failing test.
        let show = std::env::var_os("TETHER_TEST_LOG").is_some();
        std::thread::spawn(move || {
            if show {
                std::io::copy(&mut stderr, &mut std::io::stderr())
            } else {
                std::io::copy(&mut stderr, &mut std::io::sink())
            }
        });
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Process { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`: the peak).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled counter or gauge in Prometheus text, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
