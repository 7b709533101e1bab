#!/usr/bin/env bash
# Make sure PostgreSQL, RabbitMQ and Redis are running on this machine; start any that is
# not, install any that is missing (Debian packages, as root). Fails loudly otherwise.
set -uo pipefail

say() { printf '%s\n' "services: $*"; }
die() { printf '%s\n' "services: ERROR: $*" >&2; exit 1; }

apt_updated=0
install() {
  if [ "$(id -u)" != 0 ]; then
    die "$1 is not installed; install it with: sudo apt-get install -y $2"
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq || die "apt-get update failed"; apt_updated=1; fi
  say "installing $2 (missing)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null || die "could not install $2"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  for _ in $(seq 1 "$3"); do port_open "$2" && return 0; sleep 1; done
  die "$1 did not start listening on 127.0.0.1:$2 within $3 s"
}

# PostgreSQL
if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || install PostgreSQL postgresql
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$ver" ] || die "no PostgreSQL cluster under /etc/postgresql"
  say "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || die "PostgreSQL did not start (see /var/log/postgresql)"
  wait_port PostgreSQL 5432 30
fi
say "PostgreSQL is up on 127.0.0.1:5432"

# RabbitMQ
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || install RabbitMQ rabbitmq-server
  say "starting RabbitMQ"
  rabbitmq-server -detached || die "RabbitMQ did not start (see /var/log/rabbitmq)"
  wait_port RabbitMQ 5672 90
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
say "RabbitMQ is up on 127.0.0.1:5672"

# Redis
if ! port_open 6379; then
  command -v redis-server >/dev/null || install Redis redis-server
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    || die "Redis did not start"
  wait_port Redis 6379 15
fi
say "Redis is up on 127.0.0.1:6379"

# The local PostgreSQL trusts local connections as `postgres`; check we can log in.
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1 \
    || die "cannot log in to PostgreSQL as postgres on 127.0.0.1 (trust auth expected)"
fi
