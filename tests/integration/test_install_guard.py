"""scripts/install-state.py, the guard the test command puts around the tests.

It records a fingerprint of the PayCraft install on the controller and fails
naming every difference afterwards. Here a small install under the production
names (compose project `selfhost`, containers `paycraft_db` and
`paycraft_kong`, volume `selfhost_paycraft-db`) runs on a disposable
Docker-in-Docker host, never on the controller's engine; the config and root
directories are temp dirs passed by option.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from paycraft_testlib import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-state.py"
BASE_IMAGE = "paycraft-local/debian:bookworm"
PROJECT = "selfhost"
SERVICE = """\
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
"""
COMPOSE = f"""\
services:
  db:
    container_name: paycraft_db
{SERVICE.format(image=BASE_IMAGE)}\
    volumes:
      - paycraft-db:/var/lib/postgresql/data
  kong:
    container_name: paycraft_kong
{SERVICE.format(image=BASE_IMAGE)}\
volumes:
  paycraft-db:
"""
SECRET = "PAYCRAFT_DB_PASSWORD=not-for-the-output-7f3a"

pytestmark = pytest.mark.docker


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def install(dind_host, tmp_path_factory):
    """The directories of a small install; the stack runs on the DinD host's engine."""
    dind_host.load(BASE_IMAGE)
    base = tmp_path_factory.mktemp("guard")
    project_dir = base / "infra"
    project_dir.mkdir()
    (project_dir / "docker-compose.yaml").write_text(COMPOSE)
    config_dir, root_dir = base / "etc-paycraft", base / "opt-paycraft"
    config_dir.mkdir()
    src = root_dir / "src"
    src.mkdir(parents=True)
    git("init", "-q", cwd=src)
    git("commit", "-q", "--allow-empty", "-m", "v1.0.0", cwd=src)
    yield {"host": dind_host, "project_dir": project_dir, "config_dir": config_dir, "root_dir": root_dir,
           "env_file": config_dir / "paycraft.env", "src": src, "fingerprint": base / "state.json"}
    compose(dind_host, project_dir, "down", "-v", "-t", "0", check=False)


def compose(host, project_dir, *args, check=True):
    return subprocess.run(["docker", "compose", "-p", PROJECT, "--project-directory", str(project_dir), *args],
                          cwd=project_dir, env=host.env(), capture_output=True, text=True, check=check)


def state(install, action, *extra, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), action, str(install["fingerprint"]), "--config-dir", str(install["config_dir"]),
         "--root-dir", str(install["root_dir"]), *extra],
        env=install["host"].env() if env is None else env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def recorded(install):
    """The install up (as recorded), then `record`."""
    compose(install["host"], install["project_dir"], "up", "-d")
    install["env_file"].write_text(SECRET + "\n")
    install["env_file"].chmod(0o600)
    rec = state(install, "record")
    assert rec.returncode == 0, rec.stderr
    return install


def differences(proc) -> list[str]:
    assert proc.returncode == 1, f"check exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("controller install CHANGED since ")
    assert SECRET not in proc.stdout + proc.stderr
    return lines[1:]


def test_record_then_check_unchanged(recorded):
    rec = state(recorded, "record")
    assert rec.stdout.startswith("controller install recorded: 2 container(s) (paycraft_db, paycraft_kong); "
                                 "volume selfhost_paycraft-db present; network selfhost_default present;")
    check = state(recorded, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("controller install unchanged: 2 container(s) (paycraft_db, paycraft_kong)")
    assert f"{recorded['env_file']} present" in check.stdout
    assert re.search(rf"{re.escape(str(recorded['src']))} at [0-9a-f]{{12}}", check.stdout)
    assert SECRET not in check.stdout + recorded["fingerprint"].read_text()
    # --docker-host instead of DOCKER_HOST: the same engine, the same answer
    env = {k: v for k, v in recorded["host"].env().items() if k != "DOCKER_HOST"}
    again = state(recorded, "check", "--docker-host", recorded["host"].docker_host, env=env)
    assert again.returncode == 0, again.stdout + again.stderr


def test_recreated_container_is_named(recorded):
    compose(recorded["host"], recorded["project_dir"], "up", "-d", "--force-recreate", "db")
    lines = differences(state(recorded, "check"))
    assert len(lines) == 1, lines
    assert re.fullmatch(r"container paycraft_db: id [0-9a-f]{12} -> [0-9a-f]{12} \(recreated\)", lines[0])


def test_removed_volume_is_named(recorded):
    compose(recorded["host"], recorded["project_dir"], "down", "-v", "-t", "0")
    lines = differences(state(recorded, "check"))
    assert "volume selfhost_paycraft-db removed" in lines
    assert "network selfhost_default removed" in lines
    assert any(re.fullmatch(r"container paycraft_db removed \(was [0-9a-f]{12}, running\)", x) for x in lines), lines
    assert any(x.startswith("container paycraft_kong removed") for x in lines), lines
    assert len(lines) == 4, lines


def test_changed_env_file_is_named(recorded):
    with recorded["env_file"].open("a") as fh:
        fh.write("PAYCRAFT_JWT_SECRET=another-secret-value\n")
    lines = differences(state(recorded, "check"))
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"{re.escape(str(recorded['env_file']))} changed \(sha256 [0-9a-f]{{12}} -> [0-9a-f]{{12}}\)",
                        lines[0])
    recorded["env_file"].unlink()
    assert differences(state(recorded, "check")) == [f"{recorded['env_file']} removed"]


def test_restart_new_container_and_checkout_are_named(recorded):
    host = recorded["host"]
    host.docker("restart", "-t", "0", "paycraft_kong")
    host.docker("run", "-d", "--name", "paycraft_extra", BASE_IMAGE, "sleep", "300")
    git("commit", "-q", "--allow-empty", "-m", "v1.1.0", cwd=recorded["src"])
    try:
        lines = differences(state(recorded, "check"))
    finally:
        host.docker("rm", "-f", "paycraft_extra", check=False)
    assert any(re.fullmatch(r"container paycraft_kong: restarted \(started \S+ -> \S+\)", x) for x in lines), lines
    assert any(re.fullmatch(r"container paycraft_extra added \([0-9a-f]{12}, paycraft-local/debian:bookworm, "
                            r"running\)", x) for x in lines), lines
    assert any(re.fullmatch(rf"{re.escape(str(recorded['src']))}: HEAD [0-9a-f]{{12}} -> [0-9a-f]{{12}}", x)
               for x in lines), lines
    assert len(lines) == 3, lines


def test_an_engine_that_stopped_answering_is_named(recorded):
    gone = f"tcp://127.0.0.1:{free_port()}"
    lines = differences(state(recorded, "check", "--docker-host", gone))
    assert len(lines) == 1 and lines[0].startswith(f"docker engine at {gone} no longer answers"), lines


def test_missing_fingerprint_says_what_to_run(install, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "check", str(tmp_path / "none.json"),
                           "--config-dir", str(install["config_dir"]), "--root-dir", str(install["root_dir"])],
                          env=install["host"].env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"scripts/install-state.py record {tmp_path / 'none.json'}" in proc.stderr
