//! `tether watch URL RESOURCE [ID]`: prints live changes as JSON lines, a small
//! websocat for Tether.
//!
//! It subscribes through `tether-client`, so it rides out server restarts: it
//! reconnects, resumes from the last change it printed, and prints exactly what was
//! missed. Data goes to stdout (one JSON object per line, in the canonical protocol's
//! push shapes, ready for `jq`); connection news goes to stderr.

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::ExitCode;
use tether_client::{Client, ConnectionEvent, Event, Query, Target};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The server: ws://HOST:PORT/ws, http://HOST:PORT or HOST:PORT.
    pub url: String,
    pub resource: String,
    /// Watch only this record.
    pub id: Option<String>,
    /// Only records whose FIELD equals VALUE (VALUE is JSON if it parses, else text);
    /// repeatable. Records entering and leaving the match are printed as PUT and DELETE.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub filter: Vec<String>,
    /// Do not print the initial snapshot; only changes (and a resync snapshot, which
    /// replaces what was printed before).
    #[arg(long)]
    pub no_snapshot: bool,
    #[command(flatten)]
    pub token: super::http::Token,
}

pub async fn run(args: WatchArgs) -> ExitCode {
    match watch(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn target(args: &WatchArgs) -> Result<Target, String> {
    if let Some(id) = &args.id {
        if !args.filter.is_empty() {
            return Err("--where applies to a resource; leave out the id".into());
        }
        return Ok(Target::record(&args.resource, id));
    }
    let mut query = Query::new();
    for f in &args.filter {
        let (field, value) = f
            .split_once('=')
            .ok_or_else(|| format!("--where {f:?}: expected FIELD=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        query = query.filter(field, value);
    }
    Ok(Target::query(&args.resource, query))
}

async fn watch(args: WatchArgs) -> Result<(), String> {
    let target = target(&args)?;
    let mut builder = Client::builder(&args.url);
    if let Some(token) = &args.token.token {
        builder = builder.token(token);
    }
    let client = builder.connect().await.map_err(|e| e.to_string())?;
    let news = tokio::spawn(report(client.events()));
    let mut sub = client
        .subscribe(target)
        .await
        .map_err(|e| format!("cannot watch {}: {e}", args.resource))?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        tokio::select! {
            event = sub.next() => match event {
                Some(Ok(event)) => {
                    let Some(line) = line(&event, args.no_snapshot) else { continue };
                    let mut out = std::io::stdout().lock();
                    // A closed stdout (`| head`) is the reader saying it has enough.
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err("the connection closed".into()),
            },
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    news.abort();
    client.close().await;
    result
}

/// The stdout line for an event, in the canonical protocol's shapes.
fn line(event: &Event, no_snapshot: bool) -> Option<String> {
    let v = match event {
        // A resync is printed regardless: without it the output would be wrong.
        Event::Snapshot { resync: None, .. } if no_snapshot => return None,
        Event::Snapshot {
            pos,
            records,
            resync,
        } => {
            let mut v = json!({"type": "snapshot", "pos": pos, "records": records});
            if let Some(reason) = resync {
                v["resync"] = reason.clone().into();
            }
            v
        }
        Event::Resumed { .. } | Event::Message { .. } => return None,
        Event::Put { pos, record } => json!({
            "type": "PUT", "pos": pos, "resource": record.resource, "id": record.id,
            "version": record.version, "data": record.data,
        }),
        Event::Patch {
            pos,
            resource,
            id,
            version,
            patch,
            ..
        } => json!({
            "type": "PATCH", "pos": pos, "resource": resource, "id": id,
            "version": version, "patch": patch,
        }),
        Event::Delete {
            pos,
            resource,
            id,
            version,
        } => {
            json!({"type": "DELETE", "pos": pos, "resource": resource, "id": id, "version": version})
        }
    };
    Some(v.to_string())
}

/// Connection news, for the person watching.
async fn report(mut events: tokio::sync::broadcast::Receiver<ConnectionEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        match event {
            ConnectionEvent::Disconnected { code, reason } => {
                let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
                eprintln!("tether watch: connection lost{code}: {reason}; reconnecting");
            }
            ConnectionEvent::Connected { resumed: true, .. } => {
                eprintln!("tether watch: reconnected; resumed where it left off");
            }
            ConnectionEvent::Resynced { reason, .. } => {
                eprintln!(
                    "tether watch: could not resume exactly ({reason}); a fresh snapshot follows"
                );
            }
            ConnectionEvent::Gap { expected, received } => {
                eprintln!("tether watch: message {expected} was lost (got {received}); resuming");
            }
            ConnectionEvent::Error(e) => eprintln!("tether watch: {e}"),
            _ => {}
        }
    }
}
