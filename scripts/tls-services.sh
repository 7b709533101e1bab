#!/usr/bin/env bash
# Redis and RabbitMQ speaking TLS, for the test that checks Switchyard's TLS to them: a test
# CA and a server certificate (localhost, 127.0.0.1) made with openssl, Redis on TLS port 6390
# only (no plain port), and a RabbitMQ node sytls@localhost with TLS on 5691 and plain AMQP on
# 5690 (for the test's own publisher). Files under $TLS_SERVICES_DIR (default
# /tmp/switchyard-tls); the machine's own services are left alone.
#   scripts/tls-services.sh start   start both; prints the CA file clients should trust
#   scripts/tls-services.sh stop    stop both and remove their files
set -euo pipefail
DIR=${TLS_SERVICES_DIR:-/tmp/switchyard-tls}
BIN=/usr/lib/rabbitmq/bin
NODE=sytls@localhost

as_rabbit() {
  if [ "$(id -un)" = rabbitmq ]; then "$@"; else runuser -u rabbitmq -- "$@"; fi
}

node_env() {
  echo "HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
RABBITMQ_DIST_PORT=25690 RABBITMQ_MNESIA_BASE=$DIR/rabbit/mnesia RABBITMQ_LOG_BASE=$DIR/rabbit/log \
RABBITMQ_PID_FILE=$DIR/rabbit/pid RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/rabbit/enabled_plugins \
RABBITMQ_CONFIG_FILE=$DIR/rabbit/rabbitmq RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/rabbit/advanced.config"
}

ctl() {
  as_rabbit env HOME=/var/lib/rabbitmq "$BIN/rabbitmqctl" -n "$NODE" "$@"
}

certificates() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Switchyard test CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$DIR/ext.cnf"
  openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$DIR/ext.cnf" -out "$DIR/server.pem" 2>/dev/null
}

case "${1:-}" in
  start)
    command -v openssl >/dev/null || { echo "tls-services: needs openssl" >&2; exit 1; }
    command -v runuser >/dev/null || { echo "tls-services: needs runuser (util-linux)" >&2; exit 1; }
    "$0" stop
    mkdir -p "$DIR/rabbit/mnesia" "$DIR/rabbit/log"
    certificates
    redis-server --port 0 --tls-port 6390 --bind 127.0.0.1 \
      --tls-cert-file "$DIR/server.pem" --tls-key-file "$DIR/server.key" \
      --tls-ca-cert-file "$DIR/ca.pem" --tls-auth-clients no \
      --save '' --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" \
      --logfile "$DIR/redis.log"
    echo '[].' > "$DIR/rabbit/enabled_plugins"
    echo '[].' > "$DIR/rabbit/advanced.config"
    cat > "$DIR/rabbit/rabbitmq.conf" <<EOF
listeners.tcp.default = 5690
listeners.ssl.default = 5691
ssl_options.cacertfile = $DIR/ca.pem
ssl_options.certfile = $DIR/server.pem
ssl_options.keyfile = $DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users = none
disk_free_limit.absolute = 50MB
EOF
    chown -R rabbitmq:rabbitmq "$DIR"
    chmod 644 "$DIR/ca.pem" "$DIR/server.pem"
    as_rabbit env $(node_env) "$BIN/rabbitmq-server" -detached
    for _ in $(seq 1 60); do
      if ctl await_startup >/dev/null 2>&1; then
        echo "$DIR/ca.pem"
        exit 0
      fi
      sleep 1
    done
    echo "tls-services: RabbitMQ node $NODE did not start; see $DIR/rabbit/log" >&2
    exit 1
    ;;
  ssl-connections)
    # One line per client connection: `true` if it speaks TLS.
    ctl list_connections ssl --quiet --no-table-headers
    ;;
  stop)
    ctl stop >/dev/null 2>&1 || true
    if [ -f "$DIR/redis.pid" ]; then kill "$(cat "$DIR/redis.pid")" 2>/dev/null || true; fi
    rm -rf "$DIR"
    ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
