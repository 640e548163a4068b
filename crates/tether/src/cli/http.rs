//! What the HTTP tools (`get`, `put`, `patch`, `delete`) share: the server's base URL
//! from whatever form the user typed, one request with its error turned into one line,
//! and JSON bodies from an argument or stdin.

use clap::Args;
use reqwest::{Client, RequestBuilder};
use serde_json::Value;
use std::io::Read as _;
use std::time::Duration;

/// The caller's bearer token, for a server with auth on (docs/security.md).
#[derive(Debug, Clone, Args)]
pub struct Token {
    /// Bearer token sent with every request. Prefer the environment variable: a flag
    /// shows in the process list.
    #[arg(
        long,
        env = "TETHER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl Token {
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// A write to one record (`put`, `patch`, `delete`): `method` on
/// `/api/<resource>/<id>` with an optional JSON body and `If-Match: <version>`; prints
/// the server's answer. The body is read only once the URL is known to be good, so a
/// mistyped URL is reported without waiting on stdin.
pub async fn write_record(
    method: reqwest::Method,
    url: &str,
    resource: &str,
    id: &str,
    body: impl FnOnce() -> Result<Option<Value>, String>,
    if_version: Option<u64>,
    token: &Token,
) -> Result<(), String> {
    let base = base_url(url)?;
    let body = body()?;
    let url = format!("{base}/api/{}/{}", segment(resource), segment(id));
    let mut request = client()?.request(method, url);
    if let Some(body) = &body {
        request = request.json(body);
    }
    if let Some(version) = if_version {
        request = request.header("If-Match", version.to_string());
    }
    print_json(&send(token.apply(request)).await?);
    Ok(())
}

/// `http://host:port` from `http://host:port[/...]`, `ws://host:port/ws` or `host:port`.
pub fn base_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some(("http" | "ws", rest)) => ("http", rest),
        Some(("https" | "wss", _)) => {
            return Err(format!(
                "{url}: this tool speaks plain http://; reach a TLS server through a local port or proxy"
            ))
        }
        Some((other, _)) => return Err(format!("{url}: expected an http:// URL, not {other}://")),
        None => ("http", url),
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url}: the URL has no host"));
    }
    Ok(format!("{scheme}://{host}"))
}

pub fn client() -> Result<Client, String> {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A path segment: names and ids are URL-safe by the protocol's rules, but a typo must
/// not turn into another route.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends the request; a non-2xx answer becomes `code: message (HTTP status)`.
pub async fn send(request: RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| {
        let mut message = e.to_string();
        if let Some(url) = e.url() {
            message = format!("{url}: {}", without_url(&message));
        }
        if e.is_connect() {
            message.push_str(" (is `tether serve` running there?)");
        }
        message
    })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    Err(match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {}: {body}", status.as_u16()),
    })
}

fn without_url(message: &str) -> &str {
    // reqwest says "error sending request for url (...)"; the URL is printed first.
    message
        .split_once("): ")
        .map(|(_, rest)| rest)
        .unwrap_or(message)
}

/// The JSON object given as an argument, or read from stdin when absent or `-`.
pub fn object_arg(arg: Option<&str>) -> Result<Value, String> {
    let text = match arg {
        Some(text) if text != "-" => text.to_owned(),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading JSON from stdin: {e}"))?;
            text
        }
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(o)) => Ok(Value::Object(o)),
        Ok(_) => Err("the record data must be a JSON object, like '{\"title\":\"milk\"}'".into()),
        Err(e) => Err(format!("the record data is not valid JSON: {e}")),
    }
}

pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    println!("{text}");
}

/// Runs a tool's body: prints its error as one line and sets the exit status.
pub fn finish(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(base_url("ws://h:1/ws").unwrap(), "http://h:1");
        assert_eq!(base_url("h:1/").unwrap(), "http://h:1");
        assert!(base_url("https://h").unwrap_err().contains("plain http"));
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn segments_cannot_escape_their_route() {
        assert_eq!(segment("a-b.c_d:e@f~g"), "a-b.c_d:e@f~g");
        assert_eq!(segment("../x y?z"), "..%2Fx%20y%3Fz");
    }
}
