#!/usr/bin/env bash
# Installs (setup.sh) and starts CongoDB on 127.0.0.1:PORT in the background, waits
# until it accepts connections, and prints its process id. Fails loudly if it does not
# come up within 20 seconds. Used by scripts/test.sh; stop it with `kill PID`.
#
# Usage: start.sh PORT LOGFILE
set -euo pipefail
port="${1:?usage: start.sh PORT LOGFILE}"
log="${2:?usage: start.sh PORT LOGFILE}"
dir="$(bash "$(dirname "$0")/setup.sh")"
node "$dir/server.mjs" "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 80); do
  if grep -q "^ready $port" "$log"; then
    echo "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.25
done
kill "$pid" 2>/dev/null || true
echo "CongoDB did not come up on 127.0.0.1:$port; its log ($log):" >&2
cat "$log" >&2
exit 1
