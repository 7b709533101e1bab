#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster for the fault suite: nodes sy1, sy2, sy3 @localhost on AMQP
# ports 5681-5683 (distribution 25681-25683), data under $RABBIT_CLUSTER_DIR
# (default /tmp/switchyard-rabbit-cluster), run as the rabbitmq user with the machine's
# Debian RabbitMQ. It leaves the machine's own broker (5672) alone.
#   scripts/rabbit-cluster.sh start          start the three nodes and join them
#   scripts/rabbit-cluster.sh stop-node N    stop node syN (the others carry on)
#   scripts/rabbit-cluster.sh start-node N   start node syN again (it rejoins)
#   scripts/rabbit-cluster.sh leader QUEUE   the node leading a quorum queue (sy1@localhost…)
#   scripts/rabbit-cluster.sh stop           stop all three and remove their data
set -euo pipefail
DIR=${RABBIT_CLUSTER_DIR:-/tmp/switchyard-rabbit-cluster}
BIN=/usr/lib/rabbitmq/bin

as_rabbit() { # command…
  if [ "$(id -un)" = rabbitmq ]; then "$@"; else runuser -u rabbitmq -- "$@"; fi
}

node_env() { # N → env assignments for node syN
  local n=$1
  echo "HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=sy$n@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
RABBITMQ_NODE_PORT=$((5680 + n)) RABBITMQ_DIST_PORT=$((25680 + n)) \
RABBITMQ_MNESIA_BASE=$DIR/sy$n/mnesia RABBITMQ_LOG_BASE=$DIR/sy$n/log \
RABBITMQ_PID_FILE=$DIR/sy$n/pid RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins \
RABBITMQ_CONFIG_FILE=$DIR/rabbitmq RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config"
}

ctl() { # N args… : rabbitmqctl against node syN
  local n=$1; shift
  as_rabbit env HOME=/var/lib/rabbitmq "$BIN/rabbitmqctl" -n "sy$n@localhost" "$@"
}

start_node() {
  local n=$1
  mkdir -p "$DIR/sy$n/mnesia" "$DIR/sy$n/log"
  chown -R rabbitmq:rabbitmq "$DIR"
  as_rabbit env $(node_env "$n") "$BIN/rabbitmq-server" -detached
  for _ in $(seq 1 60); do
    ctl "$n" await_startup >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "rabbit-cluster: node sy$n did not start; see $DIR/sy$n/log" >&2
  return 1
}

case "${1:-}" in
  start)
    command -v runuser >/dev/null || { echo "rabbit-cluster: needs runuser (util-linux)" >&2; exit 1; }
    "$0" stop  # a cluster an interrupted run left behind
    mkdir -p "$DIR"
    echo '[].' > "$DIR/enabled_plugins"
    # No disk or memory alarms on a small test machine; quick detection of a lost node.
    printf 'disk_free_limit.absolute = 50MB\nvm_memory_high_watermark.relative = 0.8\nloopback_users = none\n' > "$DIR/rabbitmq.conf"
    echo '[].' > "$DIR/advanced.config"
    for n in 1 2 3; do start_node "$n"; done
    for n in 2 3; do
      ctl "$n" stop_app >/dev/null
      ctl "$n" join_cluster sy1@localhost >/dev/null
      ctl "$n" start_app >/dev/null
    done
    ctl 1 cluster_status | grep -A4 -i "running nodes" || true
    echo "rabbit-cluster: up on 127.0.0.1:5681,5682,5683"
    ;;
  stop-node) ctl "$2" stop_app >/dev/null; ctl "$2" stop >/dev/null 2>&1 || true ;;
  start-node) start_node "$2" ;;
  leader)
    for n in 1 2 3; do
      out=$(ctl "$n" list_queues name leader --quiet --no-table-headers 2>/dev/null) || continue
      echo "$out" | awk -v q="$2" '$1 == q { print $2; found=1 } END { exit !found }' && exit 0
    done
    exit 1
    ;;
  stop)
    for n in 1 2 3; do ctl "$n" stop >/dev/null 2>&1 || true; done
    rm -rf "$DIR"
    ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
