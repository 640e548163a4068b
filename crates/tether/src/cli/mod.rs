//! The `tether` command line: one file per subcommand.
//!
//! `serve` runs the server; the rest are the tools an operator reaches for: `config
//! check` validates a config file, `watch` prints live changes (over the canonical
//! protocol, through `tether-client`), `get`/`put`/`patch`/`delete` use the HTTP API,
//! and `import` bulk-loads a JSON Lines file. Every failure is one clear line on
//! stderr and a non-zero exit, never a panic.

mod config;
mod delete;
mod get;
mod http;
mod import;
mod logging;
mod patch;
mod put;
mod serve;
mod watch;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;
use tether::config::file::ConfigFile;

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
    // Boxed: the server's settings dwarf every other command's arguments.
    Serve(Box<serve::ServeArgs>),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print live changes to a resource (or one record) as JSON lines.
    Watch(watch::WatchArgs),
    /// Print a record, or a resource's records, from the HTTP API.
    Get(get::GetArgs),
    /// Create or replace a record through the HTTP API.
    Put(put::PutArgs),
    /// Merge-patch a record through the HTTP API (RFC 7396: null removes a field).
    Patch(patch::PatchArgs),
    /// Delete a record through the HTTP API.
    Delete(delete::DeleteArgs),
    /// Bulk-load records from a JSON Lines file, with a progress bar.
    Import(import::ImportArgs),
}

pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Command::Serve(args) = &cli.command {
        if let Err(e) = logging::init(args.log.log_format, &args.log.log) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    } else {
        // The tools talk on stdout and stderr themselves; logs only for trouble.
        let filter = std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into());
        if let Err(e) = logging::init(logging::LogFormat::Text, &filter) {
            eprintln!("error: TETHER_LOG: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Config(command) => config::run(command),
            Command::Watch(args) => watch::run(args).await,
            Command::Get(args) => get::run(args).await,
            Command::Put(args) => put::run(args).await,
            Command::Patch(args) => patch::run(args).await,
            Command::Delete(args) => delete::run(args).await,
            Command::Import(args) => import::run(args).await,
        }
    })
}

/// Parses the command line. With `serve --config FILE` (or `TETHER_CONFIG`), the
/// file's settings become the serve flags' defaults first, so flags and environment
/// variables still override them.
fn parse() -> Result<Cli, ExitCode> {
    let command = Cli::command();
    let matches = command
        .clone()
        .try_get_matches()
        .unwrap_or_else(|e| e.exit());
    let config_file = matches
        .subcommand_matches("serve")
        .and_then(|m| m.get_one::<std::path::PathBuf>("config_file"))
        .cloned();
    let matches = match config_file {
        None => matches,
        Some(path) => {
            let file = ConfigFile::read(&path).map_err(|p| config::report(&p))?;
            let serve = command
                .find_subcommand("serve")
                .cloned()
                .unwrap_or_else(|| clap::Command::new("serve"));
            let problems = file.check(&serve);
            if !problems.is_empty() {
                return Err(config::report(&problems));
            }
            command
                .mut_subcommand("serve", |serve| file.apply(serve))
                .try_get_matches()
                .unwrap_or_else(|e| e.exit())
        }
    };
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// The `serve` subcommand as clap sees it: the list of config-file keys.
pub fn serve_command() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("serve"))
}
