//! Logs: `tracing` to stderr, human-readable by default, one JSON object per line with
//! `--log-format json` for log pipelines.
//!
//! JSON lines flatten the event's fields to the top level and carry the current span
//! (`http` with `request_id`, `method`, `path`), so a log line can be joined to the
//! request that caused it. docs/operations.md lists the fields.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people: one aligned line per event.
    Text,
    /// For machines: one JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "TETHER_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to log: a level (error, warn, info, debug, trace) or tracing directives
    /// such as `info,tether_engine=debug`.
    #[arg(
        long = "log",
        value_name = "FILTER",
        default_value = "info",
        env = "TETHER_LOG"
    )]
    pub log: String,
}

pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?}: {e} (try info, debug or tether=debug)"))?;
    // Colours only for a person at a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}
