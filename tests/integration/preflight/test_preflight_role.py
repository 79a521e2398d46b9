"""The preflight role and module, for real, on this machine.

Each bad case is made real (a listener the test starts, a container it runs, thresholds above what the
machine has) and must stop the play once, in the preflight role, with its exact line. The stack's own ports
(54321, 54322, 3000) are never used: another engineer's stack may be running.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import preflight as lib
from paycraft_testlib import cpython, free_port, missing, wait_for

pytestmark = pytest.mark.docker

HOST = "localhost"
FAIL_TASK = "Stop here, before anything changes, when preflight found problems"
BASE_IMAGE = "paycraft-local/debian:bookworm"


@pytest.fixture
def base_vars(tmp_path, docker_engine):
    """Thresholds this machine meets; Docker 20.10 is accepted as inventories/local does."""
    return {
        "paycraft_root": str(tmp_path / "paycraft"),  # does not exist: measured at tmp_path
        "paycraft_compose_project": f"pfx-{uuid.uuid4().hex[:8]}",
        "paycraft_preflight_docker_min_version": "20.10",
        "paycraft_preflight_docker_managed": False,  # absence would be an error: this proves presence
        "paycraft_preflight_min_memory_mb": 256,
        "paycraft_preflight_min_disk_gb": 0.5,
        "paycraft_preflight_disk_paths": [str(tmp_path / "paycraft"), str(tmp_path)],
        "paycraft_preflight_ports": [free_port()],
    }


def _error_lines(result) -> list[str]:
    """The failure message of the role's single fail task, split into lines."""
    assert result.rc != 0, result.stdout
    assert result.failed_tasks() == [FAIL_TASK], "preflight must fail once, in its final task"
    assert result.stats["changed"] == 0
    return result.task(FAIL_TASK)["msg"].splitlines()


def _mem_total_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        return lib.parse_meminfo(fh.read())["MemTotal"] // 1024


@pytest.fixture
def listener():
    """A real python process listening on a free loopback port: (port, pid)."""
    port = free_port()
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('ready', flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ clean pass


def test_clean_pass_reports_every_check_and_changes_nothing(run_preflight, base_vars, docker_engine):
    result = run_preflight(base_vars)
    assert result.rc == 0, result.stdout
    assert result.stats["changed"] == 0 and result.stats["failures"] == 0
    pf = result.preflight
    assert pf["errors"] == 0 and pf["failure_message"] == ""
    facts = pf["facts"]
    assert facts["docker_server_version"] == lib.format_version(lib.parse_version(docker_engine))
    assert lib.parse_version(facts["compose_version"]) >= (2, 0, 0)
    assert facts["memory_available_mb"] > 256
    assert facts["disk"][base_vars["paycraft_root"]]["measured_at"] == os.path.dirname(base_vars["paycraft_root"])
    assert facts["ports"][str(base_vars["paycraft_preflight_ports"][0])]["free"] is True
    assert facts["python_modules"] == {"psycopg2": True, "requests": True}
    assert lib.parse_version(facts["python"]["version"]) >= (3, 9, 0) and facts["python"]["interpreter"]
    assert {f["check"] for f in pf["findings"]} == {
        "docker_version", "compose_version", "memory", "disk", "ports", "tools", "python", "python_modules"}
    assert all(f["severity"] == "info" for f in pf["findings"])
    # the report is printed for the operator
    report = result.task("Report every preflight finding")["msg"]
    assert any(line.startswith("[INFO] docker_version: Docker Engine") for line in report)
    assert result.task("Keep what preflight measured")["ansible_facts"]["paycraft_preflight_facts"] == facts


def test_clean_pass_in_check_mode(run_preflight, base_vars):
    result = run_preflight(base_vars, check=True)
    assert result.rc == 0, result.stdout
    assert result.stats["changed"] == 0
    assert result.preflight["errors"] == 0


# ------------------------------------------------------------------ each bad case: one exact line


def test_docker_too_old(run_preflight, base_vars, docker_engine):
    have = lib.format_version(lib.parse_version(docker_engine))
    lines = _error_lines(run_preflight({**base_vars, "paycraft_preflight_docker_min_version": "99.0"}))
    assert lines == [
        f"Preflight failed on {HOST}: 1 problem(s)",
        f"- Docker Engine {have} on {HOST} is older than the required 99.0 (runbook section 1: Docker Engine ≥ 24). "
        "Upgrade Docker, or lower paycraft_preflight_docker_min_version if you accept the risk.",
    ]


def test_too_little_ram(run_preflight, base_vars):
    need = _mem_total_mb() + 1024
    lines = _error_lines(run_preflight({**base_vars, "paycraft_preflight_min_memory_mb": need}))
    assert lines[0] == f"Preflight failed on {HOST}: 1 problem(s)"
    assert len(lines) == 2
    assert re.fullmatch(
        rf"- Only \d+ MB of RAM is available on {HOST}; runbook section 1 needs {need} MB free "
        r"\(Postgres \+ Kong \+ Edge runtime \+ Node build\)\. Free memory \(stop other services; check with "
        r"free -m\) or give the host more RAM, or lower paycraft_preflight_min_memory_mb if you accept the risk\.",
        lines[1]), lines[1]


def test_too_little_disk(run_preflight, base_vars, tmp_path):
    st = os.statvfs(tmp_path)
    need = st.f_blocks * st.f_frsize // 1024**3 + 1  # more than the whole filesystem
    lines = _error_lines(run_preflight({**base_vars, "paycraft_preflight_min_disk_gb": need,
                                        "paycraft_preflight_disk_paths": [str(tmp_path)]}))
    assert lines[0] == f"Preflight failed on {HOST}: 1 problem(s)"
    assert len(lines) == 2
    assert re.fullmatch(
        rf"- Only [0-9.]+ GB of disk is free for {re.escape(str(tmp_path))} on {HOST}; runbook section 1 needs "
        rf"{need} GB free \(container images \+ Postgres volume\)\. Free space \(df -h {re.escape(str(tmp_path))}; "
        r"docker system prune removes unused images\) or grow the disk, or lower paycraft_preflight_min_disk_gb "
        r"if you accept the risk\.",
        lines[1]), lines[1]


def test_port_in_use_names_pid_process_and_fix(run_preflight, base_vars, listener):
    port, pid = listener
    ports = [*base_vars["paycraft_preflight_ports"], port]
    result = run_preflight({**base_vars, "paycraft_preflight_ports": ports})
    lines = _error_lines(result)
    assert lines[0] == f"Preflight failed on {HOST}: 1 problem(s)"
    assert len(lines) == 2
    assert lines[1].startswith(
        f"- Port {port} on {HOST} is already in use by pid {pid} (python3: python3 -c import socket")
    assert lines[1].endswith(
        f"Identify the conflicting process: lsof -iTCP:{port} -sTCP:LISTEN -n -P ; stop the conflicting service "
        "(often a stale Supabase CLI instance: supabase stop) ; or rebind PayCraft's port in docker-compose.yaml "
        "(runbook section 7: Port already in use).")
    holders = result.preflight["facts"]["ports"][str(port)]["holders"]
    assert [(h["pid"], h["comm"]) for h in holders] == [(pid, "python3")]


def test_missing_tool(run_preflight, base_vars):
    tool = f"paycraft-no-such-tool-{uuid.uuid4().hex[:6]}"
    lines = _error_lines(run_preflight({**base_vars, "paycraft_preflight_required_tools": ["openssl", "curl", tool]}))
    assert lines == [
        f"Preflight failed on {HOST}: 1 problem(s)",
        f"- {tool} is not on the PATH on {HOST} (listed in paycraft_preflight_required_tools). "
        f"Install it (apt-get install {tool}) and check with: command -v {tool}",
    ]


def test_every_problem_at_once_gives_one_report(run_preflight, base_vars, listener, tmp_path):
    port, pid = listener
    tool = "paycraft-no-such-tool"
    result = run_preflight({
        **base_vars,
        "paycraft_preflight_docker_min_version": "99.0",
        "paycraft_preflight_min_memory_mb": _mem_total_mb() + 1024,
        "paycraft_preflight_min_disk_gb": 10**6,
        "paycraft_preflight_disk_paths": [str(tmp_path)],
        "paycraft_preflight_ports": [port],
        "paycraft_preflight_required_tools": ["curl", tool],
        "paycraft_preflight_python_modules": ["psycopg2", "paycraft_no_such_module"],
    })
    lines = _error_lines(result)
    assert lines[0] == f"Preflight failed on {HOST}: 6 problem(s)"
    body = lines[1:]
    assert len(body) == 6
    assert body[0].startswith("- Docker Engine ") and "older than the required 99.0" in body[0]
    assert body[1].startswith("- Only ") and "MB of RAM" in body[1]
    assert body[2].startswith("- Only ") and "GB of disk" in body[2]
    assert body[3].startswith(f"- Port {port} on {HOST} is already in use by pid {pid} (python3")
    assert body[4].startswith(f"- {tool} is not on the PATH on {HOST}")
    assert body[5].startswith(f"- Python module paycraft_no_such_module (needed by the collection's modules) "
                              f"cannot be imported by the target's Python on {HOST}")
    # the report printed before the failure lists the same errors and the passing checks
    report = result.task("Report every preflight finding")["msg"]
    assert sum(line.startswith("[ERROR]") for line in report) == 6
    assert any(line.startswith("[INFO] compose_version") for line in report)


def test_invalid_settings_stop_in_validate(run_preflight, base_vars):
    result = run_preflight({**base_vars, "paycraft_preflight_ports": [70000]})
    assert result.rc != 0
    assert result.failed_tasks() == ["Check that the preflight settings make sense"]
    msg = result.task("Check that the preflight settings make sense")["msg"]
    assert msg.startswith(f"Preflight settings on {HOST} are invalid")
    assert "[70000]" in msg


# ------------------------------------------------------------------ a port held by this stack already


@pytest.fixture
def project_container(docker_engine):
    """A container of a compose project (by label) publishing a free loopback port: (name, project, port)."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        missing(f"the local base image {BASE_IMAGE}")
    project = f"pfx-{uuid.uuid4().hex[:8]}"
    name = f"{project}-holder"
    port = free_port()
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--label", f"com.docker.compose.project={project}",
         "-p", f"127.0.0.1:{port}:8080", BASE_IMAGE, "sleep", "300"],
        check=True, capture_output=True, text=True)
    try:
        wait_for(lambda: port in lib.tcp_listeners(), timeout=30, what=f"docker-proxy listening on {port}")
        yield name, project, port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_port_held_by_this_stack_is_accepted(run_preflight, base_vars, project_container):
    name, project, port = project_container
    result = run_preflight({**base_vars, "paycraft_compose_project": project, "paycraft_preflight_ports": [port]})
    assert result.rc == 0, result.stdout
    ports = [f for f in result.preflight["findings"] if f["check"] == "ports"]
    assert ports == [{
        "check": "ports", "severity": "info", "fix": "",
        "message": f"Port {port} on {HOST} is already published by container {name} of compose project "
                   f"{project} (this stack): OK.",
    }]
    fact = result.preflight["facts"]["ports"][str(port)]
    assert fact["containers"] == [name]
    assert {h["comm"] for h in fact["holders"]} <= lib.DOCKER_PUBLISHERS


def test_port_held_by_another_project_is_an_error(run_preflight, base_vars, project_container):
    name, project, port = project_container
    lines = _error_lines(run_preflight({**base_vars, "paycraft_compose_project": f"{project}-other",
                                        "paycraft_preflight_ports": [port]}))
    assert len(lines) == 2
    assert lines[1].startswith(
        f'- Port {port} on {HOST} is already in use by container {name} (compose project "{project}") through pid ')
    assert f"not by this stack (compose project {project}-other)" in lines[1]
    assert f"docker stop {name}" in lines[1]


# ------------------------------------------------------------------ the module alone


def test_module_adhoc_fails_once_with_every_error(tmp_path):
    """`ansible localhost -m paycraft.selfhost.paycraft_preflight`: the module itself fails with the report."""
    tool = "paycraft-no-such-tool"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "--check", "-m", "paycraft.selfhost.paycraft_preflight",
         "-a", f'{{"host": "web1", "docker_min_version": "99.0", "required_tools": ["{tool}"], '
               f'"ports": [{free_port()}], "disk_paths": ["{tmp_path}"], "min_disk_gb": 0.1, "min_memory_mb": 1}}'],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json",
             "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false"})
    assert proc.returncode != 0
    res = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert res["failed"] is True and res["changed"] is False
    lines = res["msg"].splitlines()
    assert lines[0] == "Preflight failed on web1: 2 problem(s)"
    assert lines[1].startswith("- Docker Engine ") and " on web1 is older than the required 99.0" in lines[1]
    assert lines[2].startswith(f"- {tool} is not on the PATH on web1")
    assert res["errors"] == 2 and len(res["findings"]) >= 7


# ------------------------------------------------------------ target Python
PYTHON_TASK = "Check that the collection's modules can run on the Python (3.9 or later)"
FACTS_PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "preflight_facts.yml"


def test_python_older_than_3_9_stops_preflight_in_one_line_before_any_module(run_preflight, base_vars):
    old, version = cpython(8)
    result = run_preflight(base_vars, interpreter=old, playbook=FACTS_PLAYBOOK)
    assert result.rc != 0
    assert result.failed_tasks() == [PYTHON_TASK + " of localhost"]
    message = result.task(PYTHON_TASK)["msg"]
    assert message == (
        f"Preflight failed on localhost: Python {version} ({old}) is older than 3.9, the oldest the collection's "
        f"modules run on. {lib.PYTHON_FIX}")
    with pytest.raises(KeyError):
        result.preflight  # noqa: B018 - the module never ran on that interpreter
    assert result.stats["changed"] == 0


def test_python_3_9_passes_and_runs_every_check(run_preflight, base_vars):
    """The module and its module_utils run on the oldest Python the collection supports."""
    py39, _ = cpython(9)
    result = run_preflight({**base_vars, "paycraft_preflight_python_modules": []}, interpreter=py39,
                           playbook=FACTS_PLAYBOOK)
    assert result.task(PYTHON_TASK).get("skipped") is True
    pf = result.preflight
    assert pf["errors"] == 0, pf["report"]
    assert pf["facts"]["python"]["version"].startswith("3.9.")
    assert [f["severity"] for f in pf["findings"] if f["check"] == "python"] == ["info"]
    assert result.rc == 0, result.stdout
