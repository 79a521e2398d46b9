"""module_utils/lease.py: the host lock every operation takes, a lease renewed while its owner lives.

The heartbeat logic runs in-process with a fake clock; the rest with real holder processes (the same
file, started with ``python3 -c``), real flocks, real owner processes killed with real signals. No
assertion depends on how long anything took: each wait is for a condition (bounded only to keep a
broken build from hanging).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import lease

REPO = Path(__file__).resolve().parents[4]


def holder(run_id: str, **extra) -> dict:
    return dict({"run_id": run_id, "controller": "ctl-a", "user": "ops", "pid": 4242, "playbook": "upgrade.yml"},
                **extra)


def until(condition, what: str, bound: float = 60.0):
    """Wait for ``condition``; the bound only stops a broken build from hanging."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def lock(tmp_path):
    path = str(tmp_path / "operation.json.lock")
    yield path
    info = lease.read_json(lease.info_path(path))
    if info.get("holder_pid") and lease.flock_held(path):
        lease.stop_holder(path, info)


@pytest.fixture
def owner():
    """A real process standing for the owner of a lock (the backup runner, a controller's run)."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# --- the heartbeat, with a fake clock ---------------------------------------------------------------

def test_the_holder_renews_while_its_run_pulses_and_gives_up_only_when_the_pulses_stop(lock):
    clock = [1000.0]
    pulses_until = 1000.0 + 60  # the run lives for a minute, then dies
    beats = []

    def sleep(seconds):
        clock[0] += seconds
        if clock[0] <= pulses_until:
            lease.write_json(lease.pulse_path(lock), {"run_id": "run-1", "pulse_epoch": clock[0]})
        beats.append(dict(lease.read_json(lease.info_path(lock))))

    lease.write_json(lease.pulse_path(lock), {"run_id": "run-1", "pulse_epoch": clock[0]})
    lease.write_json(lease.doing_path(lock), {"run_id": "run-1", "operation": "upgrade", "step": "migrate begun"})
    result = lease.hold(lock, holder("run-1"), heartbeat=5, lease=30, clock=lambda: clock[0], sleep=sleep)

    assert result == "lost"
    info = lease.read_json(lease.info_path(lock))
    assert info["state"] == "lost" and "no pulse from its run for more than 30 s" in info["lost_because"]
    renewals = [b["renewed_epoch"] for b in beats if b.get("state") == "held"]
    # every heartbeat while the run pulsed renewed the lease, far past the lease's 30 s from the start ...
    assert renewals == sorted(renewals) and renewals[-1] - 1000.0 >= 60
    # ... and it was given up only once the last pulse was older than the lease
    assert 30 < clock[0] - pulses_until <= 30 + 5
    assert info["step"] == "migrate begun" and info["operation"] == "upgrade"
    assert not lease.flock_held(lock)


def test_a_pulse_of_another_run_does_not_keep_a_lease_alive(lock):
    lease.write_json(lease.pulse_path(lock), {"run_id": "someone-else", "pulse_epoch": 1000.0})
    assert lease.owner_alive(lock, {"run_id": "run-1"}, 1000.0, 30, 0) is False
    lease.write_json(lease.pulse_path(lock), {"run_id": "run-1", "pulse_epoch": 1000.0})
    assert lease.owner_alive(lock, {"run_id": "run-1"}, 1030.0, 30, 0) is True
    assert lease.owner_alive(lock, {"run_id": "run-1"}, 1030.5, 30, 0) is False


def test_status_is_held_while_renewed_and_stale_only_when_the_heartbeats_stop(lock):
    lease.write_json(lease.info_path(lock), dict(holder("run-1"), lease_seconds=30, renewed_epoch=1000.0,
                                                 since_epoch=100.0))
    # held for far longer than the lease, renewed 29 s ago: held
    assert lease.status(lock, now=1029.0, held=True)[0] == "held"
    assert lease.status(lock, now=1031.0, held=True)[0] == "stale"
    # no process holds the flock: free, whatever the file says
    assert lease.status(lock, now=1001.0, held=False)[0] == "free"


# --- real holder processes -------------------------------------------------------------------------------

def test_a_live_holder_older_than_its_lease_is_not_broken_and_the_second_run_is_told_who_holds_it(lock, owner):
    first = lease.acquire(lock, holder("run-1"), "upgrade to v1.1.0", heartbeat=0.1, lease=0.5,
                          watch_pid=owner.pid, step="snapshot")
    assert first["reused"] is False and lease.pid_alive(first["holder_pid"])
    # wait until the lock is older than its lease (and renewed since)
    until(lambda: (lambda i: i.get("renewed_epoch", 0) - i.get("since_epoch", 1e18) > 3 * 0.5)(
        lease.read_json(lease.info_path(lock))), "the lock outlived its lease")
    with pytest.raises(lease.LockError) as refused:
        lease.acquire(lock, holder("run-2", controller="ctl-b", user="eve", pid=777, playbook="site.yml"), "site")
    text = str(refused.value)
    assert "upgrade to v1.1.0 (step: snapshot) run by ops@ctl-a, upgrade.yml pid 4242" in text, text
    assert refused.value.status == "held"
    assert lease.read_json(lease.info_path(lock))["holder_pid"] == first["holder_pid"]
    assert lease.pid_alive(first["holder_pid"]) and lease.status(lock)[0] == "held"
    # the same run taking it again is not a second operation
    again = lease.acquire(lock, holder("run-1"), "upgrade to v1.1.0", step="migrate")
    assert again["reused"] is True and again["holder_pid"] == first["holder_pid"]


def test_a_holder_renewed_by_pulses_keeps_the_lock_past_its_lease(lock):
    stop = threading.Event()
    lease.acquire(lock, holder("run-1"), "rotate db_password", heartbeat=0.1, lease=0.6)

    def pulse():
        while not stop.is_set():
            lease.renew(lock, "run-1")
            stop.wait(0.1)

    thread = threading.Thread(target=pulse)
    thread.start()
    try:
        until(lambda: (lambda i: i.get("renewed_epoch", 0) - i.get("since_epoch", 1e18) > 3 * 0.6)(
            lease.read_json(lease.info_path(lock))), "the lock outlived its lease")
        with pytest.raises(lease.LockError, match=r"rotate db_password \(step: start\)|rotate db_password \(step: -\)"):
            lease.acquire(lock, holder("run-2"), "backup")
    finally:
        stop.set()
        thread.join()
    # the pulses stopped: the holder gives the lock up by itself, and says why
    until(lambda: not lease.flock_held(lock), "the holder gave the lock up")
    info = lease.read_json(lease.info_path(lock))
    assert info["state"] == "lost" and "no pulse" in info["lost_because"]
    assert lease.acquire(lock, holder("run-2"), "backup")["run_id"] == "run-2"


def test_a_dead_owner_process_is_detected_and_frees_the_lock(lock, owner):
    first = lease.acquire(lock, holder("backup-1"), "scheduled backup", heartbeat=0.1, lease=300, watch_pid=owner.pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    # long before the 300 s lease: the holder watches the process itself
    until(lambda: not lease.flock_held(lock), "the holder saw its owner die")
    info = lease.read_json(lease.info_path(lock))
    assert info["state"] == "lost" and f"its process {owner.pid} ended" in info["lost_because"]
    until(lambda: not lease.pid_alive(first["holder_pid"]), "the holder process ended")
    assert lease.status(lock)[0] == "free"


def test_a_killed_holder_frees_the_lock_and_the_next_run_takes_it(lock, owner):
    first = lease.acquire(lock, holder("run-1"), "upgrade", heartbeat=0.1, lease=300, watch_pid=owner.pid)
    os.kill(first["holder_pid"], signal.SIGKILL)
    until(lambda: not lease.flock_held(lock), "the flock died with its holder")
    # the file still names run-1 as holding: the flock decides
    assert lease.read_json(lease.info_path(lock))["state"] == "held"
    assert lease.status(lock)[0] == "free"
    with pytest.raises(lease.LockError, match="no longer holds the host lock: it is free"):
        lease.check_owner(lock, "run-1")
    second = lease.acquire(lock, holder("run-2"), "site", heartbeat=0.1, lease=300, watch_pid=owner.pid)
    assert second["run_id"] == "run-2"


def test_a_frozen_holder_is_stale_and_broken_by_the_next_run(lock, owner):
    first = lease.acquire(lock, holder("run-1"), "upgrade", heartbeat=0.1, lease=1, watch_pid=owner.pid)
    os.kill(first["holder_pid"], signal.SIGSTOP)
    frozen_at = lease.read_json(lease.info_path(lock))["renewed_epoch"]
    later = frozen_at + 5  # the clock of the next run: the lease passed without a heartbeat
    assert lease.status(lock, now=later)[0] == "stale"
    second = lease.acquire(lock, holder("run-2"), "site", heartbeat=0.1, lease=1, watch_pid=owner.pid,
                           clock=lambda: later)
    assert second["broke"]["run_id"] == "run-1" and second["broke"]["broken_as"] == "stale"
    assert second["run_id"] == "run-2"
    until(lambda: not lease.pid_alive(first["holder_pid"]), "the frozen holder was stopped")


def test_renew_step_and_release_belong_to_the_holding_run_only(lock, owner):
    lease.acquire(lock, holder("run-1"), "upgrade", heartbeat=0.1, lease=300, watch_pid=owner.pid)
    with pytest.raises(lease.LockError, match="held by another run: upgrade"):
        lease.renew(lock, "run-2", step="x")
    with pytest.raises(lease.LockError, match="held by another run"):
        lease.check_owner(lock, "run-2")
    assert lease.release(lock, "run-2") is False and lease.status(lock)[0] == "held"
    lease.renew(lock, "run-1", step="migrate begun")
    until(lambda: lease.read_json(lease.info_path(lock)).get("step") == "migrate begun", "the step reached the holder")
    assert lease.check_owner(lock, "run-1")["run_id"] == "run-1"
    assert lease.release(lock, "run-1") is True
    info = lease.read_json(lease.info_path(lock))
    assert lease.status(lock)[0] == "free" and info["state"] == "released"
    with pytest.raises(lease.LockError, match="it is free"):
        lease.check_owner(lock, "run-1")


def test_acquire_waits_a_bounded_time_then_names_the_holder(lock, owner):
    lease.acquire(lock, holder("run-1"), "upgrade to v1.1.0", heartbeat=0.1, lease=300, watch_pid=owner.pid,
                  step="migrate begun")
    slept = []
    now = [0.0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    with pytest.raises(lease.LockError, match=r"upgrade to v1.1.0 \(step: migrate begun\)"):
        lease.acquire(lock, holder("run-2"), "backup", wait=10, clock=lambda: now[0], sleep=sleep)
    assert sum(slept) >= 10 and len(slept) >= 5


# --- the controller's keeper -----------------------------------------------------------------------------

def test_the_keeper_pulses_while_ansible_playbook_lives_then_releases():
    calls = []

    class Done:
        def __init__(self, rc):
            self.returncode = rc

    def run(cmd, **kw):
        calls.append(cmd[-1])
        return Done(0)

    # ansible-playbook lives through three pulses
    assert lease.keep(1, 5, ["renew"], ["release"], alive=lambda pid: len(calls) < 3, run=run,
                      sleep=lambda s: None, log=print) == "released"
    assert calls == ["renew", "renew", "renew", "release"]
    # the lock was given back at the end of the play (renew refused, exit 2): no release
    calls.clear()
    assert lease.keep(1, 5, ["renew"], ["release"], alive=lambda pid: True, run=lambda c, **k: Done(2),
                      sleep=lambda s: None, log=print) == "not ours"


def test_the_keeper_sees_a_killed_run_within_a_second_not_a_whole_interval():
    slept, calls = [], []

    class Done:
        returncode = 0

    def alive(pid):  # the run dies 32.5 s after the keeper started: 2.5 s into the wait after its first pulse
        return sum(slept) < 32.5

    assert lease.keep(1, 30, ["renew"], ["release"], alive=alive, run=lambda c, **k: calls.append(c[-1]) or Done(),
                      sleep=slept.append, log=print) == "released"
    assert calls == ["renew", "release"]
    assert sum(slept) <= 33.0, slept


def test_the_keeper_pulses_first_one_interval_after_the_lock_was_taken():
    """acquire wrote the first sign of life: a run shorter than the interval costs no ad-hoc Ansible run
    but the release, and the first pulse of a longer one comes after a whole interval."""
    slept, calls = [], []

    class Done:
        returncode = 0

    def run(cmd, **kw):
        calls.append((cmd[-1], sum(slept)))
        return Done()

    assert lease.keep(1, 30, ["renew"], ["release"], alive=lambda pid: sum(slept) < 20, run=run,
                      sleep=slept.append, log=print) == "released"
    assert calls == [("release", 20)]
    calls.clear(), slept.clear()
    assert lease.keep(1, 30, ["renew"], ["release"], alive=lambda pid: sum(slept) < 70, run=run,
                      sleep=slept.append, log=print) == "released"
    assert calls == [("renew", 30), ("renew", 60), ("release", 70)]


def test_the_keeper_commands_are_ad_hoc_runs_of_paycraft_lock_with_the_runs_inventory():
    renew, release = lease.keeper_commands({"ansible": "/nonexistent/ansible", "host": "web1",
                                            "inventory": ["inv/a.yml", "inv/b.yml"], "lock": "/etc/p/l.lock",
                                            "run_id": "ctl:1:2"})
    assert renew[1:8] == ["web1", "-i", "inv/a.yml", "-i", "inv/b.yml", "-m", "paycraft.selfhost.paycraft_lock"]
    assert json.loads(renew[-1]) == {"state": "renew", "path": "/etc/p/l.lock", "run_id": "ctl:1:2"}
    assert json.loads(release[-1])["state"] == "release"


def test_a_real_keeper_process_releases_when_its_ansible_playbook_is_killed(tmp_path, lock, owner):
    """keep with a real watched pid and real commands (shell scripts standing for ad-hoc Ansible)."""
    lease.acquire(lock, holder("run-1"), "site", heartbeat=0.1, lease=300, watch_pid=0)
    playbook = subprocess.Popen(["sleep", "600"])
    renew_cmd = [sys.executable, "-c", f"import lease; lease.renew({lock!r}, 'run-1')"]
    release_cmd = [sys.executable, "-c", f"import lease; lease.release({lock!r}, 'run-1')"]
    code = f"import lease; lease.keep({playbook.pid}, 0.1, {renew_cmd!r}, {release_cmd!r})"
    env = dict(os.environ, PYTHONPATH=str(REPO / "plugins" / "module_utils"))
    keeper = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        until(lambda: lease.read_json(lease.pulse_path(lock)).get("pulse_epoch", 0) >
              lease.read_json(lease.info_path(lock)).get("since_epoch", 1e18), "a pulse from the keeper")
        assert lease.status(lock)[0] == "held"
        playbook.send_signal(signal.SIGKILL)
        playbook.wait()
        assert keeper.wait(timeout=120) == 0
        assert lease.status(lock)[0] == "free"
        assert lease.read_json(lease.info_path(lock))["state"] == "released"
    finally:
        if keeper.poll() is None:
            keeper.kill()
        if playbook.poll() is None:
            playbook.kill()


def test_a_run_id_is_the_process_and_its_start_as_the_lock_tasks_read_them(owner):
    started = lease.process_start(owner.pid)
    cut = subprocess.run(["cut", "-d", " ", "-f22", f"/proc/{owner.pid}/stat"], capture_output=True, text=True)
    assert started and started == cut.stdout.strip()
    owner.kill()
    owner.wait()
    assert lease.process_start(owner.pid) == ""
