//! Server configuration: what `tether serve` accepts, with the brief's defaults.

pub mod file;

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

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
            max_message_bytes: 1 << 20,
            max_frame_bytes: 16 << 20,
            outbox_max_bytes: 4 << 20,
            log_retention: 1_000_000,
        }
    }
}
