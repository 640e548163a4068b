#!/usr/bin/env bash
# Runs every benchmark scenario against Tether and the Node ws peer, alternating, in one
# run, and prints the Tether / Node ws / ratio table. See BENCHMARKS.md.
#
#   bench/run.sh                      # the full run (about 10 minutes with REPS=3)
#   REPS=5 bench/run.sh               # more repetitions: medians steadier
#   QUICK=1 REPS=1 bench/run.sh       # a small version of every scenario (a minute)
#   PROTOCOL=monorail bench/run.sh    # fan-out and idle over /monorail/<channel>
#   ONLY=fanout-1k,idle bench/run.sh  # some scenarios only
#   TETHER_BIN=/path/to/tether bench/run.sh  # a prebuilt server (before/after runs)
#
# Raw results (one JSON file per scenario, server and repetition) and the summary go to
# bench/results/<date>/. Each scenario runs against a freshly started server with an
# empty data directory, so scenarios do not inherit each other's memory or data. All
# traffic stays on loopback; every scenario is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS="${REPS:-3}"
QUICK="${QUICK:-0}"
PROTOCOL="${PROTOCOL:-canonical}"
ONLY="${ONLY:-}"
TETHER_PORT="${TETHER_PORT:-7171}"
NODE_PORT="${NODE_PORT:-7172}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-19000}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="bench/results/$(date +%Y%m%d-%H%M%S)"

# The idle scenario needs every file descriptor this machine allows per process.
ulimit -n "$(ulimit -Hn)"

if [ -n "${TETHER_BIN:-}" ]; then
  # A given server binary (an older build, for before/after comparisons).
  echo "== building the load generator (release); Tether is $TETHER_BIN"
  cargo build --release -p tether-loadgen
  TETHER="$TETHER_BIN"
else
  echo "== building Tether and the load generator (release)"
  cargo build --release -p tether -p tether-loadgen
  TETHER="$TARGET_DIR/release/tether"
fi
LOADGEN="$TARGET_DIR/release/loadgen"

echo "== installing the Node ws peer"
command -v node >/dev/null || { echo "node (20+) is required for the peer server" >&2; exit 1; }
if [ ! -d bench/peers/node-ws/node_modules/ws ]; then
  (cd bench/peers/node-ws && npm ci --no-audit --no-fund)
fi

mkdir -p "$OUT"
DATA_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/tether-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$DATA_ROOT"
}
trap cleanup EXIT

# Scenarios: label | loadgen arguments. QUICK shrinks every count, not the shape.
if [ "$QUICK" = 1 ]; then
  SCENARIOS=(
    "fanout-1k|fanout --protocol $PROTOCOL --watchers 200 --writes 100 --rate 500"
    "fanout-10k|fanout --protocol $PROTOCOL --watchers 1000 --writes 20 --rate 100"
    "fanout-1k-light|fanout --protocol $PROTOCOL --watchers 200 --writes 20 --rate 20"
    "idle|idle --protocol $PROTOCOL --connections 2000 --procs 2 --steps 2 --settle-ms 500"
    "reqresp|reqresp --clients 20 --rate 2000 --duration-secs 2"
    "reqresp-get|reqresp --clients 20 --rate 2000 --duration-secs 2 --mix get"
    "durable|durable --clients 50 --window 4 --duration-secs 2"
  )
else
  SCENARIOS=(
    "fanout-1k|fanout --protocol $PROTOCOL --watchers 1000 --writes 500 --rate 1000"
    "fanout-10k|fanout --protocol $PROTOCOL --watchers 10000 --writes 100 --rate 100"
    "fanout-1k-light|fanout --protocol $PROTOCOL --watchers 1000 --writes 100 --rate 20"
    "idle|idle --protocol $PROTOCOL --connections $IDLE_CONNECTIONS --procs 4 --steps 4"
    "reqresp|reqresp --clients 50 --rate 10000 --duration-secs 5"
    "reqresp-get|reqresp --clients 50 --rate 10000 --duration-secs 5 --mix get"
    "durable|durable --clients 200 --window 4 --duration-secs 5"
  )
fi

start_server() { # name -> sets SERVER_PID and ADDR
  case "$1" in
    tether)
      ADDR="127.0.0.1:$TETHER_PORT"
      local data="$DATA_ROOT/tether-$RANDOM$RANDOM"
      # The load comes from four loopback addresses, so the per-address connection
      # cap and the per-connection message rate (abuse guards) are off; the total
      # connection cap leaves the server a reserve of files under the 20,000 limit.
      TETHER_LOG=warn TETHER_MAX_CONNECTIONS_PER_IP=0 TETHER_MAX_MESSAGES_PER_SEC=0 \
        TETHER_MAX_CONNECTIONS=19500 \
        "$TETHER" serve --listen "$ADDR" --data "$data" >>"$OUT/tether.log" 2>&1 &
      ;;
    node-ws)
      ADDR="127.0.0.1:$NODE_PORT"
      node bench/peers/node-ws/server.js --port "$NODE_PORT" >>"$OUT/node-ws.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  "$LOADGEN" wait --addr "$ADDR" --timeout-secs 30
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "memory: $(free -m | awk '/Mem:/ {print $2}') MiB; load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tether: $TETHER (built $(date -u -r "$TETHER" +%Y-%m-%dT%H:%M:%SZ))"
  echo "node: $(node --version); ws: $(node -p "require('./bench/peers/node-ws/node_modules/ws/package.json').version")"
  echo "reps: $REPS; quick: $QUICK; protocol: $PROTOCOL"
} | tee "$OUT/machine.txt"

order=0
for rep in $(seq 1 "$REPS"); do
  # Alternate which server goes first, so drift in the machine's load hits both alike.
  if [ $((rep % 2)) = 1 ]; then servers=(tether node-ws); else servers=(node-ws tether); fi
  for entry in "${SCENARIOS[@]}"; do
    label="${entry%%|*}"
    args="${entry#*|}"
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$label,"* ]]; then continue; fi
    for server in "${servers[@]}"; do
      order=$((order + 1))
      start_server "$server"
      echo "== rep $rep: $label on $server"
      # shellcheck disable=SC2086 # $args is a list of words by design
      if ! "$LOADGEN" $args --addr "$ADDR" --server "$server" --label "$label" --order "$order" \
          --server-pid "$SERVER_PID" --out "$OUT/$(printf %03d $order)-$label-$server.json" >/dev/null; then
        echo "   $label on $server FAILED (see above); continuing"
      fi
      stop_server
      sleep 1
    done
  done
done

echo
echo "== results ($OUT): medians of $REPS run(s); ratio > 1 means Tether is better"
"$LOADGEN" report "$OUT" --peer node-ws
