"""Unit tests of the migration engine's pure parts: SQL scanner, planner, loader (no database)."""

from __future__ import annotations

import hashlib

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import migrate
from ansible_collections.paycraft.selfhost.plugins.module_utils.migrate import (
    LineMap,
    MigrateError,
    Migration,
    load_migrations,
    plan_migration,
    split_statements,
)


def texts(sql):
    return [s.text for s in split_statements(sql)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1;", "SELECT 2;"]),
        ("SELECT 'a;b''c'; SELECT 2", ["SELECT 'a;b''c';", "SELECT 2"]),
        ("SELECT E'a\\';b'; SELECT 2;", ["SELECT E'a\\';b';", "SELECT 2;"]),
        ("SELECT 'a\\'; SELECT 2;", ["SELECT 'a\\';", "SELECT 2;"]),  # standard strings: no backslash escape
        ('SELECT 1 AS ";x""y"; SELECT 2;', ['SELECT 1 AS ";x""y";', "SELECT 2;"]),
        ("SELECT $$a;b$$; SELECT $f$ $$ ; $f$;", ["SELECT $$a;b$$;", "SELECT $f$ $$ ; $f$;"]),
        ("SELECT 1 -- c;\n; SELECT 2;", ["SELECT 1 -- c;\n;", "SELECT 2;"]),
        ("/* a /* nested; */ still; */ SELECT 1; SELECT 2;", ["SELECT 1;", "SELECT 2;"]),
        ("SELECT (1;2); SELECT 3;", ["SELECT (1;2);", "SELECT 3;"]),
        ("SELECT foo$bar$ FROM t; SELECT $1;", ["SELECT foo$bar$ FROM t;", "SELECT $1;"]),
        ("SELECT U&'d\\0061t;a'; SELECT 2;", ["SELECT U&'d\\0061t;a';", "SELECT 2;"]),
    ],
)
def test_split_statements(sql, expected):
    assert texts(sql) == expected


def test_split_begin_atomic_function_body():
    sql = (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n"
        "  SELECT CASE WHEN true THEN 2 END;\nEND;\nSELECT 3;"
    )
    got = texts(sql)
    assert len(got) == 2 and got[0].endswith("END;") and got[1] == "SELECT 3;"


def test_split_plpgsql_do_block_and_trigger():
    sql = (
        "DO $do$\nBEGIN\n  IF NOT EXISTS (SELECT 1) THEN\n    RAISE NOTICE 'x;';\n  END IF;\nEND\n$do$;\n"
        "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION f();\n"
    )
    got = split_statements(sql)
    assert [s.keywords(2) for s in got] == [["DO"], ["CREATE", "TRIGGER"]]
    assert LineMap(sql).line(got[1].start) == 8


def test_psql_meta_command_is_its_own_statement():
    st = split_statements("\\set ON_ERROR_STOP 1\nSELECT 1;")
    assert st[0].meta and st[0].text == "\\set ON_ERROR_STOP 1" and not st[1].meta


def test_linemap():
    lm = LineMap("a\nbb\n\nc")
    assert [lm.line(i) for i in (0, 1, 2, 4, 5, 6)] == [1, 1, 2, 2, 3, 4]


def mig(sql, name="001_x.sql"):
    return Migration(
        version=name[:-4],
        path=f"/m/{name}",
        checksum="0",
        sql=sql,
        no_transaction=sql.split("\n", 1)[0].strip().lower() == migrate.NO_TRANSACTION_MARKER,
    )


def test_plan_plain_file_runs_as_is():
    p = plan_migration(mig("CREATE TABLE a(x int);\nCREATE TABLE b(x int);\n"))
    assert not p.wrapped and p.sql.startswith("CREATE TABLE a") and len(p.statements) == 2


def test_plan_unwraps_whole_file_begin_commit_keeping_lines():
    sql = "-- header\nBEGIN;\nCREATE TABLE a(x int);\nCOMMIT;\n"
    p = plan_migration(mig(sql))
    assert p.wrapped and "BEGIN" not in p.sql and "COMMIT" not in p.sql
    assert len(p.sql) == len(sql) and p.sql.count("\n") == sql.count("\n")
    assert p.sql.index("CREATE") == sql.index("CREATE") and p.set_transaction == ""


@pytest.mark.parametrize(
    ("first", "last", "modes"),
    [
        ("BEGIN;", "COMMIT;", ""),
        ("begin transaction;", "end;", ""),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE;", "COMMIT WORK;", "ISOLATION LEVEL SERIALIZABLE"),
        ("BEGIN WORK READ WRITE;", "END TRANSACTION;", "READ WRITE"),
    ],
)
def test_plan_wrap_variants(first, last, modes):
    p = plan_migration(mig(f"{first}\nSELECT 1;\n{last}\n"))
    assert p.wrapped and p.set_transaction == modes


@pytest.mark.parametrize(
    ("sql", "line", "what"),
    [
        ("BEGIN;\nSELECT 1;\nCOMMIT;\nSELECT 2;\n", 3, "COMMIT;"),
        ("SELECT 1;\nCOMMIT;\n", 2, "COMMIT;"),
        ("BEGIN;\nSELECT 1;\nROLLBACK;\n", 3, "ROLLBACK;"),
        ("SELECT 1;\n\nBEGIN;\nSELECT 2;\nCOMMIT;\n", 3, "BEGIN;"),
        ("BEGIN;\nSELECT 1;\n", 1, "BEGIN;"),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';\n", 2, "PREPARE TRANSACTION"),
    ],
)
def test_plan_refuses_other_transaction_control(sql, line, what):
    with pytest.raises(MigrateError) as ei:
        plan_migration(mig(sql))
    assert f"001_x.sql line {line}: transaction control '{what}" in ei.value.message
    assert migrate.NO_TRANSACTION_MARKER in ei.value.message


def test_plan_allows_savepoints_and_tx_words_in_bodies():
    sql = (
        "SAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nRELEASE s;\n"
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;\n"
        "SELECT 'COMMIT;';\n"
    )
    p = plan_migration(mig(sql))
    assert not p.wrapped and len(p.statements) == 5


def test_plan_no_transaction_file():
    p = plan_migration(mig("-- paycraft:no-transaction\nCREATE INDEX CONCURRENTLY i ON t(x);\nVACUUM t;\n"))
    assert [s.keywords(2) for s in p.statements] == [["CREATE", "INDEX"], ["VACUUM", "T"]]
    with pytest.raises(MigrateError, match="line 2: 'BEGIN;' in a file marked"):
        plan_migration(mig("-- paycraft:no-transaction\nBEGIN;\nSELECT 1;\nCOMMIT;\n"))


def test_plan_refuses_psql_only_constructs():
    with pytest.raises(MigrateError, match=r"line 2: psql meta-command '\\i other.sql'"):
        plan_migration(mig("SELECT 1;\n\\i other.sql\n"))
    with pytest.raises(MigrateError, match=r"line 1: COPY \.\.\. FROM STDIN"):
        plan_migration(mig("COPY t FROM stdin;\n1\n\\.\n"))



@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1;\nCOPY public.t (a, b) FROM stdin;\n1\t2\n\\.\n",  # pg_dump's form, with a column list
        "SELECT 1;\nCOPY t(a) FROM STDIN WITH (FORMAT csv);\n1\n\\.\n",
        "SELECT 1;\nCOPY \"T\" (\"a b\", c) FROM stdin;\n\\.\n",
    ],
)
def test_plan_refuses_copy_from_stdin_with_a_column_list(sql):
    with pytest.raises(MigrateError, match=r"001_x\.sql line 2: COPY \.\.\. FROM STDIN"):
        plan_migration(mig(sql))


def test_plan_allows_copy_from_a_file_and_stdin_in_strings():
    plan_migration(mig("COPY t (a) FROM '/tmp/stdin.csv';\nSELECT 'stdin';\n"))


@pytest.mark.parametrize(
    ("statement", "command"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t(x);", "CREATE INDEX CONCURRENTLY"),
        ("create unique index concurrently if not exists i on t(x);", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i;", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i;", "REINDEX CONCURRENTLY"),
        ("VACUUM ANALYZE t;", "VACUUM"),
    ],
)
def test_plan_refuses_autocommit_only_statements_in_a_transactional_file(statement, command):
    with pytest.raises(MigrateError) as ei:
        plan_migration(mig(f"CREATE TABLE t(x int);\n{statement}\n"))
    assert ei.value.message.startswith(f"001_x.sql line 2: {command} cannot run inside a transaction block")
    assert "'-- paycraft:no-transaction' alone on the first line of the file" in ei.value.message
    with pytest.raises(MigrateError, match="line 3: CREATE INDEX CONCURRENTLY"):
        plan_migration(mig("BEGIN;\nCREATE TABLE t(x int);\nCREATE INDEX CONCURRENTLY i ON t(x);\nCOMMIT;\n"))


def test_load_migrations_order_checksum_and_marker(tmp_path):
    (tmp_path / "010_b.sql").write_bytes(b"SELECT 2;\n")
    (tmp_path / "002_a.sql").write_bytes(b"-- paycraft:no-transaction\nVACUUM;\n")
    (tmp_path / "README.md").write_text("x")
    (tmp_path / ".hidden.sql").write_text("x")
    got = load_migrations(str(tmp_path))
    assert [m.version for m in got] == ["002_a", "010_b"]
    assert got[0].no_transaction and not got[1].no_transaction
    assert got[1].checksum == hashlib.sha256(b"SELECT 2;\n").hexdigest()


def test_load_migrations_refuses_missing_empty_dangling(tmp_path):
    with pytest.raises(MigrateError, match="does not exist; refusing to report '0 applied'"):
        load_migrations(str(tmp_path / "none"))
    link = tmp_path / "link"
    link.symlink_to("../nowhere/migrations")
    with pytest.raises(MigrateError) as ei:
        load_migrations(str(link))
    assert f"'{link}' is a symlink to '../nowhere/migrations'" in ei.value.message
    assert "does not exist" in ei.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(MigrateError, match="contains no"):
        load_migrations(str(tmp_path / "empty"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(MigrateError, match="is not a directory"):
        load_migrations(str(tmp_path / "f"))


def test_load_migrations_refuses_non_utf8(tmp_path):
    (tmp_path / "001_x.sql").write_bytes(b"SELECT '\xff';\n")
    with pytest.raises(MigrateError, match=r"001_x\.sql' is not valid UTF-8"):
        load_migrations(str(tmp_path))


def test_ledger_name_and_lock_key():
    assert migrate.parse_ledger_name("_paycraft_migrations") == ("public", "_paycraft_migrations")
    assert migrate.parse_ledger_name("ops.ledger") == ("ops", "ledger")
    with pytest.raises(MigrateError):
        migrate.parse_ledger_name("x; DROP TABLE y")
    k = migrate.lock_key("public", "_paycraft_migrations")
    assert -(2**63) <= k < 2**63 and k == migrate.lock_key("public", "_paycraft_migrations")
    assert k != migrate.lock_key("ops", "ledger")


def test_result_summary_and_changed():
    r = migrate.MigrationResult(applied=[{"version": "042_add_coupons_v2", "ms": 3}], skipped=39)
    assert r.summary == "✅ migrations: 1 applied, 39 skipped" and r.changed
    assert not migrate.MigrationResult(skipped=3).changed
    assert migrate.MigrationResult(pending=["x"], check_mode=True).changed


def test_engine_rejects_bad_policy():
    with pytest.raises(MigrateError, match="out_of_order must be one of fail, warn, apply"):
        migrate.Engine({}, "/x", out_of_order="sometimes")
