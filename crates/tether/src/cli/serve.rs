//! `tether serve`: runs the server until SIGINT or SIGTERM.
//!
//! Settings come from flags, `TETHER_*` environment variables and `--config FILE`, in
//! that order of precedence (the layering is in `cli/mod.rs` and `config/file.rs`).
//! SIGHUP reloads the auth file (`reload.rs`; docs/operations.md, "Signals"); without
//! one it is logged and ignored, so a stray hang-up never kills the server.

use super::logging::LogArgs;
use clap::Args;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tether::Config;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file whose keys are these flags' long names (`max_message_bytes =
    /// 2097152`); flags and TETHER_* variables override it. `tether config check FILE`
    /// validates one.
    #[arg(long = "config", value_name = "FILE", env = "TETHER_CONFIG")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub server: Config,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    // Before anything is announced: a supervisor may signal as soon as it reads the
    // "listening" line, and a signal that comes before its handler kills the process.
    let mut signals = Signals::install();
    if let Some(file) = &args.config_file {
        tracing::info!(config = %file.display(), "configuration file loaded");
    }
    let (http, ws) = match args.server.security.tls_cert {
        Some(_) => ("https", "wss"),
        None => ("http", "ws"),
    };
    let server = match tether::start(args.server).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {}", e.message);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.addr;
    // A closed stdout (a supervisor that stopped reading) must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "tether listening on {http}://{addr} (WebSocket: {ws}://{addr}/ws)"
    );
    let _ = writeln!(out, "data: {}", server.store_location);
    let _ = writeln!(out, "inspector: {http}://{addr}/");
    let _ = out.flush();
    drop(out);
    tracing::info!(%addr, store = %server.store_location, "serving");
    signals.until_shutdown(|| server.reload_auth()).await;
    tracing::info!("shutting down: closing connections");
    match server.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM stop the server. SIGHUP reloads the auth file (its default
/// action would end the process).
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on SIGINT or SIGTERM, calling `reload` on each SIGHUP meanwhile.
    async fn until_shutdown<R>(&mut self, reload: impl Fn() -> Result<R, String>) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = recv(&mut self.terminate) => return,
                _ = recv(&mut self.interrupt) => return,
                _ = recv(&mut self.hangup) => {
                    tracing::info!("SIGHUP received: reloading the auth file");
                    // The reloader logs the outcome of a real reload itself.
                    if let Err(e) = reload() {
                        tracing::warn!(error = %e, "SIGHUP: nothing reloaded");
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The next delivery of a signal; never, if its handler could not be installed.
#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
