//! `tether put URL RESOURCE ID [JSON]`: creates or replaces a record (HTTP `PUT`, an
//! upsert). The JSON comes from the argument, or stdin when it is absent or `-`.

use super::http;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The server: http://HOST:PORT (ws:// and a bare HOST:PORT work too).
    pub url: String,
    pub resource: String,
    pub id: String,
    /// The record's data, a JSON object; read from stdin when absent or `-`.
    pub json: Option<String>,
    /// Only if the stored version is this (optimistic concurrency; 0: must not exist).
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub token: http::Token,
}

pub async fn run(args: PutArgs) -> ExitCode {
    http::finish(put(args).await)
}

async fn put(args: PutArgs) -> Result<(), String> {
    http::write_record(
        reqwest::Method::PUT,
        &args.url,
        &args.resource,
        &args.id,
        || http::object_arg(args.json.as_deref()).map(Some),
        args.if_version,
        &args.token,
    )
    .await
}
