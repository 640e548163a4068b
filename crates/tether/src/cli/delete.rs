//! `tether delete URL RESOURCE ID`: deletes a record through the HTTP API.

use super::http;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The server: http://HOST:PORT (ws:// and a bare HOST:PORT work too).
    pub url: String,
    pub resource: String,
    pub id: String,
    /// Only if the stored version is this (optimistic concurrency).
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub token: http::Token,
}

pub async fn run(args: DeleteArgs) -> ExitCode {
    http::finish(delete(args).await)
}

async fn delete(args: DeleteArgs) -> Result<(), String> {
    http::write_record(
        reqwest::Method::DELETE,
        &args.url,
        &args.resource,
        &args.id,
        || Ok(None),
        args.if_version,
        &args.token,
    )
    .await
}
