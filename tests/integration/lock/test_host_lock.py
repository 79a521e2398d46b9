"""The host lock every operation takes (issue #32), on a disposable Docker-in-Docker host, through Ansible.

An operation is held open cheaply: ``hold.yml`` (beside this file) takes the lock exactly as every playbook
does (roles/common tasks/lock.yml, with its keeper on the controller), says its step, and waits until the
test lets it go. PayCraft itself is not installed: every refusal below happens before anything would touch
the stack. With the lock held, as an operator would run them:

- ``site.yml`` during an upgrade is refused, naming the holder (user@controller, playbook, pid) and its step,
  once the lock is older than its lease: the live, renewing holder is not broken;
- the scheduled backup's runner (installed by ``backup.yml``) waits its bounded time, then skips with the
  logged line and exit code 75;
- ``rotate.yml`` during a backup is refused;
- ``kill -9`` of the holding ansible-playbook: its keeper gives the lock back, and the next run takes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from paycraft_testlib import missing

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
LOCK = "/etc/paycraft/operation.json.lock"
LEASE = 20
PULSE = 3
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def until(condition, what: str, bound: float = 900.0):
    """Wait for ``condition``; the bound only stops a broken build from hanging."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from paycraft_dind import DindHost, _controller_env, prerequisites

    prerequisites()
    if shutil.which("ansible-playbook") is None:
        missing("ansible-playbook")
    root = tmp_path_factory.mktemp("host-lock")
    t0 = time.monotonic()
    with DindHost(tmp_path_factory.getbasetemp(), name=f"paycraft-pytest-lock-{os.getpid()}") as host:
        inventory = root / "inventory.yml"
        inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: {
            "ansible_connection": "community.docker.docker",
            "ansible_python_interpreter": "/usr/bin/python3",
            "paycraft_version": "v1.0.0",
            "paycraft_lock_heartbeat_seconds": 1,
            "paycraft_lock_pulse_seconds": PULSE,
            "paycraft_lock_lease_seconds": LEASE,
            "paycraft_lock_keeper_log": str(root / "keeper.log"),
            "paycraft_backup_scheduler": "none",
            "paycraft_backup_install_packages": False,
        }}}}))
        env = {**_controller_env(), "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}

        def play(playbook: str, *extra: str, timeout: float = 900) -> tuple[int, str]:
            path = playbook if "/" in playbook else str(REPO / "playbooks" / playbook)
            proc = subprocess.run(["ansible-playbook", "-i", str(inventory), path, *extra], env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=timeout)
            return proc.returncode, proc.stdout + proc.stderr

        def sh(script: str) -> subprocess.CompletedProcess:
            return subprocess.run(["docker", "exec", host.name, "sh", "-c", script], capture_output=True, text=True,
                                  env=_controller_env(), timeout=600)

        def info() -> dict:
            out = sh(f"cat {LOCK}.json 2>/dev/null").stdout
            return json.loads(out) if out.strip() else {}

        def free() -> bool:
            return sh(f"flock -n {LOCK} true").returncode == 0

        @contextmanager
        def hold(operation: str, step: str, **extra_vars):
            """hold.yml: a real ansible-playbook holding the lock, with its keeper, until the block ends."""
            release = root / f"release-{time.monotonic_ns()}"
            proc = subprocess.Popen(
                ["ansible-playbook", "-i", str(inventory), str(HERE / "hold.yml"), "-e",
                 json.dumps({"paycraft_lock_operation": operation, "paycraft_lock_step": step,
                             "paycraft_test_release_file": str(release), **extra_vars})],
                env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                until(lambda: proc.poll() is None and info().get("step") == step and f":{proc.pid}:" in
                      info().get("run_id", "") and not free(), f"hold.yml took the lock ({operation})")
                yield proc
            finally:
                release.touch()
                try:
                    out, _ = proc.communicate(timeout=600)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                proc.output = out

        # the scheduled backup's runner, installed the way operators do (no schedule: the test starts it)
        rc, out = play("backup.yml", "-e", "paycraft_backup_now=false")
        assert rc == 0, out[-6000:]
        assert free() and info().get("state") == "released", info()
        print(f"\n[host-lock] host up and runner installed in {time.monotonic() - t0:.0f} s")
        yield {"play": play, "sh": sh, "info": info, "free": free, "hold": hold, "name": host.name, "root": root}
    print(f"[host-lock] module done in {time.monotonic() - t0:.0f} s")


def test_site_during_an_upgrade_is_refused_by_a_live_holder_older_than_its_lease_and_the_backup_skips(live):
    t0 = time.monotonic()
    me = f"{os.environ.get('USER') or 'root'}@{socket.gethostname()}"
    with live["hold"]("upgrade to v1.1.0", "migrate begun") as upgrade:
        first = live["info"]()
        # the lock outlives its lease: renewed by the holder, kept alive by the keeper's pulses
        until(lambda: live["info"]().get("renewed_epoch", 0) - first["since_epoch"] > 1.5 * LEASE,
              "the lock is older than 1.5 leases")
        pulse = json.loads(live["sh"](f"cat {LOCK}.pulse").stdout)
        assert pulse["pulse_epoch"] - first["since_epoch"] > LEASE / 2, pulse  # the keeper pulsed since

        rc, out = live["play"]("site.yml")
        assert rc != 0, out[-4000:]
        assert "another operation holds the lock of this host" in out, out[-4000:]
        assert f"upgrade to v1.1.0 (step: migrate begun) run by {me}, hold.yml pid {upgrade.pid}" in out, out[-4000:]
        # nothing of site.yml ran past the lock: no preflight, no install
        assert "TASK [paycraft.selfhost.preflight" not in out and "TASK [paycraft.selfhost.docker" not in out

        # the scheduled backup waits its bounded time, then skips, visibly
        runner = live["sh"]("/usr/local/sbin/paycraft-backup --lock-wait 4")
        assert runner.returncode == 75, runner
        assert f"paycraft-backup on {live['name']} SKIPPED (exit 75): waited 4 s for the host lock" in runner.stderr
        assert "upgrade to v1.1.0 (step: migrate begun)" in runner.stderr, runner.stderr
        taken = live["sh"]("ls /var/backups/paycraft/backups 2>/dev/null | grep -c T || true").stdout.strip()
        assert taken in ("", "0"), taken

        # not broken: the same holder, still renewing
        after = live["info"]()
        assert after["holder_pid"] == first["holder_pid"] and after["run_id"] == first["run_id"], after
        assert after["state"] == "held" and after["renewed_epoch"] > first["renewed_epoch"]
    assert upgrade.returncode == 0, upgrade.output[-4000:]
    assert live["free"]() and live["info"]()["state"] == "released"
    print(f"[host-lock] site during an upgrade + backup skip: {time.monotonic() - t0:.0f} s")


def test_rotate_during_a_backup_is_refused(live):
    t0 = time.monotonic()
    with live["hold"]("backup", "dump") as backup:
        rc, out = live["play"]("rotate.yml", "-e", "paycraft_rotate_secret=db_password",
                               "-e", "paycraft_rotate_confirm=db_password")
        assert rc != 0, out[-4000:]
        assert f"backup (step: dump) run by {os.environ.get('USER') or 'root'}@{socket.gethostname()}, hold.yml pid " \
               f"{backup.pid}" in out, out[-4000:]
        assert "Nothing was changed" in out
    assert backup.returncode == 0, backup.output[-4000:]
    print(f"[host-lock] rotate during a backup: {time.monotonic() - t0:.0f} s")


def test_a_killed_run_gives_the_lock_back_through_its_keeper(live):
    t0 = time.monotonic()
    # a lease long enough that a loaded controller's slow pulses cannot let it run out: what gives the
    # lock back here must be the keeper seeing its ansible-playbook gone, not the lease
    with live["hold"]("rollback", "restore begun", paycraft_lock_lease_seconds=600) as rollback:
        rollback.send_signal(signal.SIGKILL)
        rollback.wait()
        # the keeper sees its ansible-playbook gone and releases the lock (no lease to wait out)
        until(lambda: live["free"](), "the keeper released the lock of the killed run")
        assert live["info"]()["state"] == "released"
    # the next operation takes it: the runner runs (and fails only because PayCraft is not installed here)
    runner = live["sh"]("/usr/local/sbin/paycraft-backup --lock-wait 0")
    assert runner.returncode == 1 and "FAILED" in runner.stderr, runner
    assert live["free"]() and live["info"]()["state"] == "released"
    print(f"[host-lock] a killed run: {time.monotonic() - t0:.0f} s")
