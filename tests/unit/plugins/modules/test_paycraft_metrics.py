"""paycraft_metrics, executed as Ansible executes a module (a process with an args file): the textfile written
from a real operation record and a real host lock held by a real holder process, check mode, the result kinds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.paycraft.selfhost.plugins.module_utils import lease, operation

REPO = Path(__file__).resolve().parents[4]
MODULES = REPO / "plugins" / "modules"


def run(tmp_path: Path, args: dict, check: bool = False) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, str(MODULES / "paycraft_metrics.py"), str(args_file)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def test_written_from_the_record_and_a_held_lock_then_unchanged_then_check_mode(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    record = operation.new_state("rollback", "v1.1.0", "v1.0.0", {"run_id": "r1"})
    (etc / "operation.json").write_text(json.dumps(record))
    lock = str(etc / "operation.json.lock")
    lease.acquire(lock, {"run_id": "run-9", "controller": "ctl", "user": "ops", "pid": os.getpid(),
                         "playbook": "rollback.yml"}, "rollback to v1.0.0", heartbeat=1, lease=60,
                  watch_pid=os.getpid(), wait=0)
    try:
        out = tmp_path / "textfile" / "paycraft.prom"
        out.parent.mkdir()
        args = {"out": str(out), "operation_file": str(etc / "operation.json"), "lock_file": lock,
                "results_file": str(etc / "results.json"), "containers": False}
        first = run(tmp_path, args)
        assert first["changed"] is True, first
        text = out.read_text()
        assert 'paycraft_operation_unfinished{operation="rollback"} 1' in text
        assert 'paycraft_lock_held{operation="rollback to v1.0.0",stale="0"} 1' in text
        assert run(tmp_path, args)["changed"] is False
        (etc / "operation.json").write_text(json.dumps(dict(record, status="done")))
        before = out.read_text()
        predicted = run(tmp_path, args, check=True)
        assert predicted["changed"] is True
        assert 'paycraft_operation_unfinished{operation="rollback"} 0' in predicted["metrics"]
        assert out.read_text() == before, "check mode wrote the file"
    finally:
        info = lease.read_json(lease.info_path(lock))
        lease.release(lock, "run-9")
        if info.get("holder_pid") and lease.flock_held(lock):
            lease.stop_holder(lock, info)


def test_a_result_recorded_and_check_mode_writes_nothing(tmp_path):
    results = tmp_path / "results.json"
    got = run(tmp_path, {"state": "result", "kind": "drill", "ok": False, "detail": "products differ",
                         "results_file": str(results)}, check=True)
    assert got["changed"] and got["result"]["ok"] is False and not results.exists()
    got = run(tmp_path, {"state": "result", "kind": "drill", "ok": False, "detail": "products differ",
                         "results_file": str(results)})
    assert json.loads(results.read_text())["drill"]["detail"] == "products differ"
    assert got["result"]["at"] == json.loads(results.read_text())["drill"]["at"]


def test_missing_arguments_are_named(tmp_path):
    got = run(tmp_path, {"state": "result", "kind": "smoke"})
    assert got["failed"] and "ok" in got["msg"]
    got = run(tmp_path, {"state": "written"})
    assert got["failed"] and "out" in got["msg"]


def test_an_unwritable_output_names_the_host_and_what_to_do(tmp_path):
    got = run(tmp_path, {"out": str(tmp_path / "no" / "such" / "dir" / "x.prom"), "containers": False,
                         "operation_file": str(tmp_path / "none.json"), "lock_file": str(tmp_path / "l"),
                         "results_file": str(tmp_path / "r.json")})
    assert got["failed"] and os.uname()[1] in got["msg"] and "run the same task again" in got["msg"]
