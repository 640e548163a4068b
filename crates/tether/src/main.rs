//! The `tether` binary: parses the command line and runs the server. Everything
//! testable lives in the library.

use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::process::ExitCode;
use tether::Config;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Tether: a real-time data server. Clients read, query, watch and write records over WebSocket and HTTP; every committed change reaches every client holding that data, in order."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded SQLite in ./tether-data unless told otherwise).
    Serve(Config),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(config) => runtime.block_on(serve(config)),
    }
}

async fn serve(config: Config) -> ExitCode {
    let server = match tether::start(config).await {
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
        "tether listening on http://{addr} (WebSocket: ws://{addr}/ws)"
    );
    let _ = writeln!(out, "data: {}", server.store_location);
    let _ = writeln!(out, "inspector: http://{addr}/");
    let _ = out.flush();
    drop(out);
    tracing::info!(%addr, store = %server.store_location, "serving");
    shutdown_signal().await;
    tracing::info!("shutting down: closing connections");
    match server.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
