#!/usr/bin/env bash
# Checks that the services the production-backend tests use answer, before any test
# runs: PostgreSQL (TETHER_TEST_POSTGRES), NATS (TETHER_TEST_NATS) and RabbitMQ
# (TETHER_TEST_AMQP). A variable that is unset is skipped (its tests skip too). A
# service that does not answer is started once with this machine's own start command
# if there is one, then the script fails with one clear line per missing service, so a
# dead service reads as that and not as dozens of failed tests.
set -uo pipefail

# host:port of a URL like scheme://user:pass@host:port/path (default port given).
hostport() {
  local rest="${1#*://}"
  rest="${rest##*@}"
  rest="${rest%%/*}"
  rest="${rest%%\?*}"
  case "$rest" in
    *:*) echo "$rest" ;;
    *) echo "$rest:$2" ;;
  esac
}

# Whether a TCP connection to host:port opens within 2 seconds.
answers() {
  local host="${1%:*}" port="${1##*:}"
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

# NATS greets every client with an INFO line.
nats_answers() {
  local host="${1%:*}" port="${1##*:}"
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 4 <&3" 2>/dev/null | grep -q INFO
}

wait_for() {
  local check="$1" addr="$2"
  for _ in $(seq 1 40); do
    "$check" "$addr" && return 0
    sleep 0.5
  done
  return 1
}

failed=0

if [ -n "${TETHER_TEST_POSTGRES:-}" ]; then
  addr="$(hostport "$TETHER_TEST_POSTGRES" 5432)"
  if ! answers "$addr" && command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL at $addr does not answer; starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
    wait_for answers "$addr"
  fi
  if command -v pg_isready >/dev/null; then
    pg_isready -q -d "$TETHER_TEST_POSTGRES" -t 10 ||
      { echo "PostgreSQL does not answer at $addr (TETHER_TEST_POSTGRES)" >&2; failed=1; }
  elif ! answers "$addr"; then
    echo "PostgreSQL does not answer at $addr (TETHER_TEST_POSTGRES)" >&2
    failed=1
  fi
fi

if [ -n "${TETHER_TEST_NATS:-}" ]; then
  addr="$(hostport "${TETHER_TEST_NATS%%,*}" 4222)"
  if ! nats_answers "$addr" && [ -x /usr/sbin/nats-server ]; then
    echo "NATS at $addr does not answer; starting it" >&2
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log >&2 || true
    wait_for nats_answers "$addr"
  fi
  nats_answers "$addr" ||
    { echo "NATS does not answer at $addr (TETHER_TEST_NATS)" >&2; failed=1; }
fi

if [ -n "${TETHER_TEST_AMQP:-}" ]; then
  addr="$(hostport "$TETHER_TEST_AMQP" 5672)"
  if ! answers "$addr" && command -v rabbitmq-server >/dev/null; then
    echo "RabbitMQ at $addr does not answer; starting it" >&2
    rabbitmq-server -detached >&2 || true
    wait_for answers "$addr"
  fi
  answers "$addr" ||
    { echo "RabbitMQ does not answer at $addr (TETHER_TEST_AMQP)" >&2; failed=1; }
fi

if [ "$failed" -ne 0 ]; then
  echo "services needed by the tests are down; see the lines above" >&2
  exit 1
fi
echo "services answer: ${TETHER_TEST_POSTGRES:+PostgreSQL }${TETHER_TEST_NATS:+NATS }${TETHER_TEST_AMQP:+RabbitMQ}"
