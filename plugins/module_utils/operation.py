# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of an upgrade or rollback in progress on a host, and its lock.

State file (``/etc/paycraft/operation.json``, 0600, replaced atomically)::

    {"operation": "upgrade", "from_version": "v1.0.0", "to_version": "v1.1.0",
     "status": "running" | "done" | "rolled_back" | "failed" | "abandoned",
     "snapshot": "/var/backups/paycraft/20261128T230102Z-v1.0.0",
     "holder": {"controller": "...", "pid": 1234, "user": "...", "run_id": "..."},
     "started_at": "...", "finished_at": "...",
     "steps": [{"name": "snapshot", "status": "begun" | "done" | "failed", "at": "..."}], ...}

A run that dies (``kill -9`` of ansible-playbook) leaves ``status: running``:
the next upgrade, rollback or site run sees it as unfinished, and either
completes the rollback or, when asked explicitly, resumes.

Lock: an ``flock`` on ``<state file>.lock`` held by a small holder process that
the operation starts on the host and stops when it ends. It lives as long as
the operation (Ansible runs each task in a process of its own), and at most
``max_seconds``. A second operation finds the lock taken and is refused with
the holder's name. When the holder's controller process is gone (the run was
killed), the caller may break the lock: the holder process is stopped by its
recorded pid.

Pure Python; no Ansible import.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import write_json_atomic

UNFINISHED = "running"
FINISHED = ("done", "rolled_back", "failed", "abandoned")


class OperationError(Exception):
    pass


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- versions ------------------------------------------------------------------------

_VER_RE = re.compile(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$")


def version_key(version: str) -> tuple | None:
    """(major, minor, patch) of a release tag such as v1.1.1-broken-migration; None when not a version."""
    m = _VER_RE.match(version.strip())
    if not m:
        return None
    return tuple(int(g or 0) for g in m.groups()[:3])


def direction(installed: str, target: str) -> str:
    """same | upgrade | downgrade | unknown (a tag that is not a version, or equal numbers with other suffixes)."""
    if installed == target:
        return "same"
    a, b = version_key(installed), version_key(target)
    if a is None or b is None:
        return "unknown"
    if b > a:
        return "upgrade"
    if b < a:
        return "downgrade"
    return "unknown"


# --- state file ----------------------------------------------------------------------

def read_state(path: str) -> dict | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OperationError(
            f"{path} cannot be read ({exc}); it records the last upgrade or rollback of this host. "
            f"Look at it (cat {path}) before anything else runs."
        ) from exc
    return data if isinstance(data, dict) else None


def is_unfinished(state: dict | None) -> bool:
    return bool(state) and state.get("status") == UNFINISHED


def new_state(operation: str, from_version: str, to_version: str, holder: dict, extra: dict | None = None) -> dict:
    state = {
        "operation": operation,
        "from_version": from_version,
        "to_version": to_version,
        "status": UNFINISHED,
        "snapshot": None,
        "holder": holder,
        "started_at": now_iso(),
        "finished_at": None,
        "steps": [],
        "message": "",
    }
    state.update(extra or {})
    return state


def mark_step(state: dict, step: str, status: str, details: dict | None = None) -> dict:
    if status not in ("begun", "done", "failed"):
        raise OperationError(f"unknown step status {status}")
    at = now_iso()
    previous = last_step(state)
    if status == "begun" and previous and previous.get("status") == "begun" and previous.get("name") != step:
        # beginning a step ends the one before it
        state["steps"].append({"name": previous["name"], "status": "done", "at": at})
    entry = {"name": step, "status": status, "at": at}
    if details:
        entry.update(details)
    state.setdefault("steps", []).append(entry)
    return state


def last_step(state: dict, status: str | None = None) -> dict | None:
    for entry in reversed(state.get("steps") or []):
        if status is None or entry.get("status") == status:
            return entry
    return None


def step_done(state: dict, step: str) -> bool:
    return any(e.get("name") == step and e.get("status") == "done" for e in state.get("steps") or [])


def finish(state: dict, status: str, message: str = "") -> dict:
    if status not in FINISHED:
        raise OperationError(f"unknown final status {status}")
    previous = last_step(state)
    if status == "done" and previous and previous.get("status") == "begun":
        mark_step(state, previous["name"], "done")
    state["status"] = status
    state["finished_at"] = now_iso()
    state["message"] = message
    return state


def write_state(path: str, state: dict) -> None:
    write_json_atomic(path, state, mode=0o600)


def describe(state: dict) -> str:
    step = last_step(state)
    where = f"last step: {step['name']} {step['status']} at {step['at']}" if step else "no step recorded"
    holder = state.get("holder") or {}
    who = f"{holder.get('user', '?')}@{holder.get('controller', '?')} pid {holder.get('pid', '?')}"
    return (
        f"{state.get('operation', '?')} {state.get('from_version', '?')} -> {state.get('to_version', '?')} "
        f"started {state.get('started_at', '?')} by {who} ({where})"
    )


# --- lock ----------------------------------------------------------------------------

HOLDER_CODE = r"""
import fcntl, json, os, signal, sys, time
path, info, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.stdout.write("busy\n"); sys.stdout.flush(); sys.exit(3)
data = json.loads(info); data["holder_pid"] = os.getpid()
os.ftruncate(fd, 0); os.lseek(fd, 0, 0); os.write(fd, (json.dumps(data) + "\n").encode()); os.fsync(fd)
sys.stdout.write("locked\n"); sys.stdout.flush(); sys.stdout.close()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
deadline = time.monotonic() + max_seconds
while not stop and time.monotonic() < deadline:
    time.sleep(0.5)
os.ftruncate(fd, 0)
"""


def lock_path(state_path: str) -> str:
    return state_path + ".lock"


def read_lock_info(path: str) -> dict:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def lock_is_held(path: str) -> bool:
    """True when some process holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def acquire(path: str, holder: dict, max_seconds: int = 7200, python: str | None = None) -> dict:
    """Start the holder process; returns the lock info (with ``holder_pid``).

    Raises OperationError naming the current holder when the lock is taken.
    """
    proc = subprocess.Popen(
        [python or sys.executable, "-c", HOLDER_CODE, path, json.dumps(holder), str(max_seconds)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    line = proc.stdout.readline().decode().strip() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    if line != "locked":
        proc.wait(timeout=10)
        info = read_lock_info(path)
        raise OperationError(f"held by {holder_text(info)}")
    info = dict(holder)
    info["holder_pid"] = proc.pid
    return info


def holder_text(info: dict) -> str:
    if not info:
        return "another process (no holder recorded)"
    return (
        f"{info.get('operation', 'an operation')} {info.get('from_version', '?')} -> {info.get('to_version', '?')} "
        f"run by {info.get('user', '?')}@{info.get('controller', '?')} (ansible-playbook pid {info.get('pid', '?')}, "
        f"since {info.get('since', '?')}, lock holder pid {info.get('holder_pid', '?')} on this host)"
    )


def release(path: str, wait: float = 10.0) -> bool:
    """Stop the holder process recorded in the lock file. True when a holder was stopped."""
    info = read_lock_info(path)
    pid = info.get("holder_pid")
    if not pid or not lock_is_held(path):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and lock_is_held(path):
        time.sleep(0.1)
    if lock_is_held(path):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    return True
