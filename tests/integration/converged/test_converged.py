"""paycraft_converged's library against real git, real files, real PostgreSQL and a real compose project."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import converged, migrate
from paycraft_testlib import module_runner

BASE_IMAGE = "paycraft-local/debian:bookworm"
BOOTSTRAP = Path(__file__).resolve().parent.parent / "migrate" / "migrations-bootstrap.sh"


def bootstrap(db: dict, mdir: Path) -> None:
    """The runbook's bash applier (section 4), as an operator runs it by hand."""
    import os

    env = dict(os.environ, PAYCRAFT_DB_PASSWORD=db["password"], PGHOST=db["host"], PGPORT=str(db["port"]),
               PGUSER=db["user"], PGDATABASE=db["dbname"], MIGRATIONS_DIR=str(mdir))
    subprocess.run(["bash", str(BOOTSTRAP)], env=env, check=True, capture_output=True, timeout=120)


def reset_database(db: dict) -> None:
    """Drop and re-create the database (what `docker volume rm` + initdb does to the ledger)."""
    admin = dict(db, dbname="postgres")
    conn = psycopg2.connect(**admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE "{db["dbname"]}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{db["dbname"]}"')
    conn.close()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path) -> Path:
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.invalid")
    git(repo, "config", "user.name", "t")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    git(repo, "tag", "v1.0.0")
    (repo / "a.txt").write_text("two\n")
    git(repo, "commit", "-qam", "two")
    git(repo, "tag", "v1.1.0")
    return repo


def test_checkout_at_version_and_clean(checkout):
    probe = converged.Probe(runner=module_runner())
    fp = converged.checkout_fingerprint(probe, str(checkout), "v1.1.0")
    assert fp["at_version"] and fp["clean"]
    assert not converged.checkout_fingerprint(probe, str(checkout), "v1.0.0")["at_version"]
    (checkout / "untracked.env").write_text("X=1\n")
    assert converged.checkout_fingerprint(probe, str(checkout), "v1.1.0")["clean"]
    (checkout / "a.txt").write_text("edited\n")
    assert not converged.checkout_fingerprint(probe, str(checkout), "v1.1.0")["clean"]


def test_file_fingerprint_sees_content_and_mode(tmp_path):
    f = tmp_path / "paycraft.env"
    f.write_text("A=1\n")
    f.chmod(0o600)
    first = converged.file_fingerprint(str(f))
    assert first["mode"] == "0600"
    f.chmod(0o644)
    assert converged.file_fingerprint(str(f)) != first
    assert converged.file_fingerprint(str(tmp_path / "absent")) is None


@pytest.mark.postgres
def test_ledger_against_files(pg_db, tmp_path):
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    (mdir / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (mdir / "002_b.sql").write_text("CREATE TABLE b (id int);\n")
    migrate.run(pg_db, str(mdir))
    files = converged.migrations_fingerprint(str(mdir))
    ledger = converged.ledger_fingerprint(pg_db)
    assert set(files) == set(ledger["rows"]) == {"001_a", "002_b"}
    assert all(files[v] == ledger["rows"][v]["checksum"] for v in files)
    assert ledger["system_identifier"].isdigit()
    bad = dict(pg_db, password="wrong")
    assert converged.ledger_fingerprint(bad).startswith("cannot connect to Postgres")
    with psycopg2.connect(**pg_db) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE _paycraft_migrations")
    assert converged.ledger_fingerprint(pg_db).startswith("cannot read the ledger")
    # the runbook's bash applier writes a ledger without checksums: read, with checksum None
    reset_database(pg_db)
    bootstrap(pg_db, mdir)
    rows = converged.ledger_fingerprint(pg_db)["rows"]
    assert set(rows) == {"001_a", "002_b"} and {r["checksum"] for r in rows.values()} == {None}


@pytest.mark.docker
@pytest.mark.postgres
def test_check_follows_every_kind_of_drift(docker_engine, pg_db, checkout, tmp_path):
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        from paycraft_testlib import missing

        missing(f"the local base image {BASE_IMAGE}")
    project = f"pcconv{uuid.uuid4().hex[:8]}"
    pdir = checkout / "infra"
    pdir.mkdir()
    (pdir / "docker-compose.yaml").write_text(
        f"services:\n  app:\n    image: {BASE_IMAGE}\n    command: sleep 600\n    environment:\n      A: ${{A:-x}}\n"
    )
    env_file = tmp_path / "paycraft.env"
    env_file.write_text("A=1\n")
    override = tmp_path / "override.yml"
    override.write_text("services:\n  app:\n    stop_grace_period: 1s\n")
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    (mdir / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    migrate.run(pg_db, str(mdir))
    git(checkout, "add", "infra")
    git(checkout, "commit", "-qm", "infra")
    git(checkout, "tag", "v2.0.0")
    params = {
        "checkout": str(checkout), "version": "v2.0.0", "project_dir": str(pdir), "compose_project": project,
        "compose_files": ["docker-compose.yaml", str(override)], "env_file": str(env_file),
        "override_file": str(override), "migrations_dir": str(mdir), "db": pg_db, "inputs": "in-1",
        "runner": module_runner(60),
    }
    compose = ["docker", "compose", "-p", project, "--project-directory", str(pdir), "--env-file", str(env_file),
               "-f", "docker-compose.yaml", "-f", str(override)]
    try:
        not_up = converged.check(params, None)
        assert "service app has no container" in not_up["problems"]
        subprocess.run([*compose, "up", "-d"], cwd=pdir, check=True, capture_output=True)

        first = converged.check(params, None)
        assert first["problems"] == [] and first["reasons"] == ["no record of an earlier successful run"]
        state = {"version": converged.STATE_VERSION, "inputs": "in-1", "live": first["live"]}
        assert converged.check(params, state)["converged"]

        assert "the inventory variables or the collection's code changed" in converged.check(
            dict(params, inputs="in-2"), state)["reasons"]

        env_file.write_text("A=2\n")  # compose would recreate the container
        drift = converged.check(params, state)
        assert "service app: its configuration changed since it was created" in drift["problems"]
        env_file.write_text("A=1\n")
        assert converged.check(params, state)["converged"]

        subprocess.run(["docker", "compose", "-p", project, "stop", "-t", "1"], check=True, capture_output=True)
        assert "service app is not running" in converged.check(params, state)["problems"]
        subprocess.run([*compose, "up", "-d"], cwd=pdir, check=True, capture_output=True)

        (mdir / "002_b.sql").write_text("CREATE TABLE b (id int);\n")
        assert "1 migration(s) not applied (002_b...)" in converged.check(params, state)["problems"]
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "-t", "1"], capture_output=True)


def test_state_file_is_written_0600_once(tmp_path):
    path = tmp_path / "converged.json"
    content = converged.render_state("in", {"a": 1})
    assert converged.write_state(str(path), content) is True
    assert converged.write_state(str(path), content) is False
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert converged.read_state(str(path))["inputs"] == "in"


@pytest.mark.docker
@pytest.mark.postgres
def test_each_kind_of_drift_forces_a_full_run_that_repairs_it(docker_engine, pg_db, checkout, tmp_path):
    """The four kinds of drift of issue 18, each: seen by the fast path, then a full run repairs it.

    A real compose project with a unique name (no port published), a real git checkout, real
    PostgreSQL. "A full run" does here what site.yml's roles do: link .env (config), write the
    override and `docker compose up -d` (stack), paycraft_migrate (migrations), then record.
    """
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        from paycraft_testlib import missing

        missing(f"the local base image {BASE_IMAGE}")
    import os

    project = f"pcdrift{uuid.uuid4().hex[:8]}"
    pdir = checkout / "infra"
    pdir.mkdir()
    (pdir / "docker-compose.yaml").write_text(
        f"services:\n  app:\n    image: {BASE_IMAGE}\n    command: sleep 600\n    environment:\n      A: ${{A:-x}}\n"
    )
    git(checkout, "add", "infra")
    git(checkout, "commit", "-qm", "infra")
    git(checkout, "tag", "v2.0.0")
    env_file = tmp_path / "paycraft.env"
    env_file.write_text("A=1\n")
    env_file.chmod(0o600)
    link = pdir / ".env"
    override = tmp_path / "override.yml"
    override_text = "services:\n  app:\n    stop_grace_period: 1s\n"
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    (mdir / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (mdir / "002_b.sql").write_text("CREATE TABLE b (id int);\n")
    params = {
        "checkout": str(checkout), "version": "v2.0.0", "project_dir": str(pdir), "compose_project": project,
        "compose_files": ["docker-compose.yaml", str(override)], "env_file": str(env_file),
        "override_file": str(override), "env_link": str(link), "license_file": "",
        "migrations_dir": str(mdir), "db": pg_db, "inputs": "in-1", "runner": module_runner(60),
    }
    compose = ["docker", "compose", "-p", project, "--project-directory", str(pdir), "--env-file", str(env_file),
               "-f", "docker-compose.yaml", "-f", str(override)]
    clean_env = {k: v for k, v in os.environ.items() if k != "A"}

    def up(**shell_env):
        subprocess.run([*compose, "up", "-d", "--wait"], cwd=pdir, check=True, capture_output=True,
                       env=dict(clean_env, **shell_env), timeout=120)

    def full_run() -> dict:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(env_file)  # config role
        override.write_text(override_text)  # stack role (template)
        up()  # stack role
        migrate.run(pg_db, str(mdir))  # migrations role
        now = converged.check(params, None)  # converged role, record
        assert now["problems"] == [], now["problems"]
        state = {"version": converged.STATE_VERSION, "inputs": "in-1", "live": now["live"]}
        assert converged.check(params, state)["converged"]
        return state

    def drifted(state: dict) -> list[str]:
        result = converged.check(params, state)
        assert not result["converged"]
        return result["reasons"]

    try:
        state = full_run()

        # 1. the .env link deleted
        link.unlink()
        assert f"{link} is missing" in drifted(state)
        # ... or replaced by a hand-made copy of the env file
        link.write_text(env_file.read_text())
        assert f"{link} is not a link to {env_file}" in drifted(state)
        state = full_run()

        # 2. the database reset, then re-bootstrapped by hand with the runbook's bash applier
        reset_database(pg_db)
        bootstrap(pg_db, mdir)
        reasons = drifted(state)
        assert any(r.startswith("2 ledger row(s) without a checksum") for r in reasons), reasons
        state = full_run()
        # ... or reset and re-applied by hand with the engine: same versions and checksums, yet not the same ledger
        reset_database(pg_db)
        migrate.run(pg_db, str(mdir))
        assert drifted(state) == ["the migration ledger changed since the last successful run"]
        state = full_run()

        # 3. the override edited: a comment only (compose sees no change, the file does) ...
        override.write_text(override_text + "# tuned by hand\n")
        assert drifted(state) == ["override file changed since the last successful run"]
        # ... or a setting (compose would recreate the container)
        override.write_text(override_text.replace("1s", "2s"))
        assert "service app: its configuration changed since it was created" in drifted(state)
        state = full_run()

        # 4. one container's environment changed behind compose's back (shell variable at `up`)
        up(A="set-by-hand")
        env = subprocess.run(["docker", "compose", "-p", project, "exec", "-T", "app", "printenv", "A"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert env == "set-by-hand"
        assert "service app: its configuration changed since it was created" in drifted(state)
        state = full_run()
        # ... or the container re-created by hand with the same configuration
        subprocess.run([*compose, "up", "-d", "--force-recreate"], cwd=pdir, check=True, capture_output=True,
                       env=clean_env, timeout=120)
        assert drifted(state) == ["container(s) app changed since the last successful run"]
        state = full_run()
        assert converged.check(params, state)["converged"]
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "-t", "1"], capture_output=True)
