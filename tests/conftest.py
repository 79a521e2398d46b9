"""Shared pytest harness for paycraft.selfhost.

* Makes the collection importable as ``ansible_collections.paycraft.selfhost``
  (module_utils are unit tested as plain Python libraries).
* ``pg``: a throw-away PostgreSQL 15 cluster for the whole session
  (initdb in a temp dir, a free port on 127.0.0.1, stopped at the end).
* ``pg_db``: a fresh, empty database on that cluster for one test.
* ``docker_engine``: a running Docker engine with Compose v2.
* ``dind_host``: a disposable Docker engine (a Docker-in-Docker host container,
  tests/paycraft_dind.py) for tests that need PayCraft's production names;
  removed with everything in it at the end of the session.

Helpers (``missing``, ``free_port``, ``wait_for``) live in paycraft_testlib.py.
Missing prerequisites skip a test with the reason "not installed: ...",
except when ``PAYCRAFT_STRICT=1`` (set by scripts/test.sh and .ci/run):
then they fail, so a CI run cannot pass by skipping what it should test.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from paycraft_testlib import STRICT, free_port, missing, wait_for  # noqa: F401 - re-exported for tests

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("PAYCRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _collection_root() -> Path:
    """A directory holding ansible_collections/paycraft/selfhost -> REPO."""
    venv_link = REPO / ".venv" / "collections"
    if (venv_link / "ansible_collections" / "paycraft" / "selfhost").resolve() == REPO:
        return venv_link
    root = Path(tempfile.gettempdir()) / f"paycraft-collections-{os.getuid()}"
    link = root / "ansible_collections" / "paycraft" / "selfhost"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != REPO:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(REPO)
    return root


COLLECTIONS_ROOT = _collection_root()
if str(COLLECTIONS_ROOT) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_ROOT))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS_ROOT))

# The Pythons this session starts load the bytecode cache of Ansible's module payloads
# (tests/hosts/pyc_cache: a third of a module task's CPU; the disposable hosts get it when they start).
# PAYCRAFT_TEST_PYC_CACHE=0 leaves it out.
if os.environ.get("PAYCRAFT_TEST_PYC_CACHE", "1") != "0":
    _PYC_SITE = str(REPO / "tests" / "hosts" / "pyc_cache" / "controller")
    if _PYC_SITE not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_PYC_SITE, os.environ.get("PYTHONPATH", "")) if p)


# CPU per test, beside --durations' wall time: on a loaded 2-core CI machine the wall time of a test
# says more about its neighbours than about itself. This process and the children it waited for
# (ansible-playbook, the migrate engines, docker CLIs); the disposable hosts' containers are not in it.
_CPU_PER_TEST: dict[str, float] = {}


def _cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu_seconds()
    yield
    _CPU_PER_TEST[item.nodeid] = _cpu_seconds() - start


def pytest_terminal_summary(terminalreporter):
    if len(_CPU_PER_TEST) < 2:
        return
    terminalreporter.section("most CPU per test (this process and its children; not the hosts' containers)")
    for nodeid, cpu in sorted(_CPU_PER_TEST.items(), key=lambda kv: -kv[1])[:15]:
        terminalreporter.write_line(f"{cpu:8.1f} CPU-s  {nodeid}")
    terminalreporter.write_line(f"{sum(_CPU_PER_TEST.values()):8.1f} CPU-s in all {len(_CPU_PER_TEST)} tests")


@dataclass(frozen=True)
class PgCluster:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    socket_dir: str
    datadir: str

    def dsn(self, dbname: str | None = None) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname or self.dbname}"
        )

    def params(self, dbname: str | None = None) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": dbname or self.dbname,
        }


def _run_as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> PgCluster:
    """A PostgreSQL 15 cluster on 127.0.0.1:<free port>, for the whole session."""
    if not (PG_BIN / "initdb").exists():
        missing(f"PostgreSQL 15 server binaries in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="paycraft-pg-"))
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir()
    pwfile = base / "pw"
    password = uuid.uuid4().hex
    pwfile.write_text(password + "\n")
    if os.getuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockdir, "postgres")
        shutil.chown(pwfile, "postgres")
    _run_as_postgres(
        [str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres", "--pwfile", str(pwfile),
         "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"]
    )
    port = free_port()
    _run_as_postgres(
        [str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-l", str(base / "log"), "-w", "-t", "60",
         "-o", f"-p {port} -h 127.0.0.1 -k {sockdir} -c fsync=off -c max_connections=200", "start"]
    )
    cluster = PgCluster("127.0.0.1", port, "postgres", password, "postgres", str(sockdir), str(datadir))
    try:
        yield cluster
    finally:
        _run_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(pg: PgCluster):
    """A fresh empty database on the session cluster; returns its connection params."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(**pg.params())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.params(name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers, with the Compose v2 plugin; returns its version."""
    if shutil.which("docker") is None:
        missing("docker CLI")
    info = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, text=True)
    if info.returncode != 0:
        missing("a running Docker engine")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        missing("Docker Compose v2 plugin")
    return info.stdout.strip()


@pytest.fixture(scope="session")
def dind_host(tmp_path_factory, docker_engine):
    """A Docker-in-Docker host with its own engine, for the whole session.

    Drive it with ``dind_host.docker(...)`` or ``env=dind_host.env()`` (DOCKER_HOST);
    its ports 54321/54322/3000 are ``dind_host.url(port)`` on the controller. The
    session's basetemp is mounted at the same path inside, for compose bind mounts.
    Never the controller's engine: the demo's or an operator's install lives there.
    """
    from paycraft_dind import DindHost, prerequisites

    prerequisites()
    with DindHost(tmp_path_factory.getbasetemp()) as host:
        yield host
