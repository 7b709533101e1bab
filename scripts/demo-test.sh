#!/usr/bin/env bash
# Part of `just test`: the first-run experience. Runs `just up`'s demo twice in a row against
# the local services (its own database, ports, queue prefix and run folder, so a running
# `just up` is not disturbed), the second time with the run folder removed, as a second clone
# would. Each run must print the demo's check line, leave no dead job, and write logs
# without terminal escape codes.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEMO_RUN=target/demo-test/run
export DEMO_PORT=18181
export MOCK_PROVIDER_ADDR=127.0.0.1:18190
export SWITCHYARD_QUEUE_PREFIX=demotest.
export SWITCHYARD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchyard_demo_test
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS switchyard_demo_test WITH (FORCE)"

cargo build -q -p switchyard -p switchyard-tests --bin switchyard --bin mock-provider

stop() {
  for f in "$DEMO_RUN/switchyard.pid" "$DEMO_RUN/mock.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
}
trap stop EXIT

# What an earlier run leaves: pid files whose processes are gone.
mkdir -p "$DEMO_RUN"
true & gone=$!; wait "$gone"
echo "$gone" > "$DEMO_RUN/switchyard.pid"; echo "$gone" > "$DEMO_RUN/mock.pid"

failed=0
for round in 1 2; do
  [ "$round" = 2 ] && { stop; rm -rf "$DEMO_RUN"; }
  out=target/demo-test/round-$round.txt
  mkdir -p target/demo-test
  echo "demo-test: round $round (output in $out)"
  if ! scripts/demo.sh > "$out" 2>&1; then
    echo "demo-test: round $round: the demo failed:"; tail -30 "$out"; failed=1; break
  fi
  if ! grep -q '^demo check: ok' "$out"; then
    echo "demo-test: round $round: no check line"; tail -30 "$out"; failed=1; break
  fi
  dead=$(psql -h 127.0.0.1 -U postgres -d switchyard_demo_test -tAc "SELECT count(*) FROM jobs WHERE status = 'dead'")
  if [ "$dead" != 0 ]; then
    echo "demo-test: round $round: $dead dead job(s):"
    psql -h 127.0.0.1 -U postgres -d switchyard_demo_test -c "SELECT id, entity, internal_id, last_error FROM jobs WHERE status = 'dead'"
    failed=1; break
  fi
  for log in "$DEMO_RUN"/*.log; do
    if grep -q $'\e' "$log"; then
      echo "demo-test: round $round: $log contains terminal escape codes"; failed=1
    fi
  done
  grep -q '^  just down' "$out" || { echo "demo-test: round $round: no next steps"; failed=1; }
  grep -q '^The dashboard: http://127.0.0.1:[0-9]*/ui' "$out" || { echo "demo-test: round $round: no dashboard URL"; failed=1; }
  curl -fs "http://127.0.0.1:$DEMO_PORT/ui/login" | grep -q 'name="token"' \
    || { echo "demo-test: round $round: the dashboard's login page does not answer"; failed=1; }
  [ "$failed" = 0 ] || break
  echo "demo-test: round $round: $(grep '^demo check: ok' "$out")"
done
# The real binary refuses a provider at the cloud's metadata address (its egress policy),
# naming the setting, unless the operator allows it.
if [ "$failed" = 0 ]; then
  echo '{"token": "t"}' > target/demo-test/token.json
  settings='{"base_url": "http://169.254.169.254/latest", "auth": {"type": "bearer"}, "entities": {"order": {"create": {"method": "POST", "path": "/x"}}}}'
  if refused=$(SWITCHYARD_URL=http://127.0.0.1:$DEMO_PORT SWITCHYARD_TOKEN=$(cat "$DEMO_RUN/admin.token") \
      target/debug/switchyard integrations create \
      --name metadata-probe --provider rest --settings "$settings" \
      --credentials-file target/demo-test/token.json 2>&1); then
    echo "demo-test: a provider at 169.254.169.254 was accepted"; failed=1
  elif ! grep -q 'settings.base_url: 169.254.169.254 is a link-local' <<< "$refused"; then
    echo "demo-test: the refusal does not say why: $refused"; failed=1
  else
    echo "demo-test: egress: a provider at 169.254.169.254 is refused, naming settings.base_url"
  fi
fi
if [ "$failed" = 0 ]; then
  echo "demo-test: 2 passed, 0 failed"
else
  echo "demo-test: FAILED"
  exit 1
fi
