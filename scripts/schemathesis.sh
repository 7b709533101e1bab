#!/usr/bin/env bash
# The API against its own description: schemathesis (PyPI) reads /openapi.json from a running
# `switchyard all` and sends each operation generated requests — valid, edge-case and
# malformed — once with the admin token and once with a tenant's API key. It fails on any 5xx,
# and on any answer whose status, content type, headers or body the description does not
# allow.
#
# Everything it makes stays apart: its own database (dropped and created again) and its own
# RabbitMQ virtual host (deleted at the end). Needs target/debug/switchyard built.
#
# Settings (environment): ST_PORT (18090), ST_EXAMPLES (generated requests per operation
# and phase, 25), ST_VERSION (the schemathesis release, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${ST_PORT:-18090}
EXAMPLES=${ST_EXAMPLES:-25}
VERSION=${ST_VERSION:-4.32.5}
RUN=target/schemathesis
VENV=$RUN/venv
BIN=target/debug/switchyard
DB=switchyard_schemathesis
VHOST=switchyard-schemathesis
mkdir -p "$RUN"

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "schemathesis: installing $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$VHOST"
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*'

export SWITCHYARD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export SWITCHYARD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$VHOST
export SWITCHYARD_LISTEN=127.0.0.1:$PORT
export SWITCHYARD_VAULT_KEYS=$("$BIN" keys generate --id st1)
export SWITCHYARD_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Generated integrations name generated addresses: none of them is called.
export SWITCHYARD_EGRESS__ALLOW=127.0.0.1/32
"$BIN" migrate >/dev/null

"$BIN" all > "$RUN/switchyard.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
}
trap cleanup EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
  curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$RUN/switchyard.log"; echo "schemathesis: switchyard did not start" >&2; exit 1; }
  sleep 0.2
done

# A tenant's key, made just before its run: the admin's run revokes the keys it finds.
new_tenant_key() {
  curl -fsS -X POST "$URL/v1/api-keys" -H "Authorization: Bearer $SWITCHYARD_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d "{\"tenant\": \"schemathesis\", \"name\": \"st-$RANDOM$RANDOM\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}

post() { # path json token → the answer's id
  curl -fsS -X POST "$URL$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' -d "$2" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
# What each run works on, so that its requests reach more than "not found": a webhook
# sender routed to a REST target, and one more integration for the deletes.
seed() { # token tenant-field → a schemathesis config
  local token=$1 tenant=$2 n=$RANDOM$RANDOM source target spare
  local settings='{"base_url": "http://127.0.0.1:9", "auth": {"type": "bearer"}, "test": {"method": "GET", "path": "/ping"},
    "entities": {"order": {"create": {"method": "POST", "path": "/orders"}}}}'
  source=$(post /v1/integrations "{$tenant \"name\": \"shop-$n\", \"provider\": \"webhook\", \"status\": \"active\"}" "$token")
  target=$(post /v1/integrations "{$tenant \"name\": \"erp-$n\", \"provider\": \"rest\", \"entities\": [\"order\"], \"settings\": $settings}" "$token")
  spare=$(post /v1/integrations "{$tenant \"name\": \"spare-$n\", \"provider\": \"webhook\"}" "$token")
  post /v1/routes "{\"source\": \"$source\", \"entity\": \"order\", \"targets\": [\"$target\"]}" "$token" >/dev/null
  cat <<TOML
[parameters]
"path.id" = "$target"
"path.integration" = "$source"
"path.target" = "$target"
"query.source" = "$source"
"query.integration" = "$target"
"query.integration_id" = "$target"

[[operations]]
include-path = "/v1/integrations/{id}"
include-method = "DELETE"
parameters = { "path.id" = "$spare" }
TOML
}

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
status=0
for who in admin tenant; do
  if [ "$who" = admin ]; then
    token=$SWITCHYARD_ADMIN_TOKEN
    seed "$token" '"tenant": "schemathesis-admin",' > "$RUN/$who.toml"
  else
    token=$(new_tenant_key)
    seed "$token" "" > "$RUN/$who.toml"
  fi
  echo "schemathesis: as the $who"
  "$VENV/bin/st" --config-file "$RUN/$who.toml" run "$URL/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "$CHECKS" \
    --max-examples "$EXAMPLES" \
    --phases examples,coverage,fuzzing \
    --seed 1 \
    --no-color \
    --report junit --report-dir "$RUN/report-$who" || status=1
done
if [ "$status" != 0 ]; then
  echo "schemathesis: failures above; the server's log is $RUN/switchyard.log" >&2
  grep -E '"level":"ERROR"|ERROR' "$RUN/switchyard.log" | tail -20 >&2 || true
fi
exit "$status"
