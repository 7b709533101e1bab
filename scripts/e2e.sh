#!/usr/bin/env bash
# The e2e suite, once more if the machine's RabbitMQ stops answering during it. Debian's
# RabbitMQ 3.10 has hung several times under the suite's quorum-queue churn: its CLI hangs,
# connections stall, and every test that needs the broker times out. A watchdog asks the
# broker every 20 s; if it does not answer twice in a row, the run is stopped, the broker is
# reset — its data directory moved aside (the suite's queues only, on a test machine) and
# started again — and the suite runs one more time; that run's result stands. A failure
# while the broker is healthy fails at once.
set -uo pipefail
cd "$(dirname "$0")/.."

broker_answers() { timeout 15 rabbitmqctl -q status >/dev/null 2>&1; }

reset_broker() {
  pkill -9 -u rabbitmq beam.smp 2>/dev/null
  pkill -9 -u rabbitmq epmd 2>/dev/null
  sleep 2
  if [ -d /var/lib/rabbitmq/mnesia ]; then
    mv /var/lib/rabbitmq/mnesia "/var/lib/rabbitmq/mnesia.hung-$(date +%Y%m%d%H%M%S)"
  fi
  scripts/services.sh
}

# Build first, so that the watchdog watches tests, not the compiler.
cargo test -p switchyard-tests --test e2e --no-run "$@" || exit 1

hung=$(mktemp)
trap 'rm -f "$hung"' EXIT
cargo test -p switchyard-tests --test e2e "$@" &
suite=$!
(
  misses=0
  while kill -0 "$suite" 2>/dev/null; do
    sleep 20
    if broker_answers; then misses=0; else misses=$((misses + 1)); fi
    if [ "$misses" -ge 2 ]; then
      echo hung > "$hung"
      pkill -f "target/debug/deps/e2e-" 2>/dev/null
      exit 0
    fi
  done
) &
watchdog=$!
wait "$suite"
status=$?
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
[ "$status" -eq 0 ] && exit 0
if [ ! -s "$hung" ] && broker_answers; then
  exit "$status"
fi
echo "e2e: RabbitMQ stopped answering during the suite; resetting it and running the suite again" >&2
reset_broker || exit 1
cargo test -p switchyard-tests --test e2e "$@"
