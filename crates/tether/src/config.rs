//! Server configuration: what `tether serve` accepts, with the brief's defaults.

pub mod file;

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, default_value = "127.0.0.1:7070", env = "TETHER_LISTEN")]
    pub listen: SocketAddr,

    /// Directory for the embedded SQLite store (created if missing). Ignored with --store.
    #[arg(long, default_value = "./tether-data", env = "TETHER_DATA")]
    pub data: PathBuf,

    /// Store URL: sqlite://PATH (a database file) or postgres://... Overrides --data.
    #[arg(long, env = "TETHER_STORE")]
    pub store: Option<String>,

    /// Bus URL for several nodes on one store (nats://...). Default: in-process.
    #[arg(long, env = "TETHER_BUS")]
    pub bus: Option<String>,

    /// A live stream relayed to a topic (repeatable):
    /// amqp://USER:PASS@HOST:PORT/VHOST#EXCHANGE/ROUTING.KEY=TOPIC. See docs/deploy.md.
    #[arg(
        long = "source",
        value_name = "SPEC",
        env = "TETHER_SOURCES",
        value_delimiter = ' '
    )]
    pub sources: Vec<String>,

    /// A resource served from a MongoDB collection (repeatable):
    /// RESOURCE=mongodb://HOST:PORT/?OPTIONS#DATABASE/COLLECTION. See docs/deploy.md.
    #[arg(
        long = "mongo-resource",
        value_name = "SPEC",
        env = "TETHER_MONGO_RESOURCES",
        value_delimiter = ' '
    )]
    pub mongo_resources: Vec<String>,

    /// Where the application owning a MongoDB-backed resource announces its changes
    /// (repeatable): RESOURCE=amqp://USER:PASS@HOST:PORT/VHOST#EXCHANGE/ROUTING.KEY.
    #[arg(
        long = "mongo-changes",
        value_name = "SPEC",
        env = "TETHER_MONGO_CHANGES",
        value_delimiter = ' '
    )]
    pub mongo_changes: Vec<String>,

    /// Largest text message answered normally; larger ones get a `too_large` error.
    #[arg(long, default_value_t = 1 << 20, env = "TETHER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: usize,

    /// Largest WebSocket frame or message at all; past it the connection closes (1009).
    #[arg(long, default_value_t = 16 << 20, env = "TETHER_MAX_FRAME_BYTES")]
    pub max_frame_bytes: usize,

    /// Bytes queued for one slow client before it is disconnected (4008) to resume.
    #[arg(long, default_value_t = 4 << 20, env = "TETHER_OUTBOX_MAX_BYTES")]
    pub outbox_max_bytes: usize,

    /// Changes kept in the log for resume; a client further behind resyncs.
    #[arg(long, default_value_t = 1_000_000, env = "TETHER_LOG_RETENTION")]
    pub log_retention: u64,

    // ---- connection limits (docs/security.md explains each default) ----------------
    /// Most connections open at once (WebSocket and HTTP); past it new ones get HTTP
    /// 503. Default: the open-file limit less a reserve (a quarter of it, between 64
    /// and 1,024).
    #[arg(long, env = "TETHER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most connections from one client address; past it new ones get HTTP 429.
    /// 0 turns the limit off (behind a proxy every client has the proxy's address).
    #[arg(long, default_value_t = 1_000, env = "TETHER_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: usize,

    /// Messages per second one connection may send, on average; past it messages are
    /// answered with a `limit_exceeded` error. 0 turns the limit off.
    #[arg(long, default_value_t = 1_000, env = "TETHER_MAX_MESSAGES_PER_SEC")]
    pub max_messages_per_sec: u32,

    /// Messages a connection may send at once above the rate. One that keeps sending
    /// this many more while refused is closed with 4029.
    #[arg(long, default_value_t = 2_000, env = "TETHER_MESSAGE_BURST")]
    pub message_burst: u32,

    /// Subscriptions one connection may hold; the next subscribe gets `limit_exceeded`.
    #[arg(long, default_value_t = 1_000, env = "TETHER_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: usize,

    /// Time a new connection has to send its request head (the WebSocket upgrade),
    /// and an idle HTTP keep-alive connection its next one (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "TETHER_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Duration,

    /// How often the server pings each WebSocket client.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "TETHER_PING_INTERVAL")]
    pub ping_interval: Duration,

    /// A WebSocket client that sends nothing for this long, not even the pong to a
    /// ping, is closed with 4000.
    #[arg(long, default_value = "90s", value_parser = parse_duration, env = "TETHER_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,

    /// Mount the conformance echo endpoints `/echo` and `/echo/session` (for the
    /// Autobahn test suite; never needed in production).
    #[arg(long, env = "TETHER_ECHO_ENDPOINT")]
    pub echo_endpoint: bool,

    /// Auth, access rules, browser origins and TLS (all off by default).
    #[command(flatten)]
    pub security: crate::security::SecurityConfig,
}

/// Checks the value of a flag whose values hold URLs with passwords. clap would echo
/// a refused value whole, so these are plain strings to clap and checked here instead:
/// at start, and by `tether config check`. `key` is the config key.
pub fn check_spec(key: &str, spec: &str) -> Result<(), String> {
    let checked = match key {
        "source" => crate::sources::parse_source(spec).map(|_| ()),
        "mongo_resource" => tether_store::MongoResource::parse(spec).map(|_| ()),
        "mongo_changes" => crate::sources::amqp::AmqpSource::parse_changes(spec).map(|_| ()),
        _ => Ok(()),
    };
    checked.map_err(|e| e.message)
}

/// Parses `90s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

impl Config {
    /// The defaults with a different address and data directory (for tests).
    pub fn new(listen: SocketAddr, data: PathBuf) -> Config {
        Config {
            listen,
            data,
            store: None,
            bus: None,
            sources: Vec::new(),
            mongo_resources: Vec::new(),
            mongo_changes: Vec::new(),
            max_message_bytes: 1 << 20,
            max_frame_bytes: 16 << 20,
            outbox_max_bytes: 4 << 20,
            log_retention: 1_000_000,
            max_connections: None,
            max_connections_per_ip: 1_000,
            max_messages_per_sec: 1_000,
            message_burst: 2_000,
            max_subscriptions: 1_000,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            echo_endpoint: false,
            security: crate::security::SecurityConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_or_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "ten", "5 parsecs", "-1s", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
