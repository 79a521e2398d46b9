#!/usr/bin/env python3
"""Time of an upgrade and a rollback on the reference release, and the seconds the gateway
and the config endpoint went without a 200 meanwhile.

    python benchmarks/upgrade/bench.py -i INVENTORY --host HOST --gateway http://127.0.0.1:PORT \
        [--from v1.0.0] [--to v1.1.0]

HOST is a disposable Docker-in-Docker test host (never this machine's own install) with
PayCraft --from installed by site.yml and its Kong published on 127.0.0.1 (--gateway).
The bench runs `upgrade.yml -e paycraft_version=--to`, then `rollback.yml
-e paycraft_rollback_version=--from`, each timed; during each, two probe loops poll
--gateway's /auth/v1/health and /functions/v1/config?apiKey=<the smoke tenant's key>
every --interval seconds (loopback only; at most --max-probes requests per loop and
--max-seconds per run: the loops stop by themselves).

Baseline, in the same run and on the same host: runbook section 8 done by hand, as an
operator does it today (pg_dump, git checkout, ./migrations-bootstrap.sh, docker compose
pull, docker compose up -d --no-deps dashboard edge-runtime; and its "Rolling back": down,
volume rm, up db, sleep 10, pg_restore --clean --if-exists, checkout, up -d), timed and probed
the same way. Prints a table with each operation's ratio to its runbook baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def host_sh(host: str, cmd: list[str]) -> str:
    return subprocess.run(["docker", "exec", host, *cmd], check=True, capture_output=True, text=True).stdout.strip()


class Probe(threading.Thread):
    """Polls one URL; sums the time between the first non-200 and the next 200."""

    def __init__(self, name, url, headers, interval, max_probes, deadline):
        super().__init__(daemon=True)
        self.name, self.url, self.headers = name, url, headers
        self.interval, self.max_probes, self.deadline = interval, max_probes, deadline
        self.stop = threading.Event()
        self.count = 0
        self.failures = 0
        self.down_seconds = 0.0
        self.longest = 0.0

    def ok(self) -> bool:
        req = urllib.request.Request(self.url, headers=self.headers)  # noqa: S310 - a loopback http URL (checked)
        try:
            with urllib.request.urlopen(req, timeout=2) as res:  # noqa: S310
                return res.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def run(self):
        down_since = None
        while not self.stop.is_set() and self.count < self.max_probes and time.monotonic() < self.deadline:
            t = time.monotonic()
            good = self.ok()
            self.count += 1
            if not good:
                self.failures += 1
                down_since = down_since if down_since is not None else t
            elif down_since is not None:
                span = t - down_since
                self.down_seconds += span
                self.longest = max(self.longest, span)
                down_since = None
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))
        if down_since is not None:
            span = time.monotonic() - down_since
            self.down_seconds += span
            self.longest = max(self.longest, span)


def probed(probes, argv, **kw):
    """Runs argv while the probe loops poll; returns (seconds, the finished process)."""
    for p in probes:
        p.start()
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    elapsed = time.monotonic() - t0
    time.sleep(1.0)
    for p in probes:
        p.stop.set()
        p.join()
    return elapsed, res


def run_playbook(inventory, playbook, extra, probes):
    elapsed, res = probed(probes, [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
                                   os.path.join(REPO, "playbooks", playbook), *extra], cwd=REPO)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:])
        raise SystemExit(f"{playbook} failed (rc {res.returncode})")
    return elapsed

RUNBOOK_COMPOSE = ("docker compose -p selfhost -f docker-compose.yaml -f /etc/paycraft/compose.override.yml"
                   " --env-file /etc/paycraft/paycraft.env")


def runbook_script(kind: str, version: str) -> str:
    """Runbook section 8 on a host the collection installed: the same commands, with the
    collection's env file and compose override in place of infra/selfhost/.env."""
    head = ("set -euo pipefail; set -a; . /etc/paycraft/paycraft.env; set +a; "
            "mkdir -p /root/backups; cd /opt/paycraft/src; ")
    c = RUNBOOK_COMPOSE
    if kind == "upgrade":
        return head + (
            "docker exec paycraft_db pg_dump -U postgres -Fc postgres > /root/backups/bench.dump; "
            f"git checkout -q {version}; cd infra/selfhost; ./migrations-bootstrap.sh; "
            f"{c} pull -q; {c} up -d --no-deps dashboard edge-runtime")
    return head + (
        f"cd infra/selfhost; {c} down; docker volume rm selfhost_paycraft-db; {c} up -d db; sleep 10; "
        "until docker exec paycraft_db pg_isready -U postgres -q; do sleep 1; done; "
        "cat /root/backups/bench.dump | docker exec -i paycraft_db pg_restore -U postgres -d postgres"
        " --clean --if-exists || true; "  # the runbook's restore over a fresh volume reports already-present objects
        f"git checkout -q {version}; {c} up -d")


def run_runbook(host, kind, version, probes):
    elapsed, res = probed(probes, ["docker", "exec", host, "bash", "-c", runbook_script(kind, version)])
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"runbook {kind} failed (rc {res.returncode})")
    return elapsed

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--inventory", required=True)
    ap.add_argument("--host", required=True, help="the DinD test host (container name = inventory host)")
    ap.add_argument("--gateway", required=True, help="Kong as published on loopback, e.g. http://127.0.0.1:26411")
    ap.add_argument("--from", dest="from_version", default="v1.0.0")
    ap.add_argument("--to", dest="to_version", default="v1.1.0")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--max-probes", type=int, default=20000)
    ap.add_argument("--max-seconds", type=float, default=2400)
    args = ap.parse_args()
    if not args.gateway.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
        raise SystemExit("--gateway must be a loopback URL (the probe loops go to loopback only)")
    if args.host.startswith("paycraft_") or args.host in ("localhost", "selfhost"):
        raise SystemExit("--host must be a disposable test host, never this machine's install")

    env = host_sh(args.host, ["cat", "/etc/paycraft/paycraft.env"])
    anon = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("PAYCRAFT_ANON_KEY="))
    key = json.loads(host_sh(args.host, ["cat", "/etc/paycraft/smoke-user.json"])).get("api_key", "")
    if not key:
        key = host_sh(args.host, ["docker", "exec", "paycraft_db", "psql", "-U", "postgres", "-tAXc",
                                  "SELECT api_key_test FROM tenants WHERE status = 'active' LIMIT 1"])
    headers = {"apikey": anon}
    ops = (
        ("collection", f"upgrade {args.from_version} -> {args.to_version}",
         lambda pr: run_playbook(args.inventory, "upgrade.yml", ["-e", f"paycraft_version={args.to_version}"], pr)),
        ("collection", f"rollback {args.to_version} -> {args.from_version}",
         lambda pr: run_playbook(args.inventory, "rollback.yml",
                                 ["-e", f"paycraft_rollback_version={args.from_version}"], pr)),
        ("runbook by hand", f"upgrade {args.from_version} -> {args.to_version}",
         lambda pr: run_runbook(args.host, "upgrade", args.to_version, pr)),
        ("runbook by hand", f"rollback {args.to_version} -> {args.from_version}",
         lambda pr: run_runbook(args.host, "rollback", args.from_version, pr)),
    )
    rows = []
    for who, label, run in ops:
        deadline = time.monotonic() + args.max_seconds
        probes = [
            Probe("gateway /auth/v1/health", f"{args.gateway}/auth/v1/health", headers, args.interval,
                  args.max_probes, deadline),
            Probe("config endpoint", f"{args.gateway}/functions/v1/config?apiKey={key}", headers, args.interval,
                  args.max_probes, deadline),
        ]
        elapsed = run(probes)
        for p in probes:
            rows.append((who, label, elapsed, p.name, p.count, p.failures, p.down_seconds, p.longest))

    base = {(label, name): elapsed for who, label, elapsed, name, *_ in rows if who == "runbook by hand"}
    print("| how | operation | seconds | x runbook | endpoint | probes | non-200 | seconds without a 200"
          " | longest gap |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    for who, label, elapsed, name, count, failures, down, longest in rows:
        ratio = elapsed / base[(label, name)] if base.get((label, name)) else float("nan")
        print(f"| {who} | {label} | {elapsed:.1f} | {ratio:.2f} | {name} | {count} | {failures} | {down:.1f}"
              f" | {longest:.1f} |")
    print("\nThe runbook's upgrade recreates nothing it does not have to (`up -d --no-deps` without --force-recreate:"
          " the new function code may not run) and its rollback is offline (`docker compose down`).")

if __name__ == "__main__":
    main()
