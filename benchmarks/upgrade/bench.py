#!/usr/bin/env python3
"""Time of an upgrade and a rollback on the reference release, the seconds the gateway and the config
endpoint went without a 200 meanwhile, and what a client that keeps writing saw, against the runbook's
section 8 done by hand in the same run.

    python benchmarks/upgrade/bench.py [--gib 0,1] [--load 0,4] [--from v1.0.0] [--to v1.1.0]
    python benchmarks/upgrade/bench.py --existing -i INVENTORY --host HOST --gateway http://127.0.0.1:PORT

By default the bench starts its own disposable Docker-in-Docker host per database size
(tests/paycraft_dind.py: its own dockerd, the reference images loaded, never this machine's install),
installs --from with site.yml, and for a --gib above 0 grows the database to that size through the
release's own schema (tenants and products, benchmarks/backup's generator). Then for each --load (0:
at rest; N: N bounded CPU-burning processes beside the operation, stopped with it) it runs, in order:

  collection       upgrade.yml -e paycraft_version=--to
  collection       rollback.yml -e paycraft_rollback_version=--from
  runbook by hand  pg_dump, git checkout, ./migrations-bootstrap.sh, compose pull, up -d --no-deps
                   dashboard edge-runtime
  runbook by hand  down, volume rm, up -d db, sleep 10, pg_restore --clean --if-exists, checkout, up -d

During each: two probe loops poll the gateway's /auth/v1/health and /functions/v1/config?apiKey=<the
smoke tenant's key> every --interval seconds, and tests/paycraft_writer.py inserts a product every 0.1 s
through the gateway as a signed-in user (loopback only; every loop is bounded in count and time). Per
operation the table gives wall seconds, the ratio to the runbook's same operation, seconds without a
200 and the longest gap per endpoint, the writes acknowledged, held back (503 from the write hold) or
refused otherwise, and the acknowledged writes missing afterwards. A rollback returns the data to its
snapshot by design: for the collection's, the writes acknowledged after its write hold (``writes_held_at``
of its record) must all be present, and the ones before it are in the copy it keeps; the runbook's has
neither. After each collection operation, the steps of its record (/etc/paycraft/operation.json) with
the seconds each took, so the difference to the baseline can be read step by step.

--existing runs the same four operations once on a host you installed yourself (a disposable one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

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


def runbook_script(kind: str, version: str, pull: bool = True) -> str:
    """Runbook section 8 on a host the collection installed: the same commands, with the
    collection's env file and compose override in place of infra/selfhost/.env."""
    head = ("set -euo pipefail; set -a; . /etc/paycraft/paycraft.env; set +a; "
            "mkdir -p /root/backups; cd /opt/paycraft/src; ")
    c = RUNBOOK_COMPOSE
    if kind == "upgrade":
        return head + (
            "docker exec paycraft_db pg_dump -U postgres -Fc postgres > /root/backups/bench.dump; "
            f"git checkout -q {version}; cd infra/selfhost; ./migrations-bootstrap.sh; "
            + (f"{c} pull -q; " if pull else "") + f"{c} up -d --no-deps dashboard edge-runtime")
    return head + (
        f"cd infra/selfhost; {c} down; docker volume rm selfhost_paycraft-db; {c} up -d db; sleep 10; "
        "until docker exec paycraft_db pg_isready -U postgres -q; do sleep 1; done; "
        "cat /root/backups/bench.dump | docker exec -i paycraft_db pg_restore -U postgres -d postgres"
        " --clean --if-exists || true; "  # the runbook's restore over a fresh volume reports already-present objects
        f"git checkout -q {version}; {c} up -d")


def run_runbook(host, kind, version, probes, pull=True):
    elapsed, res = probed(probes, ["docker", "exec", host, "bash", "-c", runbook_script(kind, version, pull)])
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"runbook {kind} failed (rc {res.returncode})")
    return elapsed

WRITER = os.path.join(REPO, "tests", "paycraft_writer.py")
WRITER_EMAIL, WRITER_PASSWORD = "bench-writer@paycraft-bench.invalid", "pw-bench-writer-Secret!"
ANSIBLE_ENV = {"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_utc(text: str) -> float:
    return time.mktime(time.strptime(text.strip()[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


class Load:
    """N processes that burn a CPU each, bounded by time; stopped with the operation they run beside."""

    def __init__(self, procs: int, max_seconds: float):
        burn = f"import time\nend = time.monotonic() + {max_seconds}\nwhile time.monotonic() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(procs)]

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


class Writer:
    """tests/paycraft_writer.py through the gateway: a product every 0.1 s as a signed-in user; the keys
    of the writes that got a 2xx kept in a file."""

    def __init__(self, work: str, case: str, gateway: str, anon: str, max_seconds: float):
        self.case = case
        self.acked = os.path.join(work, f"{case}.acked")
        self.stop_file = self.acked + ".stop"
        anon_file = os.path.join(work, "anon.key")
        with open(anon_file, "w", encoding="utf-8") as fh:
            fh.write(anon)
        self.proc = subprocess.Popen(
            [sys.executable, WRITER, "run", "--api-url", gateway, "--anon-key-file", anon_file, "--email", WRITER_EMAIL,
             "--password", WRITER_PASSWORD, "--out", self.acked, "--prefix", case, "--stop-file", self.stop_file,
             "--max-seconds", str(max_seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 300
        while not os.path.exists(self.acked + ".ready"):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the writer did not start: {self.proc.communicate()[0][-2000:]}")
            time.sleep(0.3)

    def stop(self) -> dict:
        with open(self.stop_file, "w", encoding="utf-8"):
            pass
        out, _ = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            raise SystemExit(f"the writer failed: {out[-2000:]}")
        with open(self.acked + ".summary.json", encoding="utf-8") as fh:
            return json.load(fh)

    def missing(self, present: str, since: str = "") -> dict:
        res = subprocess.run([sys.executable, WRITER, "check", "--acked", self.acked, *(["--since", since] if since
                                                                                         else [])],
                             input=present, capture_output=True, text=True, timeout=120)
        return json.loads(res.stdout)


def db_psql(host: str, sql: str, stdin: str | None = None) -> str:
    argv = ["docker", "exec", "-i", host, "docker", "exec", "-i", "paycraft_db", "psql", "-U", "postgres", "-d",
            "postgres", "-tAX", "-v", "ON_ERROR_STOP=1"]
    res = subprocess.run(argv + (["-c", sql] if sql else []), input=stdin, capture_output=True, text=True,
                         check=False, timeout=7200)
    if res.returncode != 0:
        raise SystemExit(f"psql on {host} failed: {res.stderr[-2000:]}")
    return res.stdout


def record(host: str) -> dict:
    try:
        return json.loads(host_sh(host, ["cat", "/etc/paycraft/operation.json"]))
    except (subprocess.CalledProcessError, ValueError):
        return {}


def step_lines(rec: dict, started: float, ended: float) -> list[str]:
    """Seconds per recorded step: from a step's first entry to the next step's (whole seconds, as recorded),
    with the time before the first step (lock, preflight, checks) and after the record's finish."""
    marks, seen = [], set()
    for entry in rec.get("steps", []):
        if entry["name"] not in seen:
            seen.add(entry["name"])
            marks.append((entry["name"], parse_utc(entry["at"])))
    if not marks:
        return ["  (no steps recorded)"]
    finished = parse_utc(rec["finished_at"]) if rec.get("finished_at") else ended
    lines = [f"  before the first step (lock, preflight, checks): {marks[0][1] - started:.0f} s"]
    for i, (name, at) in enumerate(marks):
        nxt = marks[i + 1][1] if i + 1 < len(marks) else finished
        lines.append(f"  {name}: {nxt - at:.0f} s")
    lines.append(f"  after the record's finish (summary, lock release, ansible's exit): {ended - finished:.0f} s")
    return lines


def run_case(args, host, gateway, anon, key, inventory, size_label, load):
    """The four operations at one size and one load; returns table rows and the step breakdowns."""
    headers = {"apikey": anon}
    work = args.work
    extra = [a for kv in args.extra_vars for a in ("-e", kv)]
    ops = (
        ("collection", "upgrade", lambda pr: run_playbook(inventory, "upgrade.yml",
                                                          ["-e", f"paycraft_version={args.to_version}", *extra], pr)),
        ("collection", "rollback", lambda pr: run_playbook(inventory, "rollback.yml",
                                                           ["-e", f"paycraft_rollback_version={args.from_version}",
                                                            *extra], pr)),
        ("runbook by hand", "upgrade", lambda pr: run_runbook(host, "upgrade", args.to_version, pr, args.pull)),
        ("runbook by hand", "rollback", lambda pr: run_runbook(host, "rollback", args.from_version, pr)),
    )
    rows, breakdowns = [], []
    for n, (who, kind, run) in enumerate(ops):
        case = f"b{int(time.time())}{n}"
        writer = Writer(work, case, gateway, anon, args.max_seconds)
        deadline = time.monotonic() + args.max_seconds
        probes = [Probe(name, url, headers, args.interval, args.max_probes, deadline) for name, url in (
            ("gateway", f"{gateway}/auth/v1/health"),
            ("config", f"{gateway}/functions/v1/config?apiKey={key}"))]
        burner = Load(load, args.max_seconds) if load else None
        started = time.time()
        try:
            elapsed = run(probes)
            loadavg = os.getloadavg()[0]
        finally:
            if burner:
                burner.stop()
        ended = time.time()
        summary = writer.stop()
        present = db_psql(host, f"SELECT sku FROM public.products WHERE sku LIKE '{case}-%'")
        rec = record(host) if who == "collection" else {}
        since = rec.get("writes_held_at", "") if kind == "rollback" else ""
        counts = writer.missing(present)
        lost = str(counts["missing"])
        if since:
            after = writer.missing(present, since)
            lost += f" ({after['missing']} of {after['acknowledged']} after the hold)"
        refused = dict(summary["refused"])
        held = refused.pop("503", 0)
        rows.append({"size": size_label, "load": load, "loadavg": loadavg, "who": who, "op": kind,
                     "seconds": elapsed, "probes": probes, "acked": summary["acknowledged"], "held": held,
                     "refused": sum(refused.values()), "lost": lost})
        if who == "collection":
            breakdowns.append((f"{size_label}, load {load}: {kind} ({elapsed:.0f} s)",
                               step_lines(rec, started, ended)))
        print(f"  {size_label}, load {load}: {who} {kind} {elapsed:.1f} s, load average {loadavg:.1f}; "
              + ", ".join(f"{p.name} {p.down_seconds:.1f} s without a 200" for p in probes)
              + f"; writes acknowledged {summary['acknowledged']}, held back {held}, lost {lost}", flush=True)
    return rows, breakdowns


def print_table(rows, breakdowns):
    base = {(r["size"], r["load"], r["op"]): r["seconds"] for r in rows if r["who"] == "runbook by hand"}
    print("\n| size | load procs (load avg) | how | operation | seconds | x runbook | gateway: s without 200"
          " (longest) | config: s without 200 (longest) | writes acked | held back (503) | other refusals"
          " | acked then missing |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        b = base.get((r["size"], r["load"], r["op"]))
        ratio = f"{r['seconds'] / b:.2f}" if b else "-"
        gw, cf = r["probes"]
        print(f"| {r['size']} | {r['load']} ({r['loadavg']:.1f}) | {r['who']} | {r['op']} | {r['seconds']:.1f}"
              f" | {ratio}"
              f" | {gw.down_seconds:.1f} ({gw.longest:.1f}) | {cf.down_seconds:.1f} ({cf.longest:.1f})"
              f" | {r['acked']} | {r['held']} | {r['refused']} | {r['lost']} |")
    print("\nWhere the collection's time goes (its record's steps; whole seconds as recorded):")
    for title, lines in breakdowns:
        print(title)
        print("\n".join(lines))


def secrets_of(host: str) -> tuple[str, str]:
    env = host_sh(host, ["cat", "/etc/paycraft/paycraft.env"])
    anon = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("PAYCRAFT_ANON_KEY="))
    key = json.loads(host_sh(host, ["cat", "/etc/paycraft/smoke-user.json"])).get("api_key", "")
    if not key:
        key = db_psql(host, "SELECT api_key_test FROM tenants WHERE status = 'active' LIMIT 1").strip()
    return anon, key


def grow(host: str, gib: float) -> str:
    """The database to at least ``gib`` GiB through the release's schema (benchmarks/backup's generator)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from backup.bench import GENERATE
    base, t0 = 0, time.monotonic()
    while int(db_psql(host, "SELECT pg_database_size('postgres')")) < gib * (1 << 30):
        db_psql(host, "", stdin=GENERATE.format(base=base + 1_000_000_000, tenants=20_000, products=400_000))
        base += 400_000
    db_psql(host, "VACUUM ANALYZE")
    size = int(db_psql(host, "SELECT pg_database_size('postgres')"))
    label = f"{size / (1 << 30):.2f} GiB"
    print(f"  database grown to {label} in {time.monotonic() - t0:.0f} s", flush=True)
    return label


def provisioned(args, gib: float):
    """A disposable DinD host with --from installed (and grown to ``gib``): (host object, inventory)."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    sys.path.insert(0, os.path.join(REPO, "tests", "integration", "reference"))
    from conftest_release import SERVICES, make_release, reference_host_vars, require_playbook_on_dind
    from paycraft_dind import DindHost

    compose_src = require_playbook_on_dind()
    origin = os.path.join(args.work, "paycraft.git")
    if not os.path.isdir(origin):
        make_release(Path(origin))
    host = DindHost(Path(args.work), name=f"paycraft-bench-upgrade-{os.getpid()}-{int(gib * 10)}")
    host.start()
    try:
        t0 = time.monotonic()
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        inventory = os.path.join(args.work, f"inventory-{host.name}.json")
        with open(inventory, "w", encoding="utf-8") as fh:
            json.dump({"paycraft": {"hosts": {host.name: reference_host_vars(
                origin, compose_src, version=args.from_version, paycraft_backup_scheduler="none",
                paycraft_backup_install_packages=False)}}}, fh)
        run_playbook(inventory, "site.yml", [], [])
        print(f"  host {host.name}: {args.from_version} installed in {time.monotonic() - t0:.0f} s", flush=True)
        label = grow(host.name, gib) if gib > 0 else "demo data"
        return host, inventory, label
    except BaseException:
        host.remove()
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", default="0,1", help="database sizes, comma separated (0: the demo data)")
    ap.add_argument("--load", default="0,4", help="CPU-burning processes beside each operation, comma separated")
    ap.add_argument("--existing", action="store_true", help="use -i/--host/--gateway: a host you installed")
    ap.add_argument("-i", "--inventory")
    ap.add_argument("--host", help="with --existing: the DinD test host (container name = inventory host)")
    ap.add_argument("--gateway", help="with --existing: Kong as published on loopback, e.g. http://127.0.0.1:26411")
    ap.add_argument("--from", dest="from_version", default="v1.0.0")
    ap.add_argument("--to", dest="to_version", default="v1.1.0")
    ap.add_argument("-e", "--extra-vars", action="append", default=[],
                    help="to the collection's upgrade.yml and rollback.yml (paycraft_release_rollback_beside=true)")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--max-probes", type=int, default=20000)
    ap.add_argument("--max-seconds", type=float, default=2400, help="bound of every loop, writer and load process")
    ap.add_argument("--no-pull", dest="pull", action="store_false",
                    help="skip the runbook's `docker compose pull` (implied without --existing: the images are local,"
                         " as the collection's paycraft_stack_pull: never)")
    ap.add_argument("--work", default="", help="a directory for the release, inventories and writer files")
    args = ap.parse_args()
    # a SIGTERM still removes the disposable host (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(ANSIBLE_ENV)
    args.work = args.work or tempfile.mkdtemp(prefix="paycraft-bench-upgrade-", dir="/var/tmp")
    loads = [int(x) for x in args.load.split(",") if x.strip()]
    rows, breakdowns = [], []
    if args.existing:
        if not (args.inventory and args.host and args.gateway):
            raise SystemExit("--existing needs -i, --host and --gateway")
        if not args.gateway.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
            raise SystemExit("--gateway must be a loopback URL (the probe loops go to loopback only)")
        if args.host.startswith("paycraft_") or args.host in ("localhost", "selfhost"):
            raise SystemExit("--host must be a disposable test host, never this machine's install")
        anon, key = secrets_of(args.host)
        for load in loads:
            r, b = run_case(args, args.host, args.gateway, anon, key, args.inventory, "as installed", load)
            rows += r
            breakdowns += b
    else:
        args.pull = False
        for gib in (float(x) for x in args.gib.split(",") if x.strip()):
            host, inventory, label = provisioned(args, gib)
            try:
                anon, key = secrets_of(host.name)
                for load in loads:
                    r, b = run_case(args, host.name, host.url(54321), anon, key, inventory, label, load)
                    rows += r
                    breakdowns += b
            finally:
                host.remove()
    print(f"\nmachine: {os.cpu_count()} CPUs; every operation measured on the same host in the same run")
    print_table(rows, breakdowns)
    print("\nThe runbook's upgrade recreates nothing it does not have to (`up -d --no-deps` without --force-recreate:"
          " the new function code may not run) and its rollback is offline (`docker compose down`); it holds no"
          " write back, so a write it acknowledged before its restore is gone. A rollback returns the data to its"
          " snapshot by design: the collection keeps the database it replaced as a named copy.")


if __name__ == "__main__":
    main()
