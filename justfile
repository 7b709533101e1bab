# Switchyard's two commands: `just up` (the whole system with a demo) and `just test`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Start PostgreSQL, RabbitMQ and Redis if they are not running (installs missing ones as root).
services:
    scripts/services.sh

# Run the whole system with a demo: services, migrations, `switchyard all`, sample webhooks.
up: services
    cargo build -p switchyard -p switchyard-tests --bin switchyard --bin mock-provider
    scripts/demo.sh

# Stop what `just up` started.
down:
    -kill $(cat .run/switchyard.pid 2>/dev/null) 2>/dev/null
    -kill $(cat .run/mock.pid 2>/dev/null) 2>/dev/null
    rm -f .run/switchyard.pid .run/mock.pid
    @echo "stopped"

# Every check and every test: formatting, lints, unit tests, end-to-end and failure suites,
# and the demo run twice (the first-run experience).
test: services
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace --exclude switchyard-tests
    cargo build -p switchyard --bin switchyard
    scripts/browser-setup.sh
    scripts/watched-suite.sh e2e
    scripts/schemathesis.sh
    scripts/deploy-check.sh
    scripts/watched-suite.sh chaos -- --test-threads=1
    scripts/demo-test.sh

# The fault suite alone, with its table: two tenants' webhooks through real worker processes
# while workers are SIGKILLed, PostgreSQL restarts, Redis stops, a provider flaps and hangs,
# and a local 3-node RabbitMQ cluster loses its queue leader (about 2 minutes; as root, since
# it restarts the machine's PostgreSQL and Redis). `just test` runs it too, quietly.
faults: services
    cargo build -p switchyard --bin switchyard
    cargo test -p switchyard-tests --test chaos faults -- --test-threads=1 --nocapture

# Dependency checks (cargo-deny): licenses, bans, sources; advisories when the advisory
# database can be fetched (it comes from GitHub, which our machines cannot reach).
deny:
    command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
    cargo deny check licenses bans sources
    -cargo deny check advisories

# The benchmark (release build, real services, ../shared/bench's workload): the broker's own
# ceiling, ingest at c64/c256 and at a fixed rate, processing, end to end, memory. Last line:
# JSON. Needs nginx (`apt-get install -y nginx`); about 5 minutes.
bench: services
    command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)
    cargo build --release -p switchyard -p switchyard-bench
    target/release/switchyard-bench

# The API against its OpenAPI description (schemathesis, from PyPI), as the admin and as a
# tenant: no 5xx, every answer as described. About a minute.
api-check: services
    cargo build -p switchyard --bin switchyard
    scripts/schemathesis.sh

# Format the code.
fmt:
    cargo fmt --all
