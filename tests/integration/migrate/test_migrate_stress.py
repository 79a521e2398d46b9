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


def run_engine(params, mdir, *extra, **kw):
    return subprocess.Popen(
        [sys.executable, str(RUN_ENGINE), str(mdir), "30", *extra],
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


N_NT = 6  # no-transaction files of the second corpus


def corpus_no_transaction(directory):
    """Files that opt out of the transaction (idempotent, as the module doc asks), between transactional ones."""
    files = {"000_base.sql": "CREATE TABLE effects(version text NOT NULL);\n"}
    for i in range(1, N_NT + 1):
        files[f"{i:03d}_nt.sql"] = (
            "-- paycraft:no-transaction\n"
            f"CREATE TABLE IF NOT EXISTS n{i}(id int PRIMARY KEY, v text);\n"
            f"INSERT INTO n{i} SELECT g, md5(g::text) FROM generate_series(1, 20000) g ON CONFLICT DO NOTHING;\n"
            "SELECT pg_sleep(0.03);\n"
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS n{i}_v ON n{i}(v);\n"
            "SELECT pg_sleep(0.03);\n"
        )
        files[f"{i:03d}_tx.sql"] = f"INSERT INTO effects(version) VALUES ('{i:03d}_tx');\n"
    return write_migrations(directory, files)


def nt_state(params):
    """(ledger versions, started marks, no-tx files with any effect, invalid indexes)."""
    ledger = set()
    if query(params, "SELECT to_regclass('_paycraft_migrations')") != [(None,)]:
        ledger = {r[0] for r in query(params, "SELECT version FROM _paycraft_migrations")}
    marks = set()
    if query(params, "SELECT to_regclass('_paycraft_migrations_started')") != [(None,)]:
        marks = {r[0] for r in query(params, "SELECT version FROM _paycraft_migrations_started")}
    touched = {f"{i:03d}_nt" for i in range(1, N_NT + 1)
               if query(params, "SELECT to_regclass(%s)", (f"n{i}",)) != [(None,)]}
    invalid = [r[0] for r in query(params, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                           "WHERE NOT i.indisvalid")]
    return ledger, marks, touched, invalid


def assert_no_silent_half_file(params):
    """A no-transaction file is applied (ledger row, all its effects), or marked as started, or untouched."""
    ledger, marks, touched, invalid = nt_state(params)
    for i in range(1, N_NT + 1):
        v = f"{i:03d}_nt"
        assert not (v in ledger and v in marks), v
        if v in ledger:
            assert query(params, f"SELECT count(*) FROM n{i}") == [(20000,)]
            assert query(params, "SELECT to_regclass(%s) IS NOT NULL", (f"n{i}_v",)) == [(True,)]
        elif v not in marks:
            assert v not in touched, f"{v} left effects without a started mark"
    assert all(name in {f"n{i}_v" for i in range(1, N_NT + 1)} for name in invalid), invalid
    return ledger, marks, invalid


def test_kill_9_inside_no_transaction_files_is_visible_and_rerun_on_request(fresh_db, tmp_path):
    mdir = corpus_no_transaction(tmp_path / "nt")
    rng = random.Random(18)
    params = fresh_db()
    t0 = time.monotonic()
    proc = run_engine(params, mdir)
    assert proc.wait(120) == 0, proc.stderr.read()
    full = time.monotonic() - t0
    total = 1 + 2 * N_NT
    interrupted = 0
    for _ in range(TRIALS):
        params = fresh_db()
        proc = run_engine(params, mdir)
        time.sleep(rng.uniform(0.05, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        _ledger, marks, invalid = assert_no_silent_half_file(params)
        again = run_engine(params, mdir)
        out, err = again.communicate(timeout=120)
        if marks:
            interrupted += 1
            # the next run names the file (and any INVALID index) and applies nothing
            assert again.returncode == 1, out
            assert "were interrupted half-way" in err and "rerun_interrupted=" in err
            for version in marks:
                assert f"{version}.sql started at " in err
            for name in invalid:
                assert f"public.{name} ON " in err
            assert nt_state(params)[1] == marks
            # the operator drops the broken indexes, then re-runs explicitly
            for name in invalid:
                query(params, f'DROP INDEX IF EXISTS "{name}"')
            again = run_engine(params, mdir, "rerun")
            out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert len(json.loads(out)["applied"]) + json.loads(out)["skipped"] == total
        ledger, marks, invalid = assert_no_silent_half_file(params)
        assert len(ledger) == total and marks == set() and invalid == []
        effects = dict(query(params, "SELECT version, count(*) FROM effects GROUP BY version"))
        assert effects == {f"{i:03d}_tx": 1 for i in range(1, N_NT + 1)}
    assert interrupted >= TRIALS // 5, f"only {interrupted} of {TRIALS} kills landed in a no-transaction file"
