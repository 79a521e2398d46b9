# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of an upgrade or rollback in progress on a host, and its lock.

State file (``/etc/paycraft/operation.json``, 0600, replaced atomically)::

    {"operation": "upgrade", "from_version": "v1.0.0", "to_version": "v1.1.0",
     "status": "running" | "done" | "rolled_back" | "failed" | "abandoned" | "refused",
     "snapshot": "/var/backups/paycraft/20261128T230102Z-v1.0.0",
     "holder": {"controller": "...", "pid": 1234, "user": "...", "run_id": "..."},
     "started_at": "...", "finished_at": "...",
     "steps": [{"name": "snapshot", "status": "begun" | "done" | "failed", "at": "..."}], ...}

A run that dies (``kill -9`` of ansible-playbook) leaves ``status: running``:
the next upgrade, rollback or site run sees it as unfinished, and either
completes the rollback or, when asked explicitly, resumes.

Lock: the host lock of module_utils/lease.py (``<state file>.lock``), a lease its
holder renews while the run lives, taken by every operation (issue #32). ``begin``
takes it or finds it already held by the same run; ``step`` and ``finish`` refuse
when the lock is held by another run or lost.

Pure Python; no Ansible import.
"""

from __future__ import annotations

import datetime
import json
import re

from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import write_json_atomic

UNFINISHED = "running"
FINISHED = ("done", "rolled_back", "failed", "abandoned", "refused")
# The steps a rollback records before anything changes the live database: the snapshot verified, then
# the copy of the live volume (keep_current.yml stops the stack for it and reads the volume only). The
# live volume is removed only after ``keep`` is done.
# A rollback beside the live database (move kind beside) restores into a new volume (``side``) and stops the
# stack (``switch``) before the exchange of the two volumes' data, the first step that changes the live volume.
BEFORE_LIVE_CHANGE = ("snapshot", "stop", "move_aside", "keep", "side", "switch")


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


def restored(state: dict) -> bool:
    """Whether the record's restore finished (the restored database is the one that stays, and writes
    may have been let through onto it): a ``restore`` done after the last ``keep`` done. rollback.yml's
    restore is done when its ``up`` begins; the move sequence of a restore (tasks/move.yml, step
    ``restored``) records ``restore done`` once the stack is up again, before it lets writes through.
    The ``restore done`` that beginning ``keep`` writes comes before the copy, so it does not count.
    A run that finds this must not restore the snapshot again: that would drop every write
    acknowledged since."""
    steps = state.get("steps") or []
    kept = [i for i, e in enumerate(steps) if e.get("name") == "keep" and e.get("status") == "done"]
    if not kept:
        return False
    return any(e.get("name") == "restore" and e.get("status") == "done" for e in steps[kept[-1] + 1:])


def untouched(state: dict) -> bool:
    """Whether the record shows that nothing changed the live database yet: every step recorded is one of
    BEFORE_LIVE_CHANGE and no ``keep`` is done (the copy of the live volume did not complete). Only then
    may an operation end as ``refused`` (writes let through on the live database, no later run completing
    it): after any other step a later run must complete the operation, or writes acknowledged meanwhile
    would be restored away."""
    steps = state.get("steps") or []
    if any(e.get("name") not in BEFORE_LIVE_CHANGE for e in steps):
        return False
    return not any(e.get("name") == "keep" and e.get("status") == "done" for e in steps)


def finish(state: dict, status: str, message: str = "") -> dict:
    if status not in FINISHED:
        raise OperationError(f"unknown final status {status}")
    if status == "refused" and not untouched(state):
        step = last_step(state) or {}
        raise OperationError(
            "the operation cannot end as refused: its record shows a step that may have changed the live "
            f"database (last step: {step.get('name', '?')} {step.get('status', '?')}); it stays unfinished "
            "and the next run completes it")
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
# The host lock is module_utils/lease.py's (one lease for every operation): ``<state file>.lock``.

def lock_path(state_path: str) -> str:
    return state_path + ".lock"
