"""The harness itself: the PostgreSQL fixture is real and isolated per test."""

import psycopg2
import pytest

pytestmark = pytest.mark.postgres


def test_pg_fixture_round_trip(pg_db):
    with psycopg2.connect(**pg_db) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        cur.execute("INSERT INTO t VALUES (1, 'paycraft'), (2, 'selfhost')")
        cur.execute("SELECT v FROM t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["paycraft", "selfhost"]
        cur.execute("SHOW server_version_num")
        assert cur.fetchone()[0].startswith("15")


def test_pg_databases_are_isolated(pg, pg_db):
    with psycopg2.connect(**pg.params()) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.t')")
        assert cur.fetchone()[0] is None


def test_pg_password_is_enforced(pg):
    params = dict(pg.params(), password="wrong")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**params)
