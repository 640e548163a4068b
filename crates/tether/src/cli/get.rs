//! `tether get URL RESOURCE [ID]`: a record, or a resource's records (filtered,
//! ordered, limited), as JSON from the HTTP API.

use super::http;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The server: http://HOST:PORT (ws:// and a bare HOST:PORT work too).
    pub url: String,
    pub resource: String,
    /// The record's id; without it, the resource's records.
    pub id: Option<String>,
    /// Only records whose FIELD equals VALUE (VALUE is JSON if it parses, else text);
    /// repeatable. Lists only.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub filter: Vec<String>,
    /// Order by a field, `-field` for descending. Lists only.
    #[arg(long, allow_hyphen_values = true)]
    pub order: Option<String>,
    /// At most this many records (1-10000). Lists only.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub token: http::Token,
}

pub async fn run(args: GetArgs) -> ExitCode {
    http::finish(get(args).await)
}

async fn get(args: GetArgs) -> Result<(), String> {
    let base = http::base_url(&args.url)?;
    let client = http::client()?;
    let resource = http::segment(&args.resource);
    let request = match &args.id {
        Some(id) => {
            if !args.filter.is_empty() || args.order.is_some() || args.limit.is_some() {
                return Err("--where, --order and --limit apply to lists; leave out the id".into());
            }
            client.get(format!("{base}/api/{resource}/{}", http::segment(id)))
        }
        None => {
            let mut query: Vec<(String, String)> = Vec::new();
            for f in &args.filter {
                let (field, value) = f
                    .split_once('=')
                    .ok_or_else(|| format!("--where {f:?}: expected FIELD=VALUE"))?;
                if matches!(field, "order" | "limit") {
                    return Err(format!("--where {field}=...: use --{field} instead"));
                }
                query.push((field.to_owned(), value.to_owned()));
            }
            if let Some(order) = &args.order {
                query.push(("order".into(), order.clone()));
            }
            if let Some(limit) = args.limit {
                query.push(("limit".into(), limit.to_string()));
            }
            client.get(format!("{base}/api/{resource}")).query(&query)
        }
    };
    http::print_json(&http::send(args.token.apply(request)).await?);
    Ok(())
}
