"""Validation holes of issue 32 (items 5 and 7), each through a real ansible-playbook on localhost.

Only validation task files run (include_role tasks_from): nothing on the machine changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def play(tmp_path: Path, tasks: list, extra: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    pb = tmp_path / "play.json"
    pb.write_text(json.dumps([{"name": "t", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    (tmp_path / "vars.json").write_text(json.dumps(extra or {}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections")))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.json'}", str(pb)]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def include(role: str, tasks_from: str) -> dict:
    return {"name": f"{role} {tasks_from}",
            "ansible.builtin.include_role": {"name": f"paycraft.selfhost.{role}", "tasks_from": tasks_from}}


OVERLAPS = [
    ("/var/backups/paycraft", "/var/backups/paycraft/"),            # equal
    ("/var/backups/paycraft", "/var/backups/paycraft/backups"),     # inside
    ("/srv/snap/inner", "/srv/snap"),                               # containing
]


@pytest.mark.parametrize(("snapshots", "backups"), OVERLAPS)
@pytest.mark.parametrize("role", ["backup", "rotate"])
def test_overlapping_backup_and_snapshot_dirs_are_refused(tmp_path, role, snapshots, backups):
    extra = {"paycraft_snapshot_dir": snapshots, "paycraft_backup_dir": backups,
             "paycraft_rotate_secret": "db_password", "paycraft_rotate_confirm": "db_password"}
    res = play(tmp_path, [include(role, "validate")], extra)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    snapshot_var = "paycraft_rotate_snapshot_dir" if role == "rotate" else "paycraft_snapshot_dir"
    assert "paycraft_backup_dir" in out and snapshot_var in out, out[-3000:]
    assert "Nothing was changed" in out


def test_separate_dirs_pass_and_the_defaults_do_not_overlap(tmp_path):
    res = play(tmp_path, [include("common", "dirs")])
    assert res.returncode == 0, res.stdout[-3000:]
    res = play(tmp_path, [include("common", "dirs")],
               {"paycraft_snapshot_dir": "/var/backups/paycraft", "paycraft_backup_dir": "/var/backups/paycraft2"})
    assert res.returncode == 0, res.stdout[-3000:]
