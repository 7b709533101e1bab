#!/usr/bin/env bash
# `just up`: run Switchyard with a demo. Starts a mock provider and `switchyard all` in the
# background, creates a store (webhook sender) routed to two REST targets (fan-out), sends
# sample webhooks and prints the resulting jobs and id mappings; then an operator's day with
# a WooCommerce shop: test, activate, schedule, sync (import), watch the run, look up a mapping.
# It ends by checking that every job it caused succeeded, and says what to try next.
#
# Safe to run any number of times, against a database an earlier run (or another clone) left:
# it never needs a file an earlier run wrote. Existing demo integrations get their
# credentials sealed again under this run's vault key and the store a fresh webhook key.
#
# Settings (environment): DEMO_PORT (8080), DEMO_RUN (.run, where logs,
# pids and keys go), MOCK_PROVIDER_ADDR (127.0.0.1:18080), SWITCHYARD_DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${DEMO_RUN:-.run}
mkdir -p "$RUN"
BIN=target/debug/switchyard
MOCK=target/debug/mock-provider
PORT=${DEMO_PORT:-8080}
export MOCK_PROVIDER_ADDR=${MOCK_PROVIDER_ADDR:-127.0.0.1:18080}
MOCK_URL="http://$MOCK_PROVIDER_ADDR"

export SWITCHYARD_DATABASE_URL=${SWITCHYARD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/switchyard}
export SWITCHYARD_LISTEN=127.0.0.1:$PORT
# The demo's provider (the mock) runs on this machine: let the workers call it.
export SWITCHYARD_EGRESS__ALLOW=${SWITCHYARD_EGRESS__ALLOW:-127.0.0.1/32}
new_vault_key=
if [ ! -s "$RUN/vault.key" ]; then
  "$BIN" keys generate --id demo1 > "$RUN/vault.key"
  new_vault_key=1
fi
[ -s "$RUN/admin.token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/admin.token"
export SWITCHYARD_VAULT_KEYS=$(cat "$RUN/vault.key")
export SWITCHYARD_ADMIN_TOKEN=$(cat "$RUN/admin.token")

db=${SWITCHYARD_DATABASE_URL##*/}
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$db\"" && echo "created database $db"
fi
"$BIN" migrate

# An earlier run's processes, if they still run (a pid file whose process is gone is fine).
stop_pid() { if [ -f "$1" ]; then kill "$(cat "$1")" 2>/dev/null || true; rm -f "$1"; fi; }
stop_pid "$RUN/switchyard.pid"; stop_pid "$RUN/mock.pid"; sleep 0.5

"$MOCK" > "$RUN/mock-provider.log" 2>&1 & echo $! > "$RUN/mock.pid"

"$BIN" all > "$RUN/switchyard.log" 2>&1 & echo $! > "$RUN/switchyard.pid"
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "switchyard did not become ready; see $RUN/switchyard.log"; tail -20 "$RUN/switchyard.log"; exit 1; }
echo "switchyard is ready on http://127.0.0.1:$PORT (log: $RUN/switchyard.log)"
# The CLI is a client of the API: it needs the URL and a token, nothing else.
export SWITCHYARD_URL=http://127.0.0.1:$PORT SWITCHYARD_TOKEN=$SWITCHYARD_ADMIN_TOKEN

exists() { "$BIN" integrations show "default/$1" >/dev/null 2>&1; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The REST targets: created once; on later runs their manifest (the mock's address) and
# credentials (sealed under this run's vault key) are written again.
manifest() { # entity path
cat <<JSON
{"base_url": "$MOCK_URL", "auth": {"type": "bearer"}, "timeout_ms": 5000,
 "entities": {"order": {"create": {"method": "POST", "path": "/api/$1"},
                        "update": {"method": "PUT", "path": "/api/$1/{external_id}"},
                        "body": {"reference": "/id", "email": "/customer/email", "total": "/totals/grand_total"}}}}
JSON
}
shop_settings() {
cat <<JSON
{"base_url": "$MOCK_URL", "auth": {"type": "basic"},
 "test": {"method": "GET", "path": "/wp-json/wc/v3/orders"},
 "entities": {"order": {
   "create": {"method": "POST", "path": "/wp-json/wc/v3/orders"},
   "list": {"path": "/wp-json/wc/v3/orders", "since_param": "modified_after",
            "query": {"per_page": "3", "orderby": "modified", "order": "asc"},
            "version_pointer": "/date_modified_gmt",
            "pagination": {"style": "page", "total_pages_header": "X-WP-TotalPages"}}}}}
JSON
}
creds="$RUN/credentials.json"
trap 'rm -f "$creds"' EXIT
rest_target() { # name entity-path credentials-json [create options...]
  local name=$1 path=$2
  echo "$3" > "$creds"
  shift 3
  if exists "$name"; then
    "$BIN" integrations update "$name" --settings "$(manifest "$path")" --credentials-file "$creds" >/dev/null
  else
    "$BIN" integrations create --name "$name" --provider rest --credentials-file "$creds" \
      --settings "$(manifest "$path")" "$@"
  fi
}
if [ -n "$new_vault_key" ] && exists demo-erp; then
  echo "note: made a new vault key ($RUN/vault.key); the demo's integrations get their credentials sealed again under it"
fi
rest_target demo-erp orders '{"token": "demo-erp-token"}' --status active
rest_target demo-warehouse shipments '{"token": "demo-erp-token"}' --status active

# The store that sends webhooks: created with a generated key, or given a fresh key (and its
# earlier keys retired), so this run never needs a key an earlier run kept.
if exists demo-store; then
  old_keys=$("$BIN" integrations webhook-secrets list demo-store)
  STORE_KEY=$("$BIN" integrations webhook-secrets add demo-store | sed -n 's/.*shown once: \(sy_[0-9a-f]*\).*/\1/p')
  for fp in $old_keys; do "$BIN" integrations webhook-secrets remove demo-store --fingerprint "$fp" >/dev/null; done
  echo "demo-store: a fresh webhook API key (earlier ones retired)"
else
  created=$("$BIN" integrations create --name demo-store --provider webhook --status active --output json \
    --inbound '{"entity": {"value": "order"}, "event_id": {"header": "X-Event-Id"}, "version": {"pointer": "/version"}}')
  STORE_KEY=$(json_field webhook_api_key <<<"$created")
  "$BIN" routes add --from demo-store --entity order --to demo-erp --to demo-warehouse
fi
[ -n "$STORE_KEY" ] || { echo "demo: could not get a webhook API key for demo-store" >&2; exit 1; }
STORE_ID=$("$BIN" integrations show default/demo-store --output json | json_field id)
URL="http://127.0.0.1:$PORT/v1/webhooks/$STORE_ID"

: > "$RUN/demo-jobs.txt"
send() { # event-id order-number version
  local body answer
  body=$(sed "s/__N__/$2/g" ../shared/bench/order-template.json 2>/dev/null || echo "{\"id\":\"ord-$2\",\"customer\":{\"email\":\"c$2@example.com\"},\"totals\":{\"grand_total\":\"10.00\"}}")
  body=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["version"]=int(sys.argv[2]); print(json.dumps(d))' "$body" "$3")
  printf '  POST order ord-%s v%s (event %s) -> ' "$2" "$3" "$1"
  answer=$(curl -s -XPOST "$URL" -H 'content-type: application/json' -H "x-api-key: $STORE_KEY" -H "x-event-id: $1" -d "$body")
  echo "$answer"
  python3 -c 'import json,sys; [print(j) for j in json.loads(sys.argv[1]).get("jobs", [])]' "$answer" >> "$RUN/demo-jobs.txt" \
    || { echo "demo: the webhook was not accepted: $answer" >&2; exit 1; }
}
run=$(date +%s)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%S)
echo
echo "sending sample webhooks to $URL"
send "demo-$run-1" "${run}1" 1
send "demo-$run-2" "${run}2" 1
send "demo-$run-2" "${run}2" 1   # the same event again: a duplicate, no second effect
send "demo-$run-3" "${run}1" 2   # a newer version of the first order: an update
sleep 2
echo
echo "jobs (newest first):"
"$BIN" jobs list --limit 8
echo
echo "id mappings at demo-erp:"
"$BIN" mappings list demo-erp --limit 8
echo
echo "what the mock provider received:"
tail -n 6 "$RUN/mock-provider.log"
echo
echo "== an operator's day: import a WooCommerce shop's orders into demo-erp =="
echo '{"username": "ck_demo", "password": "cs_demo"}' > "$creds"
if exists demo-shop; then
  "$BIN" integrations update demo-shop --settings "$(shop_settings)" --credentials-file "$creds" >/dev/null
else
  "$BIN" integrations create --name demo-shop --provider rest --direction import --entities order \
    --credentials-file "$creds" --settings "$(shop_settings)" >/dev/null
  "$BIN" routes add --from demo-shop --entity order --to demo-erp
fi
echo "\$ switchyard integrations test demo-shop";     "$BIN" integrations test demo-shop
echo "\$ switchyard integrations activate demo-shop"; "$BIN" integrations activate demo-shop
echo "\$ switchyard integrations update demo-shop --schedule '{\"every\": \"daily\", \"at\": \"02:30\", \"timezone\": \"Europe/Lisbon\"}'"
"$BIN" integrations update demo-shop --schedule '{"every": "daily", "at": "02:30", "timezone": "Europe/Lisbon"}' --output json \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  schedule:", json.dumps(d["schedule"]))'
echo "\$ switchyard sync start demo-shop --wait"
# (A run that does not succeed exits non-zero; the check below says why.)
"$BIN" sync start demo-shop --wait | tee "$RUN/demo-sync.txt" || true
SYNC_RUN=$(sed -n 's/^sync run \([0-9a-f-]*\) started.*/\1/p' "$RUN/demo-sync.txt")
echo "\$ switchyard sync runs demo-shop";              "$BIN" sync runs demo-shop --limit 3
echo "\$ switchyard mappings show demo-erp --entity order --internal-id 503"
"$BIN" mappings show demo-erp --entity order --internal-id 503

# The check: every job this run caused (the webhooks' and the sync run's) settled as expected.
echo
python3 scripts/demo_check.py --bin "$BIN" --jobs "$RUN/demo-jobs.txt" --sync-run "$SYNC_RUN" --since "$STARTED" \
  --log "$RUN/switchyard.log" --mock-log "$RUN/mock-provider.log"

cat <<EOF

The dashboard: http://127.0.0.1:$PORT/ui — log in with the admin token $SWITCHYARD_ADMIN_TOKEN
(kept in $RUN/admin.token).

Switchyard keeps running (pid $(cat "$RUN/switchyard.pid")); its log is $RUN/switchyard.log.
Next steps:
  # send a webhook as demo-store (this run's key):
  curl -XPOST $URL -H 'content-type: application/json' -H 'x-api-key: $STORE_KEY' -H 'x-event-id: try-$run' -d '{"id": "ord-try-$run", "version": 1, "customer": {"email": "you@example.com"}, "totals": {"grand_total": "9.99"}}'
  # the CLI is a client of the API: it needs the URL and a token (here, the admin token):
  export SWITCHYARD_URL=$SWITCHYARD_URL SWITCHYARD_TOKEN=\$(cat $RUN/admin.token)
  $BIN jobs list --limit 5          # what happened to it
  $BIN dlq list                     # dead letters, if any
  open http://127.0.0.1:$PORT/docs  # the API, browsable (its description: /openapi.json)
  curl -H "authorization: Bearer \$(cat $RUN/admin.token)" http://127.0.0.1:$PORT/v1/integrations   # the management API
  just down                                         # stop everything
EOF
