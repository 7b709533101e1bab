#!/usr/bin/env bash
# `just up`: run Switchyard with a demo. Starts a mock provider and `switchyard all` in the
# background, creates a store (webhook sender) routed to two REST targets (fan-out), sends
# sample webhooks and prints the resulting jobs and id mappings; then an operator's day with
# a WooCommerce shop: test, activate, schedule, sync (import), watch the run, look up a mapping.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
mkdir -p "$RUN"
BIN=target/debug/switchyard
MOCK=target/debug/mock-provider
PORT=${SWITCHYARD_DEMO_PORT:-8080}

export SWITCHYARD_DATABASE_URL=${SWITCHYARD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/switchyard}
export SWITCHYARD_LISTEN=127.0.0.1:$PORT
[ -s "$RUN/vault.key" ] || "$BIN" keys generate --id demo1 > "$RUN/vault.key"
[ -s "$RUN/admin.token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/admin.token"
export SWITCHYARD_VAULT_KEYS=$(cat "$RUN/vault.key")
export SWITCHYARD_ADMIN_TOKEN=$(cat "$RUN/admin.token")

db=${SWITCHYARD_DATABASE_URL##*/}
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$db\"" && echo "created database $db"
fi
"$BIN" migrate

stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
stop_pid "$RUN/switchyard.pid"; stop_pid "$RUN/mock.pid"; sleep 0.5

"$MOCK" > "$RUN/mock-provider.log" 2>&1 & echo $! > "$RUN/mock.pid"
"$BIN" all > "$RUN/switchyard.log" 2>&1 & echo $! > "$RUN/switchyard.pid"
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "switchyard did not become ready; see $RUN/switchyard.log"; tail -20 "$RUN/switchyard.log"; exit 1; }
echo "switchyard is ready on http://127.0.0.1:$PORT (log: $RUN/switchyard.log)"

manifest() { # entity path
cat <<JSON
{"base_url": "http://127.0.0.1:18080", "auth": {"type": "bearer"}, "timeout_ms": 5000,
 "entities": {"order": {"create": {"method": "POST", "path": "/api/$1"},
                        "update": {"method": "PUT", "path": "/api/$1/{external_id}"},
                        "body": {"reference": "/id", "email": "/customer/email", "total": "/totals/grand_total"}}}}
JSON
}

if ! "$BIN" integrations show default/demo-store >/dev/null 2>&1; then
  echo '{"token": "demo-erp-token"}' > "$RUN/erp-credentials.json"
  "$BIN" integrations create --name demo-store --provider webhook --status active --json \
    --inbound '{"entity": {"value": "order"}, "event_id": {"header": "X-Event-Id"}, "version": {"pointer": "/version"}}' \
    > "$RUN/demo-store.json"
  "$BIN" integrations create --name demo-erp --provider rest --status active --credentials-file "$RUN/erp-credentials.json" --settings "$(manifest orders)"
  "$BIN" integrations create --name demo-warehouse --provider rest --status active --credentials-file "$RUN/erp-credentials.json" --settings "$(manifest shipments)"
  rm -f "$RUN/erp-credentials.json"
  "$BIN" routes add --from demo-store --entity order --to demo-erp --to demo-warehouse
fi
STORE_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$RUN/demo-store.json")
STORE_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhook_api_key"])' "$RUN/demo-store.json")
URL="http://127.0.0.1:$PORT/v1/webhooks/$STORE_ID"

send() { # event-id order-number version
  local body
  body=$(sed "s/__N__/$2/g" ../shared/bench/order-template.json 2>/dev/null || echo "{\"id\":\"ord-$2\",\"customer\":{\"email\":\"c$2@example.com\"},\"totals\":{\"grand_total\":\"10.00\"}}")
  body=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["version"]=int(sys.argv[2]); print(json.dumps(d))' "$body" "$3")
  printf '  POST order ord-%s v%s (event %s) -> ' "$2" "$3" "$1"
  curl -s -XPOST "$URL" -H 'content-type: application/json' -H "x-api-key: $STORE_KEY" -H "x-event-id: $1" -d "$body"
  echo
}
run=$(date +%s)
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
"$BIN" mappings list demo-erp
echo
echo "what the mock provider received:"
tail -n 6 "$RUN/mock-provider.log"
echo
echo "== an operator's day: import a WooCommerce shop's orders into demo-erp =="
if ! "$BIN" integrations show default/demo-shop >/dev/null 2>&1; then
  echo '{"username": "ck_demo", "password": "cs_demo"}' > "$RUN/shop-credentials.json"
  "$BIN" integrations create --name demo-shop --provider rest --direction import --entities order \
    --credentials-file "$RUN/shop-credentials.json" --webhook-auth none --settings '{
      "base_url": "http://127.0.0.1:18080", "auth": {"type": "basic"},
      "test": {"method": "GET", "path": "/wp-json/wc/v3/orders"},
      "entities": {"order": {
        "create": {"method": "POST", "path": "/wp-json/wc/v3/orders"},
        "list": {"path": "/wp-json/wc/v3/orders", "since_param": "modified_after",
                 "query": {"per_page": "3", "orderby": "modified", "order": "asc"},
                 "version_pointer": "/date_modified_gmt",
                 "pagination": {"style": "page", "total_pages_header": "X-WP-TotalPages"}}}}}' >/dev/null
  rm -f "$RUN/shop-credentials.json"
  "$BIN" routes add --from demo-shop --entity order --to demo-erp
fi
echo "\$ switchyard integrations test demo-shop";     "$BIN" integrations test demo-shop
echo "\$ switchyard integrations activate demo-shop"; "$BIN" integrations activate demo-shop
echo "\$ switchyard integrations update demo-shop --schedule '{\"every\": \"daily\", \"at\": \"02:30\", \"timezone\": \"Europe/Lisbon\"}'"
"$BIN" integrations update demo-shop --schedule '{"every": "daily", "at": "02:30", "timezone": "Europe/Lisbon"}' \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  schedule:", json.dumps(d["schedule"]))'
echo "\$ switchyard sync start demo-shop --wait"
"$BIN" sync start demo-shop --wait
echo "\$ switchyard sync runs demo-shop";              "$BIN" sync runs demo-shop --limit 3
echo "\$ switchyard mappings show demo-erp --entity order --internal-id 503"
"$BIN" mappings show demo-erp --entity order --internal-id 503
echo
echo "Switchyard keeps running (pid $(cat "$RUN/switchyard.pid")); webhook URL: $URL"
echo "Management API token: $RUN/admin.token. Stop everything with: just down"
