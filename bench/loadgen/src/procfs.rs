//! What the kernel says about a process: resident memory and CPU time, from /proc.

/// Resident set size in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU seconds the process has used, its exited threads included.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the man page (utime, stime); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on; without libc it cannot be asked.
    Some((utime + stime) as f64 / 100.0)
}

/// CPU seconds used by a process between two points, for the server and the client.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    start: Option<f64>,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            start: cpu_secs(pid),
        }
    }

    pub fn own() -> CpuMeter {
        CpuMeter::start(std::process::id())
    }

    pub fn elapsed(&self) -> Option<f64> {
        Some(cpu_secs(self.pid)? - self.start?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(super::rss_kib(me).is_some_and(|k| k > 0));
        assert!(super::cpu_secs(me).is_some());
    }
}
