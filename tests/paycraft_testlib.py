"""Helpers shared by the test suites (import as ``from paycraft_testlib import ...``).

pytest puts ``tests/`` on sys.path (it holds conftest.py and no __init__.py),
so every test module can import this one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

STRICT = os.environ.get("PAYCRAFT_STRICT") == "1"
REPO = Path(__file__).resolve().parent.parent
# The runbook we automate: ../shared beside the checkout (as on the developers' machines and in CI).
RUNBOOK = Path(os.environ.get("PAYCRAFT_RUNBOOK", REPO.parent / "shared" / "reference" / "selfhost-runbook.txt"))


def missing(what: str) -> None:
    """Skip (or, under PAYCRAFT_STRICT=1, fail) because a prerequisite is absent."""
    msg = f"not installed: {what} (run scripts/prepare.sh)"
    if STRICT:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll predicate() until truthy or raise TimeoutError naming what was awaited."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from last_exc


def module_runner(timeout: float = 30.0):
    """The modules' command runner (module_utils/_cli.py) on a real AnsibleModule, for library tests."""
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli

    with patch_module_args({}):
        module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    return _cli.module_runner(module, timeout)
