//! Turns a directory of scenario results into the Tether / peer / ratio table.
//!
//! Results vary by tens of percent from run to run on a shared 2-core machine, so each
//! figure is the median over the repetitions of one run, and the ratio compares
//! medians taken in that same run. The ratio is always "how many times better Tether
//! is": peer/Tether for figures where lower is better (latency, memory, CPU), so a
//! ratio above 1 favours Tether either way. Missing and duplicate deliveries are the
//! maximum over the repetitions, not the median: one lost delivery is a failure.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    /// Must be zero; aggregated with max.
    Zero,
}

struct Row {
    metric: &'static str,
    name: &'static str,
    better: Better,
    target: &'static str,
}

const fn row(
    metric: &'static str,
    name: &'static str,
    better: Better,
    target: &'static str,
) -> Row {
    Row {
        metric,
        name,
        better,
        target,
    }
}

use Better::*;

const FANOUT: &[Row] = &[
    row("/deliveries_per_sec", "deliveries/s", Higher, ">= 3x"),
    row("/latency_ms/p50", "latency p50 ms", Lower, ""),
    row(
        "/latency_ms/p99",
        "latency p99 ms",
        Lower,
        ">= 3x (p99 <= 1/3)",
    ),
    row("/latency_ms/p999", "latency p99.9 ms", Lower, ""),
    row("/latency_ms/max", "latency max ms", Lower, ""),
    row(
        "/server_cpu_us_per_delivery",
        "server CPU µs/delivery",
        Lower,
        "",
    ),
    row("/write_rate_achieved", "writes/s achieved", Higher, ""),
    row("/missing", "missing deliveries", Zero, "0"),
    row("/duplicates", "duplicate deliveries", Zero, "0"),
];

const IDLE: &[Row] = &[
    row("/connections", "connections held", Higher, "~19,000"),
    row(
        "/rss_per_conn_kib",
        "RSS KiB/connection (average)",
        Lower,
        "<= 8 KiB and >= 3x",
    ),
    row("/rss_slope_kib", "RSS KiB/connection (slope)", Lower, ""),
    row("/connections_per_sec", "connections opened/s", Higher, ""),
    row(
        "/close_cpu_us_per_conn",
        "server CPU µs/connection closed",
        Lower,
        "",
    ),
    row(
        "/projected_rss_mib_100k",
        "projected RSS MiB @100k",
        Lower,
        "",
    ),
    row("/projected_rss_mib_1m", "projected RSS MiB @1M", Lower, ""),
    row("/failed", "failed connections", Zero, "0"),
];

const REQRESP: &[Row] = &[
    row("/requests_per_sec", "requests/s", Higher, ""),
    row("/latency_ms/p50", "p50 ms (get+put)", Lower, ""),
    row("/latency_ms/p99", "p99 ms (get+put)", Lower, "<= 1 ms"),
    row("/get_ms/p99", "get p99 ms", Lower, ""),
    row("/put_ms/p99", "put p99 ms", Lower, ""),
    row("/errors", "errors", Zero, "0"),
];

const DURABLE: &[Row] = &[
    row(
        "/acked_writes_per_sec",
        "acknowledged writes/s",
        Higher,
        ">= 50,000",
    ),
    row("/ack_latency_ms/p50", "ack p50 ms", Lower, ""),
    row("/ack_latency_ms/p99", "ack p99 ms", Lower, ""),
    row("/server_cpu_us_per_write", "server CPU µs/write", Lower, ""),
    row("/errors", "errors", Zero, "0"),
];

fn rows(scenario: &str) -> &'static [Row] {
    match scenario {
        "fanout" => FANOUT,
        "idle" => IDLE,
        "reqresp" => REQRESP,
        "durable" => DURABLE,
        _ => &[],
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => {
            let s = format!("{:.0}", v);
            // Thousands separators make 6-digit rates readable.
            let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            format!("{sign}{out}")
        }
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Reads every `*.json` result in `dir`, prints the table, and writes `summary.md` and
/// `summary.json` beside them.
pub fn run(dir: &Path, peer: &str) -> Result<String, String> {
    let mut results: Vec<Value> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.extension().is_some_and(|e| e == "json") && !name.starts_with("summary") {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            results.push(v);
        }
    }
    // label -> server -> runs, labels in the order of first appearance by file name.
    let mut labels: BTreeMap<String, (String, BTreeMap<String, Vec<Value>>)> = BTreeMap::new();
    results.sort_by_key(|v| v["order"].as_u64().unwrap_or(0));
    let mut order = Vec::new();
    for v in results {
        let label = v["label"].as_str().unwrap_or("?").to_owned();
        let server = v["server"].as_str().unwrap_or("?").to_owned();
        let scenario = v["scenario"].as_str().unwrap_or("?").to_owned();
        if !labels.contains_key(&label) {
            order.push(label.clone());
        }
        labels
            .entry(label)
            .or_insert_with(|| (scenario, BTreeMap::new()))
            .1
            .entry(server)
            .or_default()
            .push(v);
    }
    let mut md = String::new();
    let mut summary = Vec::new();
    let _ = writeln!(
        md,
        "| scenario | figure | Tether | {peer} | ratio (x better) | target |\n| --- | --- | ---: | ---: | ---: | --- |"
    );
    for label in order {
        let (scenario, servers) = &labels[&label];
        let runs = |s: &str| servers.get(s).cloned().unwrap_or_default();
        let (tether, other) = (runs("tether"), runs(peer));
        for r in rows(scenario) {
            let values = |rs: &[Value]| -> Vec<f64> {
                rs.iter()
                    .filter_map(|v| v["metrics"].pointer(r.metric).and_then(Value::as_f64))
                    .collect()
            };
            let agg = |v: Vec<f64>| match r.better {
                Better::Zero => v.into_iter().reduce(f64::max),
                _ => median(v),
            };
            let (t, p) = (agg(values(&tether)), agg(values(&other)));
            let ratio = match (r.better, t, p) {
                (Better::Higher, Some(t), Some(p)) if p > 0.0 => Some(t / p),
                (Better::Lower, Some(t), Some(p)) if t > 0.0 => Some(p / t),
                _ => None,
            };
            let ratio_text = ratio
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {ratio_text} | {} |",
                r.name,
                fmt(t),
                fmt(p),
                r.target
            );
            summary.push(json!({
                "label": label, "figure": r.name, "metric": r.metric,
                "tether": t, peer: p, "ratio": ratio,
                "runs": {"tether": tether.len(), peer: other.len()},
            }));
        }
    }
    std::fs::write(dir.join("summary.md"), &md).map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&Value::Array(summary)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("summary.json"), text).map_err(|e| e.to_string())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formatting() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(fmt(Some(1234567.0)), "1,234,567");
        assert_eq!(fmt(Some(12.34)), "12.3");
        assert_eq!(fmt(Some(0.5)), "0.500");
    }

    #[test]
    fn table_from_results() {
        let dir = tempfile::tempdir().unwrap();
        for (server, order, dps, p99) in [
            ("tether", 1, 300.0, 1.0),
            ("node-ws", 2, 100.0, 6.0),
            ("tether", 3, 500.0, 2.0),
            ("node-ws", 4, 50.0, 3.0),
        ] {
            let v = json!({"label": "fanout-1k", "server": server, "order": order, "scenario": "fanout",
                "metrics": {"deliveries_per_sec": dps, "latency_ms": {"p99": p99}, "missing": 0}});
            std::fs::write(dir.path().join(format!("{order}.json")), v.to_string()).unwrap();
        }
        let md = run(dir.path(), "node-ws").unwrap();
        assert!(
            md.contains("| fanout-1k | deliveries/s | 400.0 | 75.0 | 5.33x | >= 3x |"),
            "{md}"
        );
        assert!(
            md.contains("| fanout-1k | latency p99 ms | 1.500 | 4.500 | 3.00x |"),
            "{md}"
        );
        assert!(dir.path().join("summary.json").exists());
    }
}
