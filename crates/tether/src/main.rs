//! The `tether` binary. Each subcommand lives in `cli/`, one file per command; the
//! server itself is the library, so tests start it in-process exactly as `serve` does.

mod cli;

/// jemalloc instead of the system allocator: a durable write or a push allocates a few
/// dozen small objects across threads, and glibc's malloc and free were 15% of the
/// server's CPU in the durable-writes profile. With jemalloc (two arenas, freed pages
/// returned within a second: .cargo/config.toml) durable writes went from about
/// 49,000/s to 64,000-69,000/s, for 0.4 KiB more per idle connection (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
