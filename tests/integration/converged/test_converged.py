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
    assert set(files) == set(ledger) == {"001_a", "002_b"}
    assert all(files[v] == ledger[v] for v in files)
    bad = dict(pg_db, password="wrong")
    assert converged.ledger_fingerprint(bad).startswith("cannot connect to Postgres")
    with psycopg2.connect(**pg_db) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE _paycraft_migrations")
    assert converged.ledger_fingerprint(pg_db).startswith("cannot read the ledger")


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
