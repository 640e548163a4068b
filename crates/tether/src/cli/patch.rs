//! `tether patch URL RESOURCE ID [JSON]`: applies an RFC 7396 merge patch to a record
//! (`null` removes a field). The JSON comes from the argument, or stdin.

use super::http;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// The server: http://HOST:PORT (ws:// and a bare HOST:PORT work too).
    pub url: String,
    pub resource: String,
    pub id: String,
    /// The merge patch, a JSON object; read from stdin when absent or `-`.
    pub json: Option<String>,
    /// Only if the stored version is this (optimistic concurrency).
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
    #[command(flatten)]
    pub token: http::Token,
}

pub async fn run(args: PatchArgs) -> ExitCode {
    http::finish(patch(args).await)
}

async fn patch(args: PatchArgs) -> Result<(), String> {
    http::write_record(
        reqwest::Method::PATCH,
        &args.url,
        &args.resource,
        &args.id,
        || http::object_arg(args.json.as_deref()).map(Some),
        args.if_version,
        &args.token,
    )
    .await
}
