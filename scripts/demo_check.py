#!/usr/bin/env python3
"""The end of `just up`: check that every job the demo caused settled as expected.

Waits (bounded) for the webhooks' jobs and the sync run to settle, then prints one line
saying so, or names each job that did not succeed, its last error and where the logs are,
and exits 1.
"""
import argparse
import json
import subprocess
import sys
import time

FINAL = {"succeeded", "dead", "stale", "skipped"}


def cli(binary, *args):
    out = subprocess.run([binary, *args, "--output", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`switchyard {' '.join(args)}` failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--jobs", required=True, help="a file with one job id a line")
    ap.add_argument("--sync-run", default="")
    ap.add_argument("--log", required=True)
    ap.add_argument("--mock-log", required=True)
    ap.add_argument("--since", required=True, help="when the demo started (RFC 3339, UTC)")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    ids = sorted({line.strip() for line in open(a.jobs) if line.strip()})
    deadline = time.monotonic() + a.timeout
    jobs, run = {}, None
    while True:
        jobs = {i: cli(a.bin, "jobs", "show", i)["job"] for i in ids}
        run = cli(a.bin, "sync", "show", a.sync_run) if a.sync_run else None
        settled = all(j["status"] in FINAL for j in jobs.values()) and (
            run is None or run["status"] not in ("pending", "running")
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    problems = []
    for i, j in jobs.items():
        if j["status"] != "succeeded":
            problems.append(
                f"job {i} ({j['entity']} {j['internal_id']}) is {j['status']}"
                + (f": {j['last_error']}" if j.get("last_error") else "")
                + f"  (see `{a.bin} jobs show {i}`)"
            )
    if a.sync_run and run is None:
        problems.append("the sync run could not be read")
    elif run is not None and (run["status"] != "succeeded" or run["failed"] or run["processed"] != run["total"]):
        problems.append(
            f"sync run {run['id']} is {run['status']}: {run['processed']} of {run['total']} jobs "
            f"processed, {run['failed']} failed" + (f"; {run['error']}" if run.get("error") else "")
        )
    # Whatever else this run set off (e.g. a sync job) must not be dead either.
    for j in cli(a.bin, "jobs", "list", "--status", "dead", "--limit", "100")["jobs"]:
        if j["created_at"] >= a.since and j["id"] not in jobs:
            problems.append(
                f"job {j['id']} ({j['entity']} {j['internal_id']}) is dead: {j.get('last_error')}"
                + f"  (see `{a.bin} jobs show {j['id']}`)"
            )
    if problems:
        print("demo check FAILED:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        print(f"  logs: {a.log} (Switchyard), {a.mock_log} (the mock provider)", file=sys.stderr)
        sys.exit(1)
    synced = f"; sync run {run['id']} succeeded ({run['total']} jobs)" if run else ""
    print(f"demo check: ok — all {len(jobs)} jobs the webhooks caused succeeded{synced}; nothing is dead.")


if __name__ == "__main__":
    main()
