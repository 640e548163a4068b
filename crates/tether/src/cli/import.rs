//! `tether import URL FILE.jsonl`: bulk-loads records, one JSON object per line, with
//! a progress bar.
//!
//! Writes go through the HTTP API with a bounded number in flight. HTTP rather than one
//! WebSocket because the server answers a connection's requests one at a time, in
//! order, while concurrent HTTP requests run side by side and the server commits them
//! in groups (one fsync for many); the bound keeps memory flat whatever the file's
//! size. Lines with an id are upserts (`PUT`), so running an import again is safe, and
//! one cut off by a network error is sent again; lines without an id are creates
//! (`POST`) and are not retried, since that could duplicate them. Bad lines are
//! reported with their line number and skipped.

use super::http;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Failures printed one by one; past this only the count.
const SHOWN_FAILURES: usize = 20;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The server: http://HOST:PORT (ws:// and a bare HOST:PORT work too).
    pub url: String,
    /// JSON Lines: with --resource, each line is a record's data (its `id` field, if
    /// any, is the id); without, each line is `{"resource", "id", "data"}` (what `tether
    /// get` prints).
    pub file: PathBuf,
    /// The resource every line goes to.
    #[arg(long)]
    pub resource: Option<String>,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    #[command(flatten)]
    pub token: http::Token,
}

pub async fn run(args: ImportArgs) -> ExitCode {
    match import(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a line asks for.
#[derive(Debug, PartialEq)]
struct Line {
    resource: String,
    /// `Some`: an upsert of this id; `None`: a create with an id the server makes.
    id: Option<String>,
    data: Map<String, Value>,
}

fn parse_line(line: &str, resource: Option<&str>) -> Result<Line, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    let (resource, id, data) = match resource {
        Some(resource) => {
            let id = object.remove("id");
            (resource.to_owned(), id, object)
        }
        None => {
            let resource = match object.remove("resource") {
                Some(Value::String(r)) => r,
                _ => {
                    return Err(
                        "no \"resource\" string (give --resource, or lines like {\"resource\":\"todos\",\"id\":\"a\",\"data\":{...}})"
                            .into(),
                    )
                }
            };
            let data = match object.remove("data") {
                Some(Value::Object(d)) => d,
                _ => return Err("no \"data\" object".into()),
            };
            (resource, object.remove("id"), data)
        }
    };
    let id = match id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(other) => return Err(format!("the id must be a string or a number, not {other}")),
    };
    Ok(Line { resource, id, data })
}

async fn send(
    client: &reqwest::Client,
    token: &http::Token,
    base: &str,
    line: Line,
) -> Result<(), String> {
    let resource = http::segment(&line.resource);
    let body = Value::Object(line.data);
    let Some(id) = line.id else {
        let request = token.apply(client.post(format!("{base}/api/{resource}")).json(&body));
        return http::send(request).await.map(|_| ());
    };
    let url = format!("{base}/api/{resource}/{}", http::segment(&id));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match token.apply(client.put(&url).json(&body)).send().await {
            // An upsert is idempotent: a request lost on the way may go again.
            Err(e) if attempt < 4 && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => return Err(e.to_string()),
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let e = &body["error"];
                return Err(match (e["code"].as_str(), e["message"].as_str()) {
                    (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                    _ => format!("HTTP {status}"),
                });
            }
        }
    }
}

async fn import(args: ImportArgs) -> Result<bool, String> {
    let base = http::base_url(&args.url)?;
    let file =
        std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(usize::from(args.concurrency))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    // One cheap request first, so a wrong URL is one clear error, not one per line.
    http::send(args.token.apply(client.get(format!("{base}/health")))).await?;

    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut written, mut failed) = (0u64, 0u64);
    let mut read_error = None;
    // In a block: the stream borrows `read_error` until it is dropped.
    {
        let lines = std::io::BufReader::new(file).lines().enumerate();
        let items = lines.map_while(|(n, line)| match line {
            Ok(line) => Some((n + 1, line)),
            Err(e) => {
                read_error = Some(format!("{}: line {}: {e}", args.file.display(), n + 1));
                None
            }
        });
        let results = futures_util::stream::iter(items)
            .map(|(n, line)| {
                let (client, token, base) = (&client, &args.token, &base);
                let resource = args.resource.as_deref();
                async move {
                    let bytes = line.len() as u64 + 1;
                    if line.trim().is_empty() {
                        return (n, bytes, None);
                    }
                    let outcome = match parse_line(&line, resource) {
                        Ok(parsed) => send(client, token, base, parsed).await,
                        Err(e) => Err(e),
                    };
                    (n, bytes, Some(outcome))
                }
            })
            .buffer_unordered(usize::from(args.concurrency));
        tokio::pin!(results);
        while let Some((n, bytes, outcome)) = results.next().await {
            bar.inc(bytes);
            match outcome {
                None => {}
                Some(Ok(())) => written += 1,
                Some(Err(e)) => {
                    failed += 1;
                    if failed as usize <= SHOWN_FAILURES {
                        // `suspend` prints whether or not the bar is drawn (it is
                        // hidden when stderr is not a terminal).
                        bar.suspend(|| eprintln!("line {n}: {e}"));
                    }
                }
            }
            if (written + failed) % 256 == 0 {
                bar.set_message(format!("{written} written, {failed} failed"));
            }
        }
    }
    bar.finish_and_clear();
    if let Some(e) = read_error {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        written as f64 / elapsed
    } else {
        0.0
    };
    eprintln!(
        "imported {written} record{} from {} in {elapsed:.1}s ({rate:.0}/s); {failed} failed",
        if written == 1 { "" } else { "s" },
        args.file.display()
    );
    if failed as usize > SHOWN_FAILURES {
        eprintln!(
            "({} more failures not shown)",
            failed as usize - SHOWN_FAILURES
        );
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_writes() {
        let l = parse_line(r#"{"id": "a", "title": "milk"}"#, Some("todos")).unwrap();
        assert_eq!(l.id.as_deref(), Some("a"));
        assert!(!l.data.contains_key("id"));
        let l = parse_line(r#"{"title": "milk"}"#, Some("todos")).unwrap();
        assert_eq!(l.id, None);
        let l = parse_line(
            r#"{"resource": "todos", "id": 7, "version": 3, "data": {"t": 1}}"#,
            None,
        )
        .unwrap();
        assert_eq!((l.resource.as_str(), l.id.as_deref()), ("todos", Some("7")));
        assert!(parse_line("[1]", Some("x")).unwrap_err().contains("object"));
        assert!(parse_line("{", Some("x")).unwrap_err().contains("JSON"));
        assert!(parse_line(r#"{"data": {}}"#, None)
            .unwrap_err()
            .contains("resource"));
        assert!(parse_line(r#"{"id": true}"#, Some("x"))
            .unwrap_err()
            .contains("id"));
    }
}
