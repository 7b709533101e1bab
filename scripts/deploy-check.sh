#!/usr/bin/env bash
# The deployment files, checked without a cluster or a Docker engine: every Kubernetes
# manifest in deploy/k8s validated against the Kubernetes API's schemas
# (kubernetes-validate, from PyPI, strict), then what they must say checked by
# scripts/deploy_check.py (Redis wired into every service that shares breakers and limits,
# probes, the scheduler's two replicas, workers scaled on queue depth, migrations as a Job,
# compose's healthchecks and unpublished broker management). `docker compose config` runs
# too where Docker's compose plugin exists.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/deploy-check/venv
VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "deploy-check: installing kubernetes-validate $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "kubernetes-validate==$VERSION" pyyaml
fi
resources=$("$VENV/bin/python" -c '
import yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
print(" ".join("deploy/k8s/" + r for r in k["resources"]))')
# shellcheck disable=SC2086
"$VENV/bin/kubernetes-validate" --strict --quiet $resources
"$VENV/bin/python" scripts/deploy_check.py
if docker compose version >/dev/null 2>&1; then
  SWITCHYARD_VAULT_KEYS=k:x SWITCHYARD_ADMIN_TOKEN=x RABBITMQ_PASSWORD=x \
    docker compose -f deploy/compose.yaml config -q
  echo "deploy-check: docker compose config: valid"
else
  echo "deploy-check: no docker compose here; compose.yaml was read and checked above"
fi
