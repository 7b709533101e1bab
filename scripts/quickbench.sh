#!/usr/bin/env bash
# A quick throughput check on this machine: webhooks/s through `switchyard ingest` (wrk, 2
# threads, 64 connections, workers stopped), then jobs/s through one `switchyard worker`
# draining the queue into the provider (nginx from ../shared/bench) and Postgres.
# Not the full benchmark (latency percentiles, ratios to the broker's own ceiling): that is
# `just bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install -y nginx"; exit 1; }
[ -f ../shared/bench/nginx-mock.conf ] || { echo "../shared/bench is missing"; exit 1; }
cargo build --release -q -p switchyard
B=$PWD/target/release/switchyard
RUN=$PWD/.run/quick
mkdir -p "$RUN/tmp"
export SWITCHYARD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchyard_quick
export SWITCHYARD_QUEUE_PREFIX=quick.
export SWITCHYARD_LISTEN=127.0.0.1:8091
export RUST_LOG=warn
cleanup() {
  [ -n "${ING:-}" ] && kill "$ING" 2>/dev/null || true
  [ -n "${WRK:-}" ] && kill "$WRK" 2>/dev/null || true
  nginx -p "$RUN/" -c "$PWD/../shared/bench/nginx-mock.conf" -s quit 2>/dev/null || true
}
trap cleanup EXIT
nginx -p "$RUN/" -c "$PWD/../shared/bench/nginx-mock.conf" 2>/dev/null || true
psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS switchyard_quick WITH (FORCE)'
psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE switchyard_quick'
rabbitmqctl delete_queue quick.sy.q.rest >/dev/null 2>&1 || true
"$B" migrate >/dev/null
"$B" integrations create --name bench-store --provider webhook --status active --json \
  --inbound '{"entity": {"value": "order"}}' > "$RUN/store.json"
"$B" integrations create --name bench-target --provider rest --status active --webhook-auth none \
  --settings '{"base_url": "http://127.0.0.1:18080", "entities": {"order": {"create": {"method": "POST", "path": "/api/orders"}}}}' >/dev/null
"$B" routes add --from bench-store --entity order --to bench-target >/dev/null
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$RUN/store.json")
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhook_api_key"])' "$RUN/store.json")
TEMPLATE=$(cat ../shared/bench/order-template.json)
cat > "$RUN/post.lua" <<LUA
local template = [[$TEMPLATE]]
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
local n = 0
function request()
  n = n + 1
  local body = template:gsub("__N__", tid .. "-" .. n)
  return wrk.format("POST", "/v1/webhooks/$ID", {["Content-Type"] = "application/json", ["X-Api-Key"] = "$KEY"}, body)
end
LUA
"$B" ingest > "$RUN/ingest.log" 2>&1 & ING=$!
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:8091/readyz >/dev/null 2>&1 && break; sleep 0.2; done
echo "ingest: wrk -t2 -c64 -d$DURATION"
wrk -t2 -c64 -d"$DURATION" --latency -s "$RUN/post.lua" http://127.0.0.1:8091 | tee "$RUN/wrk.txt" | grep -E 'Requests/sec|Non-2xx|50%|99%|Socket'
kill "$ING"; wait "$ING" 2>/dev/null || true; ING=
N=$(psql -h 127.0.0.1 -U postgres -d switchyard_quick -tAc "SELECT count(*) FROM jobs")
echo "queued jobs: $N"
START=$(date +%s.%N)
"$B" worker > "$RUN/worker.log" 2>&1 & ING=$!
while :; do
  M=$(psql -h 127.0.0.1 -U postgres -d switchyard_quick -tAc "SELECT count(*) FROM id_mappings")
  [ "$M" -ge "$N" ] && break
  sleep 0.2
done
END=$(date +%s.%N)
python3 -c "import sys; n=int(sys.argv[1]); t=float(sys.argv[3])-float(sys.argv[2]); print(f'worker: {n} jobs in {t:.1f} s = {n/t:.0f} jobs/s')" "$N" "$START" "$END"
