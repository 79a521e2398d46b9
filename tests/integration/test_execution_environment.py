"""The execution environment for AWX / Ansible Automation Platform.

``scripts/build-ee.sh`` builds the collection tarball and runs
``ansible-builder create`` on meta/execution-environment.yml, offline. The test
reads the generated build context and checks that it carries the collection's
real dependencies: psycopg2 (paycraft_migrate, community.postgresql), Docker's
CLI and Compose v2 (community.docker), and the PostgreSQL client whose pg_dump
takes the snapshots; and that this collection's tarball is installed by the
galaxy stage.

Then it runs the context's own introspect.py (the script the builder stage runs
inside the image) on the collection installed from that tarball: the
collection-level metadata (the same meta/execution-environment.yml, read relative
to the collection root) yields the same Python and system requirements.

The image itself is not built here: its Fedora base cannot be pulled on this
machine, and AWX is out of reach. README.md says how to build and register it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _lines(path: Path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


@pytest.fixture(scope="module")
def context():
    if not (BIN / "ansible-builder").exists():
        pytest.fail("ansible-builder is not installed (requirements.txt; run scripts/prepare.sh)")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run([str(REPO / "scripts" / "build-ee.sh")], capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    ctx = REPO / "build" / "ee" / "context"
    assert (ctx / "Containerfile").is_file(), res.stdout
    return ctx


def test_context_lists_the_python_dependencies(context):
    reqs = _lines(context / "_build" / "requirements.txt")
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}
    assert "psycopg2-binary" in names or "psycopg2" in names, reqs
    assert {"docker", "requests"} <= names, reqs


def test_context_lists_docker_cli_compose_and_pg_dump(context):
    bindep = _lines(context / "_build" / "bindep.txt")
    rpm = {ln.split()[0] for ln in bindep if "platform:rpm" in ln}
    # Fedora's packages: moby-engine carries the docker CLI, docker-compose the
    # Compose v2 plugin, postgresql the client tools (pg_dump, pg_dumpall, pg_restore)
    assert {"moby-engine", "docker-compose", "postgresql"} <= rpm, bindep
    dpkg = {ln.split()[0] for ln in bindep if "platform:dpkg" in ln}
    assert {"docker.io", "docker-compose", "postgresql-client"} <= dpkg, bindep
    containerfile = (context / "Containerfile").read_text()
    assert "install-from-bindep" in containerfile


def test_context_installs_this_collection_and_its_dependencies(context):
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    names = {c["name"] for c in galaxy["collections"]}
    assert {"community.docker", "community.postgresql", "community.general", "ansible.posix"} <= names
    assert "collections/paycraft-selfhost.tar.gz" in names
    assert (context / "_build" / "collections" / "paycraft-selfhost.tar.gz").is_file()


def test_installed_collection_declares_the_same_requirements(context, tmp_path):
    dest = tmp_path / "collections"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest))
    res = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(dest),
                          str(context / "_build" / "collections" / "paycraft-selfhost.tar.gz")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    pip_out, bindep_out = tmp_path / "req.txt", tmp_path / "bindep.txt"
    res = subprocess.run([sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect",
                          "--write-pip", str(pip_out), "--write-bindep", str(bindep_out), str(dest)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # introspection tags each line with the collection it came from
    pip = [ln.split("#")[0].strip() for ln in pip_out.read_text().splitlines() if ln.strip()]
    sysdeps = [ln.split("#")[0].strip() for ln in bindep_out.read_text().splitlines() if ln.strip()]
    assert sorted(pip) == sorted(_lines(REPO / "requirements-ee.txt")), res.stdout
    assert sorted(sysdeps) == sorted(_lines(REPO / "bindep.txt")), res.stdout
