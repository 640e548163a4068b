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
    let base = http::base_url(&args.url)?;
    let url = format!(
        "{base}/api/{}/{}",
        http::segment(&args.resource),
        http::segment(&args.id)
    );
    let mut request = http::client()?.delete(url);
    if let Some(version) = args.if_version {
        request = request.header("If-Match", version.to_string());
    }
    http::print_json(&http::send(args.token.apply(request)).await?);
    Ok(())
}
