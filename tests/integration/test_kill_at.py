"""molecule/resources/files/kill-at.sh, the kill -9 of the Molecule upgrade scenarios, on a real container.

A container of the bare test host image stands for the host; its /etc/paycraft/operation.json is
written from the controller as an upgrade would write it. kill-at.sh watches it from inside the
container and kills the run's whole process group the moment the step appears; when the run ends
first, or the step never comes, it says so and leaves no watcher behind on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KILL_AT = REPO / "molecule" / "resources" / "files" / "kill-at.sh"
IMAGE = "paycraft-local/host:bookworm"
RECORD = "/etc/paycraft/operation.json"


@pytest.fixture
def host(docker_engine):
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"the test host image {IMAGE} is missing: bash tests/hosts/build.sh")
    name = f"paycraft-pytest-killat-{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, IMAGE, "sleep", "infinity"],
                   check=True, capture_output=True)
    try:
        write(name, '{"status": "done", "steps": [{"name": "recreate"}]}')
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def write(host: str, record: str) -> None:
    put = f"mkdir -p /etc/paycraft && cat > {RECORD}.tmp && mv {RECORD}.tmp {RECORD}"
    subprocess.run(["docker", "exec", "-i", host, "sh", "-c", put], input=record, text=True, check=True)


def host_pythons(host: str) -> list[str]:
    """Command lines of the python3 processes on the host (it has no procps)."""
    out = subprocess.run(["docker", "exec", host, "sh", "-c",
                          'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("python3")]


def kill_at(host: str, step: str, max_s: int, tmp_path: Path, *cmd: str,
            record: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, KILL_AT_RECORD=record) if record else None
    return subprocess.run(["bash", str(KILL_AT), host, step, str(max_s), str(tmp_path / "run.log"), "--", *cmd],
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_run_is_killed_once_the_step_has_begun(host, tmp_path):
    marker = tmp_path / "survived"
    # the "upgrade": starts its record, reaches the step 2 s later, and would run on for a minute
    script = tmp_path / "upgrade.sh"
    started = json.dumps({"status": "running", "steps": [{"name": "snapshot"}]})
    reached = json.dumps({"status": "running", "steps": [{"name": "snapshot"}, {"name": "recreate"}]})
    script.write_text(
        f"docker exec -i {host} sh -c 'cat > {RECORD}' <<< '{started}'\n"
        "sleep 2\n"
        f"docker exec -i {host} sh -c 'cat > {RECORD}' <<< '{reached}'\n"
        f"(sleep 60; touch {marker}) &\n"
        "sleep 60\n"
    )
    t0 = time.monotonic()
    out = kill_at(host, "recreate", 60, tmp_path, "bash", str(script))
    assert out.returncode == 0, out.stderr
    assert '"recreate"' in out.stdout and '"running"' in out.stdout
    assert time.monotonic() - t0 < 50, "the run was not killed when the step began"
    # the whole process group went, the background child too
    time.sleep(1)
    pids = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout.split()
    assert pids == [] and not marker.exists()
    assert host_pythons(host) == []


def test_a_run_that_ends_first_is_reported_and_the_watcher_ended(host, tmp_path):
    out = kill_at(host, "smoke", 60, tmp_path, "bash", "-c", "echo upgrade refused; exit 4")
    assert out.returncode == 1
    assert "the run ended (rc=4) before step smoke began" in out.stderr
    assert "upgrade refused" in out.stderr
    assert host_pythons(host) == []


def test_a_step_that_never_begins_times_out(host, tmp_path):
    # the finished record of an earlier run names the step: only a running operation counts
    out = kill_at(host, "recreate", 2, tmp_path, "sleep", "30")
    assert out.returncode == 1
    assert "step recreate did not begin within 2s" in out.stderr
    assert os.path.exists(tmp_path / "run.log")


def test_another_record_is_watched_by_its_status_and_printed_without_its_values(host, tmp_path):
    # a rotation's record (rotate.json): "started", then "applied"; it holds the old values
    rotate = "/etc/paycraft/rotate.json"
    marker = tmp_path / "survived"
    script = tmp_path / "rotate.sh"
    started = json.dumps({"status": "started", "kind": "db_password", "old_env": "PAYCRAFT_DB_PASSWORD=old-value"})
    applied = json.dumps({"status": "applied", "kind": "db_password", "old_env": "PAYCRAFT_DB_PASSWORD=old-value"})
    script.write_text(
        f"docker exec -i {host} sh -c 'cat > {rotate}' <<< '{started}'\n"
        "sleep 2\n"
        f"docker exec -i {host} sh -c 'cat > {rotate}' <<< '{applied}'\n"
        f"(sleep 60; touch {marker}) &\n"
        "sleep 60\n"
    )
    out = kill_at(host, "applied", 60, tmp_path, "bash", str(script), record=rotate)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "applied", "kind": "db_password"}
    assert "old-value" not in out.stdout + out.stderr
    time.sleep(1)
    assert subprocess.run(["pgrep", "-f", str(script)], capture_output=True).stdout == b""
    assert not marker.exists()
    assert host_pythons(host) == []
