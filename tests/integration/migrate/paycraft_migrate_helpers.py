"""Shared helpers for the paycraft_migrate integration tests (real PostgreSQL from the shared ``pg`` fixture)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOTSTRAP_SH = HERE / "migrations-bootstrap.sh"


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (directory / name).write_text(body)
    return directory


def run_bootstrap(params: dict, migrations_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the bash re-implementation of runbook section 4 against ``params``."""
    env = {
        **os.environ,
        "MIGRATIONS_DIR": str(migrations_dir),
        "PAYCRAFT_DB_PASSWORD": params["password"],
        "PGHOST": params["host"],
        "PGPORT": str(params["port"]),
        "PGUSER": params["user"],
        "PGDATABASE": params["dbname"],
    }
    proc = subprocess.run(["bash", str(BOOTSTRAP_SH)], env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"bootstrap failed rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def query(params: dict, sql: str, args=None) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(**params)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


RUN_ENGINE = HERE / "run_engine.py"


def engine_env(params: dict) -> dict:
    """Environment for run_engine.py: connection in PG* variables, password never in argv."""
    from ansible_collections.paycraft.selfhost.plugins.module_utils import migrate

    # .../ansible_collections/paycraft/selfhost/plugins/module_utils/migrate.py -> the collections root
    collections_root = Path(migrate.__file__).parents[5]
    return {
        **os.environ,
        "PAYCRAFT_COLLECTIONS_ROOT": str(collections_root),
        "PGHOST": params["host"],
        "PGPORT": str(params["port"]),
        "PGUSER": params["user"],
        "PGDATABASE": params["dbname"],
        "PGPASSWORD": params["password"],
    }
