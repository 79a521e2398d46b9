"""Run the collection's roles through a real ``ansible-playbook``.

``run_role(role, vars)`` writes a one-play playbook (``gather_facts: false``;
on localhost with connection local, or on ``host`` with ``host_vars``) that
applies ``paycraft.selfhost.<role>`` and then prints the facts named in
``show``; it runs it with the JSON callback and returns a :class:`RoleRun`
(rc, stats of the host, the facts, every failure message, and the raw output
for diagnosis).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@dataclass
class RoleRun:
    rc: int
    stats: dict
    facts: dict
    failures: list[str]
    tasks: dict = field(repr=False)
    output: str = field(repr=False)

    @property
    def changed(self) -> int:
        return self.stats.get("changed", 0)

    def changed_tasks(self) -> list[str]:
        return [name for name, res in self.tasks.items() if res.get("changed")]

    def explain(self) -> str:
        return f"rc={self.rc} stats={self.stats} failures={self.failures}\n{self.output[-6000:]}"


def _collections_path() -> str:
    return os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections"))


@pytest.fixture
def run_role(tmp_path):
    counter = {"n": 0}

    def _run(role: str, role_vars: dict, show: tuple[str, ...] = (), check: bool = False,
             tags: str | None = None, host: str = "localhost", host_vars: dict | None = None) -> RoleRun:
        counter["n"] += 1
        work = tmp_path / f"run{counter['n']}"
        work.mkdir()
        play = [{
            "name": f"apply paycraft.selfhost.{role}",
            "hosts": host,
            "gather_facts": False,
            "roles": [{"role": f"paycraft.selfhost.{role}"}],
            "post_tasks": [
                {"name": f"show {name}", "ansible.builtin.debug": {"var": name}, "tags": ["always"]}
                for name in show
            ],
        }]
        (work / "play.yml").write_text(json.dumps(play))
        (work / "vars.json").write_text(json.dumps(role_vars))
        inventory_vars = host_vars or {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        (work / "hosts.json").write_text(json.dumps({"all": {"hosts": {host: inventory_vars}}}))
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(work / "hosts.json"),
               "-e", f"@{work / 'vars.json'}", str(work / "play.yml")]
        if check:
            cmd.append("--check")
        if tags:
            cmd += ["--tags", tags]
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=_collections_path(),
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=600)
        output = proc.stdout + proc.stderr
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return RoleRun(proc.returncode, {}, {}, [output], {}, output)
        tasks, facts, failures = {}, {}, []
        for play_result in data.get("plays", []):
            for task in play_result.get("tasks", []):
                res = task.get("hosts", {}).get(host, {})
                name = task["task"]["name"]
                tasks[name] = res
                if res.get("failed") and not res.get("ignore_errors"):
                    failures.append(str(res.get("msg", "")))
                for fact in show:
                    if name == f"show {fact}" and fact in res:
                        facts[fact] = res[fact]
        stats = data.get("stats", {}).get(host, {})
        return RoleRun(proc.returncode, stats, facts, failures, tasks, output)

    return _run
