#!/usr/bin/env python3
"""What the deployment files must say, checked by reading them (part of `just test`).

Run by scripts/deploy-check.sh after the manifests passed kubernetes-validate. Each failed
check is printed with the file and what to fix; the exit code is 1 if any failed.
"""
import re
import sys

import yaml

problems = []


def check(ok, where, what):
    if not ok:
        problems.append(f"{where}: {what}")


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --- Kubernetes -------------------------------------------------------------------------
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
objects = {}
for r in k["resources"]:
    for d in docs(f"deploy/k8s/{r}"):
        objects[(d["kind"], d["metadata"]["name"])] = (r, d)


def containers(d):
    spec = d["spec"]["template"]["spec"]
    return spec["containers"]


def env_names(c):
    return {e["name"] for e in c.get("env", [])}


def pod(kind, name):
    r, d = objects.get((kind, name), (None, None))
    check(d is not None, "deploy/k8s", f"no {kind} {name}")
    return r, d


config = objects.get(("ConfigMap", "switchyard"), (None, {"data": {}}))[1]["data"]
for name, needs_redis in [
    ("switchyard-api", True),
    ("switchyard-worker", True),
    ("switchyard-scheduler", True),
]:
    r, d = pod("Deployment", name)
    if d is None:
        continue
    for c in containers(d):
        env = env_names(c)
        for var in ["SWITCHYARD_DATABASE_URL", "SWITCHYARD_AMQP_URL", "SWITCHYARD_VAULT_KEYS"]:
            check(var in env, r, f"{name}: {var} is not set")
        if needs_redis:
            check(
                "SWITCHYARD_REDIS_URL" in env,
                r,
                f"{name}: SWITCHYARD_REDIS_URL is not set (breakers and limits would be per process)",
            )
        for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            got = c.get(probe, {}).get("httpGet", {}).get("path")
            check(got == path, r, f"{name}: {probe} should GET {path} (has {got})")
        check(
            c.get("securityContext", {}).get("runAsNonRoot") is True,
            r,
            f"{name}: runs as root",
        )
check("SWITCHYARD_HEALTH_LISTEN" in config, "deploy/k8s/config.yaml",
      "SWITCHYARD_HEALTH_LISTEN is not set: workers and schedulers would serve no probes")

r, sched = pod("Deployment", "switchyard-scheduler")
if sched:
    check(sched["spec"].get("replicas") == 2, r, "the scheduler should run two replicas (one leads)")
r, job = pod("Job", "switchyard-migrate")
if job:
    check(containers(job)[0].get("args") == ["migrate"], r, "the Job should run `switchyard migrate`")
r, hpa = pod("HorizontalPodAutoscaler", "switchyard-api")
if hpa:
    check(hpa["spec"]["scaleTargetRef"]["name"] == "switchyard-api", r, "the HPA should scale switchyard-api")
r, so = pod("ScaledObject", "switchyard-worker")
if so:
    check(so["spec"]["scaleTargetRef"]["name"] == "switchyard-worker", r, "KEDA should scale switchyard-worker")
    triggers = [t for t in so["spec"]["triggers"] if t["type"] == "rabbitmq"]
    check(triggers, r, "no rabbitmq trigger")
    for t in triggers:
        m = t["metadata"]
        pattern = re.compile(m["queueName"]) if m.get("useRegex") == "true" else None
        for queue in ["sy.q.rest", "sy.q.quickbooks-online", "sy.sync"]:
            check(
                (pattern and pattern.fullmatch(queue)) or m["queueName"] == queue,
                r,
                f"the trigger does not count {queue}",
            )
        check(not (pattern and pattern.fullmatch("sy.dlq.rest")), r, "the trigger counts dead letters")
        auth = t.get("authenticationRef", {}).get("name")
        check(("TriggerAuthentication", auth) in objects, r, f"no TriggerAuthentication {auth}")
for (kind, name), (r, d) in objects.items():
    if kind in ("Deployment", "Job"):
        for c in containers(d):
            check("SWITCHYARD_ADMIN_TOKEN" not in env_names(c) or name == "switchyard-api", r,
                  f"{name}: only the API needs the admin token")

# --- Compose ----------------------------------------------------------------------------
compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose["services"]
for name in ["ingest", "worker", "scheduler"]:
    s = services.get(name)
    check(s is not None, "deploy/compose.yaml", f"no service {name}")
    if s is None:
        continue
    env = s.get("environment", {})
    check("SWITCHYARD_REDIS_URL" in env, "deploy/compose.yaml",
          f"{name}: SWITCHYARD_REDIS_URL is not set (breakers and limits would be per process)")
    check("redis" in s.get("depends_on", {}), "deploy/compose.yaml", f"{name}: does not wait for redis")
for name, s in services.items():
    if name != "migrate":
        check("healthcheck" in s, "deploy/compose.yaml", f"{name}: no healthcheck")
    for p in s.get("ports", []):
        check("15672" not in str(p), "deploy/compose.yaml", f"{name}: publishes RabbitMQ's management port")
rabbit = services.get("rabbitmq", {})
check(rabbit.get("environment", {}).get("RABBITMQ_DEFAULT_USER", "guest") != "guest",
      "deploy/compose.yaml", "RabbitMQ runs with its guest user")

if problems:
    print("deploy-check FAILED:", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"deploy-check: ok ({len(objects)} Kubernetes objects, {len(services)} compose services)")
