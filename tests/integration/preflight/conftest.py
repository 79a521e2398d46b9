"""Helpers for the preflight integration tests: run the real role / module through Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "playbooks" / "preflight.yml"
VENV_BIN = Path(sys.executable).parent


class PlayResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.data = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"ansible-playbook did not print JSON (rc={self.rc}):\n{proc.stdout}\n{proc.stderr}") from exc

    @staticmethod
    def _name(task: dict) -> str:
        """Task name without the role prefix ("paycraft.selfhost.preflight : ")."""
        return task["task"]["name"].rpartition(" : ")[2]

    def task(self, name_start: str) -> dict:
        for play in self.data["plays"]:
            for task in play["tasks"]:
                if self._name(task).startswith(name_start):
                    return task["hosts"]["localhost"]
        raise KeyError(name_start)

    def failed_tasks(self) -> list[str]:
        return [self._name(t) for p in self.data["plays"] for t in p["tasks"]
                if t["hosts"].get("localhost", {}).get("failed")]

    @property
    def stats(self) -> dict:
        return self.data["stats"]["localhost"]

    @property
    def preflight(self) -> dict:
        return self.task("Run the runbook's prerequisite checks")


@pytest.fixture
def run_preflight(tmp_path):
    """run_preflight(vars, check=False, interpreter=None, playbook=PLAYBOOK) -> PlayResult on localhost.

    ``interpreter``: the target's Python (default: this virtualenv's).
    """

    def run(extra_vars: dict, check: bool = False, interpreter: str | None = None,
            playbook: Path = PLAYBOOK) -> PlayResult:
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        env = dict(os.environ)
        env.update({
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        })
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={interpreter or sys.executable}", "-e", f"@{vars_file}",
               str(playbook)]
        if check:
            cmd.append("--check")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        return PlayResult(proc)

    return run
