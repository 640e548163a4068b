//! `tether config check FILE`: validates a config file without starting anything,
//! reporting every problem with its line, column and key.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tether::config::file::{ConfigFile, Problem};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: syntax, known keys, and each value against its flag.
    Check(CheckArgs),
    /// List the keys a config file may hold, with their environment variables.
    Keys,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML file.
    pub file: PathBuf,
}

pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check(args) => check(&args.file),
        ConfigCommand::Keys => keys(),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let file = match ConfigFile::read(path) {
        Ok(file) => file,
        Err(problems) => return report(&problems),
    };
    let problems = file.check(&super::serve_command());
    if !problems.is_empty() {
        return report(&problems);
    }
    println!(
        "{}: ok ({} setting{}{})",
        path.display(),
        file.len(),
        if file.len() == 1 { "" } else { "s" },
        if file.is_empty() {
            String::new()
        } else {
            format!(": {}", file.keys().collect::<Vec<_>>().join(", "))
        }
    );
    ExitCode::SUCCESS
}

fn keys() -> ExitCode {
    let serve = super::serve_command();
    for arg in serve.get_arguments() {
        let Some(key) = tether::config::file::key_of(arg) else {
            continue;
        };
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("{key:<28} {env}");
    }
    ExitCode::SUCCESS
}

/// One line per problem on stderr; exit status 1.
pub fn report(problems: &[Problem]) -> ExitCode {
    for problem in problems {
        eprintln!("error: {problem}");
    }
    ExitCode::FAILURE
}
