"""Small helpers of the preflight integration tests (same behaviour as tests/conftest.py's)."""

from __future__ import annotations

import os
import socket
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(what: str) -> None:
    """Skip, or fail under PAYCRAFT_STRICT=1, because a prerequisite is absent."""
    msg = f"not installed: {what} (run scripts/prepare.sh)"
    if os.environ.get("PAYCRAFT_STRICT") == "1":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
