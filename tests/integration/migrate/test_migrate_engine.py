"""paycraft_migrate engine against a real PostgreSQL (shared ``pg`` fixture)."""

from __future__ import annotations

import hashlib
import os

import psycopg2
import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import migrate
from ansible_collections.paycraft.selfhost.plugins.module_utils.migrate import MigrateError
from paycraft_migrate_helpers import query, run_bootstrap, write_migrations

pytestmark = pytest.mark.postgres

BASE = {
    "001_init.sql": "CREATE TABLE tenants(id serial PRIMARY KEY, name text NOT NULL UNIQUE);\n",
    "002_fn.sql": (
        "CREATE FUNCTION tenant_count() RETURNS bigint LANGUAGE plpgsql AS $$\n"
        "BEGIN\n  RETURN (SELECT count(*) FROM tenants); -- ; inside body\nEND;\n$$;\n"
    ),
    "003_seed.sql": "INSERT INTO tenants(name) VALUES ('acme'), ('E''s; quote');\n",
}


def ledger(params, cols="version, checksum"):
    return query(params, f"SELECT {cols} FROM _paycraft_migrations ORDER BY version")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adopts_bash_ledger_and_bash_keeps_working(pg_db, mdir):
    write_migrations(mdir, BASE)
    out = run_bootstrap(pg_db, mdir).stdout
    assert "apply 001_init" in out and "✅ migrations: 3 applied, 0 skipped" in out

    res = migrate.run(pg_db, str(mdir))
    assert res.applied == [] and res.skipped == 3
    assert res.adopted == ["001_init", "002_fn", "003_seed"]
    assert res.ledger_altered == ["checksum", "execution_ms", "applied_by"]
    assert res.changed and res.summary == "✅ migrations: 0 applied, 3 skipped"
    assert ledger(pg_db) == [(v[:-4], sha(mdir / v)) for v in sorted(BASE)]
    assert query(pg_db, "SELECT count(*) FROM tenants") == [(2,)]  # nothing re-applied

    again = migrate.run(pg_db, str(mdir))
    assert not again.changed and again.adopted == [] and again.skipped == 3

    # the engine applies a new file; the bash script still reads and writes that ledger
    write_migrations(mdir, {"004_more.sql": "ALTER TABLE tenants ADD COLUMN plan text;\n"})
    res = migrate.run(pg_db, str(mdir))
    assert [a["version"] for a in res.applied] == ["004_more"] and res.skipped == 3
    assert "✅ migrations: 0 applied, 4 skipped" in run_bootstrap(pg_db, mdir).stdout
    write_migrations(mdir, {"005_bash.sql": "ALTER TABLE tenants ADD COLUMN region text;\n"})
    assert "✅ migrations: 1 applied, 4 skipped" in run_bootstrap(pg_db, mdir).stdout
    res = migrate.run(pg_db, str(mdir))
    assert res.applied == [] and res.adopted == ["005_bash"]
    rows = ledger(pg_db, "version, execution_ms IS NOT NULL, applied_by LIKE 'paycraft_migrate %'")
    assert rows[3] == ("004_more", True, True) and rows[4] == ("005_bash", False, None)


def test_fresh_apply_then_idempotent(pg_db, mdir):
    write_migrations(mdir, BASE)
    res = migrate.run(pg_db, str(mdir))
    assert [a["version"] for a in res.applied] == ["001_init", "002_fn", "003_seed"]
    assert all(isinstance(a["ms"], int) for a in res.applied)
    assert res.ledger_created and res.summary == "✅ migrations: 3 applied, 0 skipped"
    assert query(pg_db, "SELECT tenant_count()") == [(2,)]
    assert query(pg_db, "SELECT name FROM tenants ORDER BY id") == [("acme",), ("E's; quote",)]
    again = migrate.run(pg_db, str(mdir))
    assert not again.changed and again.summary == "✅ migrations: 0 applied, 3 skipped"
    assert again.pending == [] and again.remaining == []


def test_edited_applied_file_is_refused_unless_accepted(pg_db, mdir):
    write_migrations(mdir, BASE)
    migrate.run(pg_db, str(mdir))
    old = sha(mdir / "002_fn.sql")
    (mdir / "002_fn.sql").write_text(BASE["002_fn.sql"].replace("count(*)", "count(1)"))
    write_migrations(mdir, {"004_new.sql": "CREATE TABLE t4(x int);\n"})
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    msg = ei.value.message
    assert "002_fn.sql" in msg and old in msg and sha(mdir / "002_fn.sql") in msg
    assert "Never edit a migration" in msg
    assert query(pg_db, "SELECT to_regclass('t4')") == [(None,)]  # nothing applied
    res = migrate.run(pg_db, str(mdir), allow_changed=["002_fn"])
    assert res.accepted_changes == [{"version": "002_fn", "recorded": old, "current": sha(mdir / "002_fn.sql")}]
    assert [a["version"] for a in res.applied] == ["004_new"]
    assert not migrate.run(pg_db, str(mdir)).changed  # the new checksum is now recorded


def test_failing_file_leaves_ledger_and_schema_unchanged(pg_db, mdir):
    write_migrations(mdir, BASE)
    write_migrations(
        mdir,
        {
            "004_ok.sql": "CREATE TABLE t4(x int);\n",
            "005_bad.sql": (
                "-- header\nCREATE TABLE t5(x int);\n\nINSERT INTO t5 VALUES (1);\n"
                "INSERT INTO tenants(name)\n  VALUES ('acme');\nCREATE TABLE t5b(y int);\n"
            ),
            "006_after.sql": "CREATE TABLE t6(x int);\n",
        },
    )
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    err = ei.value
    assert err.details["line"] == 5 and err.details["sqlstate"] == "23505"
    assert "005_bad.sql line 5" in err.message and "duplicate key" in err.message
    assert "4 migration(s) applied before it" in err.message
    assert [a["version"] for a in err.result.applied] == ["001_init", "002_fn", "003_seed", "004_ok"]
    assert [r[0] for r in ledger(pg_db)] == ["001_init", "002_fn", "003_seed", "004_ok"]
    assert query(pg_db, "SELECT to_regclass('t5'), to_regclass('t5b'), to_regclass('t6')") == [(None, None, None)]
    assert query(pg_db, "SELECT to_regclass('t4') IS NOT NULL") == [(True,)]


def test_syntax_error_line_from_server_position(pg_db, mdir):
    write_migrations(
        mdir,
        {
            "001_a.sql": "CREATE TABLE a(x int);\n",
            "002_syntax.sql": (
                "CREATE TABLE b(x int);\n/* multi\n line ; comment */\nSELECT $q$;$q$;\nCREATE TABEL c(x int);\n"
            ),
        },
    )
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    assert ei.value.details["line"] == 5 and ei.value.details["sqlstate"] == "42601"
    assert "1 migration(s) applied before it in this run (001_a)" in ei.value.message
    assert query(pg_db, "SELECT to_regclass('b')") == [(None,)]


def test_wrapped_file_is_atomic_where_bash_is_not(pg_db, mdir, tmp_path):
    bad = "BEGIN;\nCREATE TABLE w1(x int);\nCOMMIT;\nCREATE TABLE w2(x int);\nSELECT 1/0;\n"
    # the runbook applier: the file's COMMIT ends psql -1's transaction, w1 and w2 survive the failure
    bash_dir = write_migrations(tmp_path / "bash", {"001_w.sql": bad})
    assert run_bootstrap(pg_db, bash_dir, check=False).returncode != 0
    assert query(pg_db, "SELECT to_regclass('w1') IS NOT NULL, to_regclass('w2') IS NOT NULL") == [(True, True)]
    query(pg_db, "DROP TABLE w1, w2; DROP TABLE _paycraft_migrations")

    # the engine refuses the mid-file COMMIT outright
    write_migrations(mdir, {"001_w.sql": bad})
    with pytest.raises(MigrateError, match=r"001_w.sql line 3: transaction control 'COMMIT;' is refused"):
        migrate.run(pg_db, str(mdir))
    # a whole-file wrap runs inside the engine's transaction, ledger row included
    (mdir / "001_w.sql").write_text(
        "-- wrapped like real PayCraft files\nBEGIN;\nCREATE TABLE w1(x int);\nINSERT INTO w1 VALUES (1/0);\nCOMMIT;\n"
    )
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    assert ei.value.details["line"] == 4 and ei.value.details["sqlstate"] == "22012"
    assert query(pg_db, "SELECT to_regclass('w1')") == [(None,)]
    assert ledger(pg_db) == []
    (mdir / "001_w.sql").write_text("begin isolation level serializable;\nCREATE TABLE w1(x int);\nend;\n")
    res = migrate.run(pg_db, str(mdir))
    assert [a["version"] for a in res.applied] == ["001_w"]
    assert query(pg_db, "SELECT to_regclass('w1') IS NOT NULL") == [(True,)]


def test_no_transaction_opt_out(pg_db, mdir):
    write_migrations(
        mdir,
        {
            "001_t.sql": "CREATE TABLE big(x int);\n",
            "002_idx.sql": (
                "-- paycraft:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS big_x ON big(x);\n"
                "CREATE TABLE after_idx(y int);\nSELECT nope FROM big;\n"
            ),
        },
    )
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    err = ei.value
    assert err.details["line"] == 4 and err.details["sqlstate"] == "42703"
    assert "statements before the failing one stay committed and no ledger row was written" in err.message
    assert "rerun_interrupted=002_idx" in err.message
    # half-way state: the earlier statements committed, no ledger row
    assert query(pg_db, "SELECT to_regclass('big_x') IS NOT NULL, to_regclass('after_idx') IS NOT NULL") == [
        (True, True)
    ]
    assert [r[0] for r in ledger(pg_db)] == ["001_t"]
    (mdir / "002_idx.sql").write_text(
        "-- paycraft:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS big_x ON big(x);\n"
        "CREATE TABLE IF NOT EXISTS after_idx(y int);\n"
    )
    with pytest.raises(MigrateError, match="were interrupted half-way"):
        migrate.run(pg_db, str(mdir))
    res = migrate.run(pg_db, str(mdir), rerun_interrupted=["002_idx"])
    assert [a["version"] for a in res.applied] == ["002_idx"]
    assert [r[0] for r in ledger(pg_db)] == ["001_t", "002_idx"]
    assert query(pg_db, "SELECT count(*) FROM _paycraft_migrations_started") == [(0,)]


def test_interrupted_no_transaction_file_is_reported_with_its_invalid_index(pg_db, mdir):
    """A no-transaction file that died half-way: the next run names it and the INVALID index it left."""
    write_migrations(
        mdir,
        {
            "001_t.sql": "CREATE TABLE big(x int);\nINSERT INTO big VALUES (1), (1);\n",
            "002_uniq.sql": (
                "-- paycraft:no-transaction\nCREATE TABLE IF NOT EXISTS before_idx(y int);\n"
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS big_x_uniq ON big(x);\n"
            ),
            "003_later.sql": "CREATE TABLE later(z int);\n",
        },
    )
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    assert ei.value.details["sqlstate"] == "23505" and ei.value.details["line"] == 3
    assert query(pg_db, "SELECT version FROM _paycraft_migrations_started") == [("002_uniq",)]

    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    err = ei.value
    assert "002_uniq.sql started at " in err.message and "never finished" in err.message
    assert "INVALID index(es) left behind: public.big_x_uniq ON public.big" in err.message
    assert "rerun_interrupted=002_uniq" in err.message and "Nothing was applied" in err.message
    assert [i["version"] for i in err.details["interrupted"]] == ["002_uniq"]
    assert err.result.interrupted[0]["invalid_indexes"] == ["public.big_x_uniq ON public.big"]
    assert query(pg_db, "SELECT to_regclass('later')") == [(None,)]
    # check mode tells the same
    with pytest.raises(MigrateError, match="were interrupted half-way"):
        migrate.run(pg_db, str(mdir), check_mode=True)
    # the ledger keeps the runbook's shape: the bash applier sees 001 applied, 002 not
    assert [r[0] for r in ledger(pg_db)] == ["001_t"]

    # the operator repairs the data, drops the broken index, and re-runs explicitly
    query(pg_db, "DELETE FROM big WHERE ctid NOT IN (SELECT min(ctid) FROM big GROUP BY x)")
    query(pg_db, "DROP INDEX big_x_uniq")
    res = migrate.run(pg_db, str(mdir), rerun_interrupted=True)
    assert [a["version"] for a in res.applied] == ["002_uniq", "003_later"]
    assert res.interrupted[0]["version"] == "002_uniq"
    assert "re-run interrupted 002_uniq (rerun_interrupted)" in res.lines
    assert query(pg_db, "SELECT count(*) FROM _paycraft_migrations_started") == [(0,)]
    assert migrate.run(pg_db, str(mdir)).interrupted == []


def test_a_file_the_bash_applier_finished_is_no_longer_interrupted(pg_db, mdir):
    write_migrations(mdir, {"001_i.sql": "-- paycraft:no-transaction\nCREATE TABLE a(x int);\nSELECT 1/0;\n"})
    with pytest.raises(MigrateError):
        migrate.run(pg_db, str(mdir))
    query(pg_db, "INSERT INTO _paycraft_migrations(version) VALUES ('001_i')")  # as migrations-bootstrap.sh does
    res = migrate.run(pg_db, str(mdir))
    assert res.interrupted == [] and res.adopted == ["001_i"]
    assert query(pg_db, "SELECT count(*) FROM _paycraft_migrations_started") == [(0,)]


def test_concurrently_in_a_transactional_file_names_the_marker(pg_db, mdir):
    write_migrations(mdir, {"001_t.sql": "CREATE TABLE t(x int);\n",
                            "002_i.sql": "CREATE INDEX CONCURRENTLY i ON t(x);\n"})
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    assert ei.value.message.startswith("002_i.sql line 1: CREATE INDEX CONCURRENTLY cannot run inside a transaction")
    assert "-- paycraft:no-transaction" in ei.value.message
    assert query(pg_db, "SELECT to_regclass('_paycraft_migrations')") == [(None,)] or ledger(pg_db) == []


def test_copy_with_a_column_list_is_refused_with_file_and_line(pg_db, mdir):
    write_migrations(mdir, {"001_c.sql": "CREATE TABLE t(a int, b int);\nCOPY t (a, b) FROM stdin;\n1\t2\n\\.\n"})
    with pytest.raises(MigrateError, match=r"001_c\.sql line 2: COPY \.\.\. FROM STDIN needs psql's inline data"):
        migrate.run(pg_db, str(mdir))
    assert query(pg_db, "SELECT to_regclass('t')") == [(None,)]


def test_check_mode_lists_exactly_what_would_run(pg_db, mdir):
    write_migrations(mdir, BASE)
    res = migrate.run(pg_db, str(mdir), check_mode=True)
    assert res.pending == ["001_init", "002_fn", "003_seed"] and res.applied == []
    assert query(pg_db, "SELECT to_regclass('_paycraft_migrations')") == [(None,)]
    migrate.run(pg_db, str(mdir), target="001_init")
    res = migrate.run(pg_db, str(mdir), check_mode=True)
    assert res.pending == ["002_fn", "003_seed"] and res.skipped == 1
    assert query(pg_db, "SELECT to_regclass('tenant_count')") == [(None,)]


def test_target_and_out_of_order(pg_db, mdir):
    write_migrations(mdir, BASE)
    res = migrate.run(pg_db, str(mdir), target="002_fn")
    assert [a["version"] for a in res.applied] == ["001_init", "002_fn"] and res.remaining == ["003_seed"]
    with pytest.raises(MigrateError, match="target '999_x' is neither"):
        migrate.run(pg_db, str(mdir), target="999_x")
    migrate.run(pg_db, str(mdir))
    write_migrations(mdir, {"001b_late.sql": "CREATE TABLE late(x int);\n", "004_new.sql": "CREATE TABLE n(x int);\n"})
    with pytest.raises(MigrateError, match=r"sort before the last applied version 003_seed .*: 001b_late\. Nothing"):
        migrate.run(pg_db, str(mdir))
    res = migrate.run(pg_db, str(mdir), out_of_order="warn")
    assert [a["version"] for a in res.applied] == ["004_new"] and res.out_of_order == ["001b_late"]
    assert res.remaining == ["001b_late"] and "001b_late" in res.warnings[0]
    res = migrate.run(pg_db, str(mdir), out_of_order="apply")
    assert [a["version"] for a in res.applied] == ["001b_late"] and res.out_of_order == ["001b_late"]


def test_missing_empty_and_dangling_directories(tmp_path, pg_db):
    dangling = tmp_path / "migrations"
    dangling.symlink_to(tmp_path / "supabase" / "migrations")
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(dangling))
    assert f"'{dangling}' is a symlink to '{tmp_path / 'supabase' / 'migrations'}'" in ei.value.message
    assert "does not exist" in ei.value.message
    with pytest.raises(MigrateError, match="does not exist"):
        migrate.run(pg_db, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("x")
    with pytest.raises(MigrateError, match=r"contains no \*\.sql files"):
        migrate.run(pg_db, str(tmp_path / "empty"))
    # the runbook applier reports success on the same dangling link
    assert "✅ migrations: 0 applied, 0 skipped" in run_bootstrap(pg_db, dangling).stdout


def test_lock_timeout_names_the_holder(pg_db, mdir):
    write_migrations(mdir, BASE)
    holder = psycopg2.connect(**pg_db, application_name="ops-laptop-run")
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (migrate.lock_key("public", "_paycraft_migrations"),))
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with pytest.raises(MigrateError) as ei:
            migrate.run(pg_db, str(mdir), lock_timeout=0.3)
        assert f"pid {pid}, application 'ops-laptop-run', client 127.0.0.1" in ei.value.message
        assert "pg_terminate_backend" in ei.value.message
        assert query(pg_db, "SELECT to_regclass('tenants')") == [(None,)]
    finally:
        holder.close()
    assert len(migrate.run(pg_db, str(mdir), lock_timeout=5).applied) == 3


def test_connection_failure_hides_password(pg_db, mdir):
    write_migrations(mdir, BASE)
    bad = {**pg_db, "password": "s3cret-not-this-one"}
    with pytest.raises(MigrateError) as ei:
        migrate.run(bad, str(mdir))
    assert "s3cret-not-this-one" not in ei.value.message and pg_db["password"] not in ei.value.message
    assert "could not connect" in ei.value.message and "pg_isready" in ei.value.message


def test_unix_socket_connection(pg, pg_db, mdir):
    write_migrations(mdir, BASE)
    params = {**pg_db, "host": pg.socket_dir}
    assert len(migrate.run(params, str(mdir)).applied) == 3
    assert os.path.isdir(pg.socket_dir)


def test_session_state_does_not_leak_between_files(pg_db, mdir):
    write_migrations(
        mdir,
        {
            "001_a.sql": (
                "CREATE SCHEMA other;\nSET search_path TO other;\nCREATE TEMP TABLE scratch(x int);\n"
                "SELECT set_config('statement_timeout', '150ms', false);\n"
            ),
            "002_b.sql": (
                "CREATE TEMP TABLE scratch(x int);\nCREATE TABLE lands_in_public(x int);\nSELECT pg_sleep(0.4);\n"
            ),
        },
    )
    assert len(migrate.run(pg_db, str(mdir)).applied) == 2
    assert query(pg_db, "SELECT to_regclass('public.lands_in_public') IS NOT NULL") == [(True,)]


@pytest.mark.parametrize(
    ("body", "line", "sqlstate"),
    [
        # plpgsql body compiled at CREATE time: the server's position points into the $$ body
        (
            "CREATE TABLE x(a int);\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n"
            "  RETRUN 1;\nEND;\n$$;\n",
            4,
            "42601",
        ),
        # runtime error inside a DO block: no position, found by replaying statement by statement
        ("SELECT 1;\n\nDO $$\nBEGIN\n  PERFORM 1/0;\nEND\n$$;\nSELECT 2;\n", 3, "22012"),
        # error after a wrapped BEGIN with transaction modes
        ("BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT 1;\nSELECT * FROM missing_t;\nCOMMIT;\n", 3, "42P01"),
    ],
)
def test_error_lines(pg_db, mdir, body, line, sqlstate):
    write_migrations(mdir, {"001_e.sql": body})
    with pytest.raises(MigrateError) as ei:
        migrate.run(pg_db, str(mdir))
    assert (ei.value.details["line"], ei.value.details["sqlstate"]) == (line, sqlstate), ei.value.message
    assert ledger(pg_db) == []


def test_refusals_happen_before_anything_is_applied(pg_db, mdir):
    write_migrations(
        mdir,
        {
            "001_ok.sql": "CREATE TABLE ok1(x int);\n",
            "002_mid_commit.sql": "CREATE TABLE ok2(x int);\nCOMMIT;\nCREATE TABLE ok3(x int);\n",
        },
    )
    with pytest.raises(MigrateError, match=r"002_mid_commit.sql line 2: transaction control 'COMMIT;'"):
        migrate.run(pg_db, str(mdir))
    with pytest.raises(MigrateError, match=r"002_mid_commit\.sql line 2"):
        migrate.run(pg_db, str(mdir), check_mode=True)
    assert query(pg_db, "SELECT to_regclass('ok1')") == [(None,)]
    assert ledger(pg_db) == []


def test_comment_only_and_empty_files_are_recorded(pg_db, mdir):
    write_migrations(
        mdir,
        {
            "001_note.sql": "-- intentionally empty: kept for numbering\n/* nothing; here */\n",
            "002_empty.sql": "",
            "003_wrapped_empty.sql": "BEGIN;\n-- nothing\nCOMMIT;\n",
        },
    )
    res = migrate.run(pg_db, str(mdir))
    assert [a["version"] for a in res.applied] == ["001_note", "002_empty", "003_wrapped_empty"]
