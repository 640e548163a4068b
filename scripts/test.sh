#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and all test suites against the
# real server, a real SQLite file and real sockets. This is the README's test command
# and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
