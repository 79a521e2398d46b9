"""Helpers for the config role integration tests: run ansible-playbook on localhost, parse the recap."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "config.yml"
RECAP_RE = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    rc: int
    out: str
    ok: int
    changed: int
    failed: int

    def task_result(self, failed=True) -> dict:
        """With the json callback: the first failed task's result."""
        data = json.loads(self.out)
        for play in data["plays"]:
            for task in play["tasks"]:
                res = task["hosts"].get("localhost", {})
                if res.get("failed") == failed:
                    return res
        raise AssertionError("no failed task in the run")


@pytest.fixture
def config_run(tmp_path):
    """run(extra_vars, *flags, json=False) -> Run, against temp config and selfhost directories."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    base = {
        "ansible_python_interpreter": sys.executable,
        "paycraft_config_dir": str(tmp_path / "etc"),
        "paycraft_selfhost_dir": str(tmp_path / "src" / "infra" / "selfhost"),
        "paycraft_config_owner": user,
        "paycraft_config_group": group,
    }

    def run(extra: dict | None = None, *flags: str, json_output: bool = False, playbook: Path = PLAYBOOK) -> Run:
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps({**base, **(extra or {})}))
        vars_file.chmod(0o600)
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        if json_output:
            env["ANSIBLE_STDOUT_CALLBACK"] = "json"
        proc = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-e", f"@{vars_file}", *flags, str(playbook)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )
        out = proc.stdout + proc.stderr
        if json_output:
            stats = json.loads(proc.stdout)["stats"]["localhost"]
            return Run(proc.returncode, proc.stdout, stats["ok"], stats["changed"], stats["failures"])
        m = RECAP_RE.search(out)
        assert m, out[-3000:]
        return Run(proc.returncode, out, int(m.group(1)), int(m.group(2)), int(m.group(4)))

    run.base = base
    return run
