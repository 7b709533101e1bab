#!/usr/bin/env bash
# Run one test suite of switchyard-tests (`e2e`, `chaos`), once more if the machine's
# RabbitMQ stops answering during it:  scripts/watched-suite.sh SUITE [cargo test args…]
#
# Debian's RabbitMQ 3.10 has hung several times under the suites' quorum-queue churn: its
# CLI hangs or new connections stall, and every test that needs the broker times out (CI
# once saw the fault suite's worker processes settle nothing for 18 minutes while the
# cluster it starts itself worked). A watchdog asks the broker every 20 s, through its CLI
# and through a new AMQP connection; if it does not answer three times in a row, the run is
# stopped, the broker is reset — its data directory moved aside (the suites' queues only,
# on a test machine) and started again — and the suite runs one more time; that run's
# result stands. A failure while the broker is healthy fails at once.
set -uo pipefail
cd "$(dirname "$0")/.."

suite=${1:?usage: scripts/watched-suite.sh SUITE [cargo test args…]}
shift

# The CLI answers, and a new connection gets the server's first frame (a method frame,
# type 1) in answer to the AMQP 0-9-1 protocol header.
broker_answers() {
  timeout 15 rabbitmqctl -q status >/dev/null 2>&1 || return 1
  timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 &&
    printf "AMQP\000\000\011\001" >&3 &&
    [ "$(head -c 1 <&3 | od -An -tx1 | tr -d " \n")" = 01 ]' 2>/dev/null
}

reset_broker() {
  scripts/rabbit-cluster.sh stop >/dev/null 2>&1
  pkill -9 -u rabbitmq beam.smp 2>/dev/null
  pkill -9 -u rabbitmq epmd 2>/dev/null
  sleep 2
  if [ -d /var/lib/rabbitmq/mnesia ]; then
    mv /var/lib/rabbitmq/mnesia "/var/lib/rabbitmq/mnesia.hung-$(date +%Y%m%d%H%M%S)"
  fi
  scripts/services.sh
}

# Build first, so that the watchdog watches tests, not the compiler.
cargo test -p switchyard-tests --test "$suite" --no-run || exit 1

hung=$(mktemp)
trap 'rm -f "$hung"' EXIT
cargo test -p switchyard-tests --test "$suite" "$@" &
running=$!
(
  misses=0
  while kill -0 "$running" 2>/dev/null; do
    sleep 20
    if broker_answers; then misses=0; else misses=$((misses + 1)); fi
    if [ "$misses" -ge 3 ]; then
      echo hung > "$hung"
      pkill -f "target/debug/deps/$suite-" 2>/dev/null
      # The fault suite's worker processes.
      pkill -f "target/debug/switchyard worker" 2>/dev/null
      exit 0
    fi
  done
) &
watchdog=$!
wait "$running"
status=$?
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
[ "$status" -eq 0 ] && exit 0
if [ ! -s "$hung" ] && broker_answers; then
  exit "$status"
fi
echo "$suite: RabbitMQ stopped answering during the suite; resetting it and running the suite again" >&2
reset_broker || exit 1
cargo test -p switchyard-tests --test "$suite" "$@"
