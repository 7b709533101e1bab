#!/usr/bin/env bash
# The e2e suite, once more if the machine's RabbitMQ stopped answering during it. Debian's
# RabbitMQ 3.10 has hung a few times under the suite's quorum-queue churn (its CLI hangs,
# connections stall, and the tests that need the broker time out). If the suite fails while
# the broker is healthy, that failure stands. If the broker is hung, it is reset — its data
# directory moved aside (the suite's queues only, on a test machine) and started again — and
# the suite runs one more time; that run's result stands.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test -p switchyard-tests --test e2e "$@" && exit 0
if timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
  exit 1
fi
echo "e2e: RabbitMQ stopped answering during the suite; resetting it and running the suite again" >&2
pkill -9 -u rabbitmq beam.smp 2>/dev/null
pkill -9 -u rabbitmq epmd 2>/dev/null
sleep 2
if [ -d /var/lib/rabbitmq/mnesia ]; then
  mv /var/lib/rabbitmq/mnesia "/var/lib/rabbitmq/mnesia.hung-$(date +%Y%m%d%H%M%S)"
fi
scripts/services.sh || exit 1
cargo test -p switchyard-tests --test e2e "$@"
