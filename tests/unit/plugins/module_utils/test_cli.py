"""module_utils/_cli.py: the one command runner, on a real AnsibleModule and real processes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from paycraft_testlib import module_runner

MODULE_UTILS = Path(__file__).resolve().parents[4] / "plugins" / "module_utils"


def test_output_and_exit_code():
    run = module_runner()
    assert run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    assert run(["pwd"], cwd="/tmp") == (0, "/tmp\n", "")


def test_missing_binary_is_127():
    rc, out, err = module_runner()(["no-such-binary-4d1e", "--version"])
    assert rc == 127 and out == ""
    assert "no-such-binary-4d1e" in err


def test_timeout_is_124_and_named():
    rc, _out, err = module_runner()(["sleep", "30"], timeout=0.5)
    assert rc == 124
    assert err == "sleep 30 did not answer within 0.5s"


@pytest.mark.parametrize("name", ["preflight.py", "converged.py", "smoke.py", "migrate.py", "_postgres.py"])
def test_libraries_never_start_processes_themselves(name):
    """subprocess / os.system / os.popen are the modules' business (module.run_command through _cli)."""
    tree = ast.parse((MODULE_UTILS / name).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "subprocess" not in imported, name
    calls = {f"{n.func.value.id}.{n.func.attr}" for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
    assert not calls & {"os.system", "os.popen", "os.spawnv", "os.execv"}, name
