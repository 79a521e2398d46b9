"""kill -9 and concurrent runs of the engine, each run in its own OS process (slow, bounded)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from paycraft_migrate_helpers import RUN_ENGINE, engine_env, query, write_migrations

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TRIALS = 20
N_FILES = 12


def corpus(directory):
    files = {"000_effects.sql": "CREATE TABLE effects(version text NOT NULL, at timestamptz DEFAULT now());\n"}
    for i in range(1, N_FILES + 1):
        v = f"{i:03d}_step"
        body = (
            f"CREATE TABLE t{i}(id int PRIMARY KEY, v text);\n"
            f"INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, 5000) g;\n"
            "SELECT pg_sleep(0.02);\n"
            f"INSERT INTO effects(version) VALUES ('{v}');\n"
        )
        if i % 4 == 0:  # some files carry their own wrap, as real PayCraft files do
            body = f"BEGIN;\n{body}COMMIT;\n"
        files[f"{v}.sql"] = body
    return write_migrations(directory, files)


@pytest.fixture
def fresh_db(pg):
    """A factory of fresh databases on the session cluster, all dropped at the end."""
    admin = psycopg2.connect(**pg.params())
    admin.autocommit = True
    made = []

    def make():
        name = f"s_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return pg.params(name)

    yield make
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def state(params):
    """(ledger versions, effect versions with their count, tables t<i> with their row count)."""
    if query(params, "SELECT to_regclass('_paycraft_migrations')") == [(None,)]:
        return set(), {}, {}
    ledger = {r[0] for r in query(params, "SELECT version FROM _paycraft_migrations")}
    effects = {}
    if query(params, "SELECT to_regclass('effects')") != [(None,)]:
        effects = dict(query(params, "SELECT version, count(*) FROM effects GROUP BY version"))
    tables = {}
    for i in range(1, N_FILES + 1):
        if query(params, "SELECT to_regclass(%s)", (f"t{i}",)) != [(None,)]:
            tables[f"{i:03d}_step"] = query(params, f"SELECT count(*) FROM t{i}")[0][0]
    return ledger, effects, tables


def assert_all_or_nothing(params):
    ledger, effects, tables = state(params)
    for i in range(1, N_FILES + 1):
        v = f"{i:03d}_step"
        if v in ledger:
            assert effects.get(v) == 1 and tables.get(v) == 5000, (v, effects, tables)
        else:
            assert v not in effects and v not in tables, (v, effects, tables)
    return ledger


def process_list() -> str:
    """Every process's command line, as ps would show it."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(out)


def run_engine(params, mdir, **kw):
    return subprocess.Popen(
        [sys.executable, str(RUN_ENGINE), str(mdir), "30"],
        env=engine_env(params),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_kill_9_at_random_points(fresh_db, tmp_path):
    mdir = corpus(tmp_path / "m")
    rng = random.Random(4)
    # calibrate: how long a full run takes in a process on this machine
    params = fresh_db()
    t0 = time.monotonic()
    proc = run_engine(params, mdir)
    assert proc.wait(60) == 0, proc.stderr.read()
    full = time.monotonic() - t0
    partial = 0
    for _ in range(TRIALS):
        params = fresh_db()
        proc = run_engine(params, mdir)
        time.sleep(rng.uniform(0.05, full))
        assert params["password"] not in process_list()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        ledger = assert_all_or_nothing(params)
        partial += 0 < len(ledger) < N_FILES + 1
        again = run_engine(params, mdir)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        res = json.loads(out)
        assert len(res["applied"]) + res["skipped"] == N_FILES + 1
        assert {a["version"] for a in res["applied"]}.isdisjoint(ledger)
        assert len(assert_all_or_nothing(params)) == N_FILES + 1
    assert partial >= TRIALS // 4, f"only {partial} of {TRIALS} kills landed mid-run; the trial proves too little"


def test_two_runs_at_once_apply_each_migration_once(fresh_db, tmp_path):
    mdir = corpus(tmp_path / "m")
    for _ in range(TRIALS):
        params = fresh_db()
        a, b = run_engine(params, mdir), run_engine(params, mdir)
        (oa, ea), (ob, eb) = a.communicate(timeout=60), b.communicate(timeout=60)
        assert a.returncode == 0 and b.returncode == 0, (ea, eb)
        ra, rb = json.loads(oa), json.loads(ob)
        va = [x["version"] for x in ra["applied"]]
        vb = [x["version"] for x in rb["applied"]]
        # serialised by the advisory lock: both runs succeed, together they apply each file once
        assert set(va).isdisjoint(vb) and len(va) + len(vb) == N_FILES + 1
        ledger, effects, tables = state(params)
        assert len(ledger) == N_FILES + 1
        assert all(effects[f"{i:03d}_step"] == 1 for i in range(1, N_FILES + 1))
        assert all(n == 5000 for n in tables.values()) and len(tables) == N_FILES
