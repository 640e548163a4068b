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
# MongoDB-backed resources are tested against CongoDB, an in-memory MongoDB-wire
# server from the npm registry (no genuine MongoDB installs here; see
# scripts/congodb/setup.sh for the pin and what it cannot test). A TETHER_TEST_MONGO
# already set (a real MongoDB) is used instead.
if [ -z "${TETHER_TEST_MONGO:-}" ]; then
  echo "== CongoDB for the MongoDB-backed resource tests"
  congo_log="$(mktemp)"
  congo_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  congo_pid="$(bash scripts/congodb/start.sh "$congo_port" "$congo_log")"
  trap 'kill "$congo_pid" 2>/dev/null || true; rm -f "$congo_log"' EXIT
  export TETHER_TEST_MONGO="mongodb://127.0.0.1:$congo_port/?directConnection=true"
fi

echo "== cargo test"
cargo test --workspace --locked

# The TypeScript client (clients/js) and the web inspector built from it. Their tests
# run against the real server binary, built once here and handed over as TETHER_BIN.
echo "== clients/js: client tests against a real server"
cargo build -p tether --locked
TETHER_BIN="$(cargo metadata --format-version 1 --no-deps --locked |
  node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')/debug/tether"
export TETHER_BIN
(
  cd clients/js
  npm ci --no-audit --no-fund
  # Before the build overwrites it: the inspector committed in crates/tether/assets must
  # be what its sources build to, since `cargo build` embeds it without running Node.
  npm run check:inspector
  npm run build
  npm test
  echo "== clients/js: inspector end-to-end tests in headless Chromium"
  npm run test:e2e
)

# WebSocket conformance: the Autobahn suite against the echo endpoints. It needs
# Python 2.7 (the image's pyenv has it) and fails loudly without it; see the script.
echo "== Autobahn WebSocket conformance"
bash scripts/autobahn.sh
# A short, bounded fuzzing run of every cargo fuzz target (FUZZ_SECONDS each, 30 by
# default; fuzz/README.md has the longer local run).
echo "== fuzzing"
bash scripts/fuzz.sh
