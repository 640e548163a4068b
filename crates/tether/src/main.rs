//! The `tether` binary. Each subcommand lives in `cli/`, one file per command; the
//! server itself is the library, so tests start it in-process exactly as `serve` does.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
