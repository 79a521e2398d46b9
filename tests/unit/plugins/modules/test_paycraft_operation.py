"""paycraft_operation and paycraft_lock, executed as Ansible executes a module (a process with an args
file), with real holder processes: step and finish write the record only for the run holding the host
lock; the scheduled backup runner skips with exit 75 while another operation holds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import backup, lease

REPO = Path(__file__).resolve().parents[4]
MODULES = REPO / "plugins" / "modules"


def run(tmp_path: Path, module: str, args: dict, check: bool = False) -> dict:
    args_file = tmp_path / f"args-{module}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, str(MODULES / f"{module}.py"), str(args_file)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def holder(run_id: str, **extra) -> dict:
    return dict({"run_id": run_id, "controller": "ctl-a", "user": "ops", "pid": 4242, "playbook": "upgrade.yml"},
                **extra)


@pytest.fixture
def paths(tmp_path):
    state = str(tmp_path / "etc" / "operation.json")
    lock = state + ".lock"
    yield state, lock
    info = lease.read_json(lease.info_path(lock))
    if info.get("holder_pid") and lease.flock_held(lock):
        lease.stop_holder(lock, info)


def test_step_and_finish_refuse_a_run_that_does_not_hold_the_lock(tmp_path, paths):
    state, lock = paths
    # run-1 takes the host lock as a playbook does (common/tasks/lock.yml), then begins its upgrade
    took = run(tmp_path, "paycraft_lock", {"state": "acquire", "path": lock, "holder": holder("run-1"),
                                           "operation": "upgrade to v1.1.0", "lease_seconds": 300})
    assert took["changed"] and took["holder"]["run_id"] == "run-1", took
    begun = run(tmp_path, "paycraft_operation", {"state": "begin", "path": state, "operation": "upgrade",
                                                 "from_version": "v1.0.0", "to_version": "v1.1.0",
                                                 "holder": holder("run-1")})
    assert begun["changed"] and begun["operation"]["holder"]["run_id"] == "run-1", begun
    ok = run(tmp_path, "paycraft_operation", {"state": "step", "path": state, "run_id": "run-1", "step": "migrate",
                                              "step_status": "begun"})
    assert ok["changed"] and not ok.get("failed"), ok
    assert lease.read_json(lease.doing_path(lock))["step"] == "migrate begun"

    # a second run (site.yml from another controller) is refused by the lock ...
    other = run(tmp_path, "paycraft_lock", {"state": "acquire", "path": lock, "operation": "site v1.0.0",
                                            "holder": holder("run-2", controller="ctl-b", user="eve", pid=9,
                                                             playbook="site.yml")})
    assert other["failed"], other
    assert "another operation holds the lock of this host" in other["msg"]
    assert "upgrade v1.0.0 -> v1.1.0 (step: migrate begun) run by ops@ctl-a, upgrade.yml pid 4242" in other["msg"]
    # ... and cannot write run-1's record either
    before = Path(state).read_text()
    for args in ({"state": "step", "step": "smoke", "step_status": "begun"}, {"state": "finish", "status": "done"}):
        refused = run(tmp_path, "paycraft_operation", {**args, "path": state, "run_id": "run-2"})
        assert refused["failed"], refused
        assert "the host lock is held by another run: upgrade v1.0.0 -> v1.1.0" in refused["msg"], refused
        assert Path(state).read_text() == before

    # run-1 loses its lock (its holder killed): its own steps are refused, the record untouched
    os.kill(lease.read_json(lease.info_path(lock))["holder_pid"], 9)
    lost = None
    for _ in range(200):
        if not lease.flock_held(lock):
            lost = run(tmp_path, "paycraft_operation", {"state": "step", "path": state, "run_id": "run-1",
                                                        "step": "smoke", "step_status": "begun"})
            break
        import time
        time.sleep(0.05)
    assert lost and lost["failed"], lost
    assert "this run no longer holds the host lock: it is free" in lost["msg"], lost
    assert Path(state).read_text() == before


def test_begin_takes_the_lock_itself_when_the_play_did_not_and_finish_gives_it_back(tmp_path, paths):
    state, lock = paths
    begun = run(tmp_path, "paycraft_operation", {"state": "begin", "path": state, "operation": "rollback",
                                                 "from_version": "v1.1.0", "to_version": "v1.0.0",
                                                 "holder": holder("run-9")})
    assert begun["changed"] and lease.status(lock)[0] == "held", begun
    # finish with no run_id: the run begin recorded
    done = run(tmp_path, "paycraft_operation", {"state": "finish", "path": state, "status": "done"})
    assert done["changed"] and done["operation"]["status"] == "done", done
    assert lease.status(lock)[0] == "free"


def test_lock_module_check_mode_refuses_a_held_lock_and_takes_nothing(tmp_path, paths):
    _, lock = paths
    free = run(tmp_path, "paycraft_lock", {"state": "acquire", "path": lock, "holder": holder("run-1"),
                                           "operation": "site"}, check=True)
    assert free["changed"] and free["lock"] == "free" and not lease.flock_held(lock), free
    run(tmp_path, "paycraft_lock", {"state": "acquire", "path": lock, "holder": holder("run-1"), "operation": "backup"})
    refused = run(tmp_path, "paycraft_lock", {"state": "acquire", "path": lock, "holder": holder("run-2"),
                                              "operation": "site"}, check=True)
    assert refused["failed"] and "backup (step: start)" in refused["msg"], refused
    released = run(tmp_path, "paycraft_lock", {"state": "release", "path": lock, "run_id": "run-1"})
    assert released["changed"] and not lease.flock_held(lock)


def test_the_scheduled_backup_waits_then_skips_with_exit_75_beside_an_upgrade(tmp_path, paths, capsys):
    _, lock = paths
    owner = subprocess.Popen(["sleep", "600"])
    try:
        lease.acquire(lock, holder("run-1"), "upgrade to v1.1.0", heartbeat=0.1, lease=300, watch_pid=owner.pid,
                      step="migrate begun")
        config = tmp_path / "backup.json"
        config.write_text(json.dumps({"backup_dir": str(tmp_path / "backups"), "lock_file": lock,
                                      "lock_wait_seconds": 3600, "container": "no-such-container"}))
        now, slept = [0.0], []

        def sleep(s):
            slept.append(s)
            now[0] += s

        rc = backup.cli(["--config", str(config)], clock=lambda: now[0], sleep=sleep)
        err = capsys.readouterr().err
        assert rc == lease.EXIT_LOCKED == 75
        assert "SKIPPED (exit 75): waited 3600 s for the host lock" in err, err
        assert "upgrade to v1.1.0 (step: migrate begun) run by ops@ctl-a" in err, err
        assert sum(slept) >= 3600
        assert not (tmp_path / "backups").exists()  # nothing was dumped
    finally:
        owner.kill()
        owner.wait()


def test_finish_refused_is_refused_itself_once_a_step_may_have_changed_the_live_database(tmp_path, paths):
    state, lock = paths
    begin = {"state": "begin", "path": state, "operation": "rollback", "from_version": "v1.1.0",
             "to_version": "v1.0.0", "holder": holder("run-7")}
    assert run(tmp_path, "paycraft_operation", begin)["changed"]
    for step, status in (("snapshot", "done"), ("keep", "begun"), ("keep", "done"), ("checkout", "begun")):
        run(tmp_path, "paycraft_operation", {"state": "step", "path": state, "run_id": "run-7", "step": step,
                                             "step_status": status})
    before = Path(state).read_text()
    refused = run(tmp_path, "paycraft_operation", {"state": "finish", "path": state, "status": "refused"})
    assert refused["failed"], refused
    assert "cannot end as refused" in refused["msg"] and "(last step: checkout begun)" in refused["msg"], refused
    assert f"The record ({state}) was not changed" in refused["msg"]
    assert Path(state).read_text() == before and lease.status(lock)[0] == "held"

    # a record whose copy failed (nothing after keep begun/failed) ends refused, and the lock is given back
    Path(state).unlink()
    lease.stop_holder(lock, lease.read_json(lease.info_path(lock)))
    assert run(tmp_path, "paycraft_operation", {**begin, "holder": holder("run-8")})["changed"]
    for step, status in (("snapshot", "done"), ("stop", "begun"), ("move_aside", "begun"), ("keep", "begun"),
                         ("keep", "failed")):
        run(tmp_path, "paycraft_operation", {"state": "step", "path": state, "run_id": "run-8", "step": step,
                                             "step_status": status})
    ended = run(tmp_path, "paycraft_operation", {"state": "finish", "path": state, "status": "refused",
                                                 "message": "copy did not fit"})
    assert ended["changed"] and ended["operation"]["status"] == "refused" and not ended["unfinished"], ended
    assert lease.status(lock)[0] == "free"
