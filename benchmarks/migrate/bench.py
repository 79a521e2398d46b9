"""Benchmark paycraft_migrate against the runbook's bash applier and a single-psql floor.

Run by hand (root, PostgreSQL 15 server binaries installed, the project's virtualenv active):

    python benchmarks/migrate/bench.py [--reps 3]

It starts its own throw-away PostgreSQL 15 cluster on a free loopback port (initdb as user
postgres, like tests/conftest.py), generates the corpora (benchmarks/migrate/corpus.py), and
measures in the same run:

  apply 70 realistic migrations to an empty database
    floor   all files concatenated through ONE psql process
    bash    tests/integration/migrate/migrations-bootstrap.sh (runbook section 4)
    engine  module_utils.migrate in-process, and in its own python process
    module  ansible localhost -m paycraft.selfhost.paycraft_migrate
  nothing to apply, 1000 synthetic migrations already in the ledger
    bash, engine (in-process and own process), module

Median wall time of --reps runs each; a fresh database per apply run (created outside the
timing). Prints a table with ratios and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOOTSTRAP_SH = REPO / "tests" / "integration" / "migrate" / "migrations-bootstrap.sh"
RUN_ENGINE = REPO / "tests" / "integration" / "migrate" / "run_engine.py"
PG_BIN = Path(os.environ.get("PAYCRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))
COLLECTIONS = Path(os.environ.get("ANSIBLE_COLLECTIONS_PATH", REPO / ".venv" / "collections")).resolve()
sys.path.insert(0, str(HERE))
sys.path.insert(0, os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections")))

import corpus  # noqa: E402
import psycopg2  # noqa: E402
from ansible_collections.paycraft.selfhost.plugins.module_utils import migrate  # noqa: E402


def _as_postgres(cmd):
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="paycraft-bench-pg-"))
        self.password = uuid.uuid4().hex
        self.port = free_port()

    def start(self):
        data, sock, pw = self.base / "data", self.base / "sock", self.base / "pw"
        sock.mkdir()
        pw.write_text(self.password + "\n")
        if os.getuid() == 0:
            for p in (self.base, sock, pw):
                shutil.chown(p, "postgres")
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pw),
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ]
        )
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.base / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port} -h 127.0.0.1 -k {sock} -c fsync=off",
                "start",
            ]
        )

    def stop(self):
        try:
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def params(self, dbname="postgres"):
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres", "password": self.password, "dbname": dbname}

    def admin(self, sql):
        conn = psycopg2.connect(**self.params())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    def fresh_db(self):
        name = f"b_{uuid.uuid4().hex[:10]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return self.params(name)


def pg_env(params):
    return {
        **os.environ,
        "PGHOST": params["host"],
        "PGPORT": str(params["port"]),
        "PGUSER": params["user"],
        "PGDATABASE": params["dbname"],
        "PGPASSWORD": params["password"],
        "PAYCRAFT_DB_PASSWORD": params["password"],
        "PAYCRAFT_COLLECTIONS_ROOT": str(COLLECTIONS),
    }


def run(cmd, env, **kw):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {cmd[:3]}...\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def m_floor(params, mdir, work):
    allsql = work / f"all-{mdir.name}.sql"
    if not allsql.exists():
        allsql.write_text("".join(p.read_text() for p in sorted(mdir.glob("*.sql"))))
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(allsql)], pg_env(params))


def m_bash(params, mdir, work):
    return run(["bash", str(BOOTSTRAP_SH)], {**pg_env(params), "MIGRATIONS_DIR": str(mdir)}).strip().splitlines()[-1]


def m_engine(params, mdir, work):
    return migrate.run(params, str(mdir)).summary


def m_engine_proc(params, mdir, work):
    return json.loads(run([sys.executable, str(RUN_ENGINE), str(mdir)], pg_env(params)))["summary"]


def m_module(params, mdir, work):
    vars_file = work / "vars.json"
    vars_file.write_text(json.dumps({"pw": params["password"]}))
    args = (
        f"migrations_dir={mdir} login_host={params['host']} login_port={params['port']} "
        f"login_user={params['user']} login_db={params['dbname']} login_password={{{{ pw }}}}"
    )
    env = {
        **pg_env(params),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    }
    out = run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-m",
            "paycraft.selfhost.paycraft_migrate",
            "-a",
            args,
            "-e",
            f"@{vars_file}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        env,
        cwd=str(REPO),
    )
    return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["localhost"]["summary"]


def objects(params):
    conn = psycopg2.connect(**params)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relname NOT LIKE '\\_paycraft%'), (SELECT count(*) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace), (SELECT count(*) FROM pg_policy), "
            "(SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal)"
        )
        got = cur.fetchone()
    conn.close()
    return got


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--realistic", type=int, default=70)
    ap.add_argument("--synthetic", type=int, default=1000)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="paycraft-bench-"))
    real, syn = work / "realistic", work / "synthetic"
    corpus.realistic(real, a.realistic)
    corpus.synthetic(syn, a.synthetic)
    cl = Cluster()
    cl.start()
    rows = {}
    try:
        # -- apply the realistic corpus to an empty database
        shape = None
        for label, fn in [
            ("floor", m_floor),
            ("bash", m_bash),
            ("engine", m_engine),
            ("engine_proc", m_engine_proc),
            ("module", m_module),
        ]:
            ts = []
            for _ in range(a.reps):
                params = cl.fresh_db()
                t, out = timed(fn, params, real, work)
                ts.append(t)
                got = objects(params)
                shape = shape or got
                if got != shape:
                    raise SystemExit(f"{label} produced a different schema: {got} != {shape}")
                if label != "floor" and out != f"✅ migrations: {a.realistic} applied, 0 skipped":
                    raise SystemExit(f"{label}: unexpected summary {out!r}")
            rows[("apply", label)] = statistics.median(ts)
        # -- nothing to apply, synthetic corpus
        params = cl.fresh_db()
        migrate.run(params, str(syn))
        for label, fn in [("bash", m_bash), ("engine", m_engine), ("engine_proc", m_engine_proc), ("module", m_module)]:
            ts = []
            for _ in range(a.reps):
                t, out = timed(fn, params, syn, work)
                ts.append(t)
                if out != f"✅ migrations: 0 applied, {a.synthetic} skipped":
                    raise SystemExit(f"{label}: unexpected summary {out!r}")
            rows[("noop", label)] = statistics.median(ts)
    finally:
        cl.stop()
        shutil.rmtree(work, ignore_errors=True)

    names = {
        "floor": "single psql (floor)",
        "bash": "bash applier (runbook, anchor)",
        "engine": "engine, in-process",
        "engine_proc": "engine, own python process",
        "module": "module via ansible",
    }
    print(
        f"\npaycraft_migrate benchmark: median of {a.reps} runs, PostgreSQL 15 on loopback (fsync=off), "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| scenario | method | seconds | vs floor | vs bash |\n|---|---|---:|---:|---:|")
    for (sc, label), t in rows.items():
        scen = f"apply {a.realistic} realistic" if sc == "apply" else f"nothing to apply, {a.synthetic} files"
        vf = f"{t / rows[('apply', 'floor')]:.2f}x" if sc == "apply" else "-"
        vb = f"{t / rows[(sc, 'bash')]:.3f}x"
        print(f"| {scen} | {names[label]} | {t:.3f} | {vf} | {vb} |")

    def target(desc, value, limit, unit="x"):
        ok = value <= limit
        print(f"| {desc} | {value:.3f}{unit} | <= {limit}{unit} | {'met' if ok else 'MISSED'} |")

    print("\n| target | measured | limit | result |\n|---|---:|---:|---|")
    target("apply 70: engine / single psql", rows[("apply", "engine")] / rows[("apply", "floor")], 1.5)
    target(
        "apply 70: engine (own process) / single psql", rows[("apply", "engine_proc")] / rows[("apply", "floor")], 1.5
    )
    target("apply 70: module / bash applier", rows[("apply", "module")] / rows[("apply", "bash")], 0.3)
    target("nothing to apply, 1000: engine", rows[("noop", "engine")], 0.1, " s")
    target("nothing to apply, 1000: module / bash applier", rows[("noop", "module")] / rows[("noop", "bash")], 0.2)


if __name__ == "__main__":
    main()
