# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exchange the data of two local Docker volumes in O(1): three renames of their ``_data`` directories
on one filesystem, resumable after a kill at any point.

A local volume ``<name>`` keeps its files in ``<root>/<name>/_data`` (its ``Mountpoint``). With ``a`` the
live volume's mountpoint and ``b`` the other one's:

1. ``a`` -> ``a.swap``   (the live data set aside, in the live volume's own directory)
2. ``b`` -> ``a``        (the other data under the live name)
3. ``a.swap`` -> ``b``   (the live data under the other name)

Before step 1 a journal (JSON, written atomically) records both paths and the inode of each ``_data``
directory (a rename keeps the inode). Which directories exist, and whose inode ``a`` has, say how far a
killed exchange got; :func:`exchange` finishes it from there. The journal stays, marked done: calling
:func:`exchange` again with the same two paths changes nothing (it never exchanges back). Nothing is
ever deleted: every state holds both data directories under some name.

Refused, before anything moves: a volume whose driver is not ``local``, a mountpoint that is a mount
point of its own (a bind or NFS option) or on another filesystem than the other volume, a volume in use
by a container.

Pure Python; no Ansible import. The docker CLI is reached through an injected runner.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import write_json_atomic

SWAP_SUFFIX = ".swap"


class SwapError(Exception):
    """The exchange is refused or cannot go on; the message says what to do."""


def _run(argv: list[str]) -> tuple[int, str, str]:
    res = subprocess.run(argv, capture_output=True, check=False)
    return res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")


def inspect(name: str, run=_run, docker: str = "docker") -> dict:
    """``docker volume inspect`` of one volume: Name, Driver, Mountpoint, Options."""
    rc, out, err = run([docker, "volume", "inspect", name])
    if rc != 0:
        raise SwapError(f"the volume {name} does not exist (docker volume inspect: {err.strip()[:300]})")
    try:
        data = json.loads(out)[0]
    except (ValueError, IndexError) as exc:
        raise SwapError(f"docker volume inspect {name} answered something unreadable: {out[:200]!r}") from exc
    return {"name": data.get("Name", name), "driver": data.get("Driver", ""), "mountpoint": data.get("Mountpoint", ""),
            "options": data.get("Options") or {}}


def users(name: str, run=_run, docker: str = "docker") -> list[str]:
    """Containers (running or not) that mount the volume."""
    rc, out, err = run([docker, "ps", "-a", "--filter", f"volume={name}", "--format", "{{.Names}}"])
    if rc != 0:
        raise SwapError(f"docker ps --filter volume={name} failed: {err.strip()[:300]}")
    return [line for line in out.split() if line]


def running_users(name: str, run=_run, docker: str = "docker") -> list[str]:
    rc, out, err = run([docker, "ps", "--filter", f"volume={name}", "--format", "{{.Names}}"])
    if rc != 0:
        raise SwapError(f"docker ps --filter volume={name} failed: {err.strip()[:300]}")
    return [line for line in out.split() if line]


def refusal(live: dict, other: dict, running: dict | None = None, stat=os.stat, ismount=os.path.ismount) -> str | None:
    """Why the two volumes cannot be exchanged by renames, or None. ``live`` and ``other`` are
    :func:`inspect` results; ``running`` maps a volume name to the containers running with it."""
    for vol in (live, other):
        if vol["driver"] != "local":
            return (f"the volume {vol['name']} uses the driver {vol['driver']!r}, not 'local': its data is not a "
                    "directory this host can rename")
        if vol["options"]:
            return (f"the volume {vol['name']} has driver options {sorted(vol['options'])} (a bind or network "
                    "mount): its data may live on another filesystem")
        if not vol["mountpoint"]:
            return f"the volume {vol['name']} has no mountpoint"
    for name, names in (running or {}).items():
        if names:
            return f"the volume {name} is in use by the running container(s) {', '.join(names)}: stop them first"
    devices = {}
    for vol in (live, other):
        mp = vol["mountpoint"]
        # its _data, the volume's directory and Docker's volume root (where a new local volume is made)
        for path in (mp, os.path.dirname(mp), os.path.dirname(os.path.dirname(mp))):
            try:
                devices[path] = stat(path).st_dev
            except FileNotFoundError:
                if path == mp and os.path.exists(mp + SWAP_SUFFIX):
                    continue  # an exchange that stopped after its first rename
                if path == mp:
                    continue  # an exchange that stopped after its second rename (other's _data moved)
                return f"{path} of the volume {vol['name']} does not exist"
        if os.path.exists(mp) and ismount(mp):
            return (f"{mp} (volume {vol['name']}) is a mount point of its own, not a directory of Docker's "
                    "volume filesystem")
    if len(set(devices.values())) != 1:
        where = ", ".join(f"{p} (device {d})" for p, d in sorted(devices.items()))
        return f"the two volumes are not on one filesystem ({where}): a rename cannot move data between them"
    return None


def _ino(path: str, stat=os.stat) -> int:
    return stat(path).st_ino


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def where(a: str, b: str, journal: dict | None) -> str:
    """How far an exchange of ``a`` (live) and ``b`` got: ``start`` (nothing moved), ``aside`` (step 1
    done), ``moved`` (step 2 done), ``done``; raises when the directories fit none of them."""
    sa, ea, eb = os.path.isdir(a + SWAP_SUFFIX), os.path.isdir(a), os.path.isdir(b)
    if ea and eb and not sa:
        if journal is None:
            return "start"
        ino = _ino(a)
        if ino == journal["a_ino"]:
            return "start"
        if ino == journal["b_ino"]:
            return "done"
        raise SwapError(f"{a} is neither of the two data directories the journal recorded; nothing was moved")
    if sa and eb and not ea:
        return "aside"
    if sa and ea and not eb:
        return "moved"
    present = [p for p, e in ((a, ea), (a + SWAP_SUFFIX, sa), (b, eb)) if e]
    raise SwapError(
        f"the data directories are in no state an exchange of {a} and {b} passes through (present: "
        f"{', '.join(present) or 'none'}); nothing was moved. Look at them (ls -la {os.path.dirname(a)} "
        f"{os.path.dirname(b)}) before anything else")


def exchange(a: str, b: str, journal_path: str, rename=os.rename, fsync_dir=_fsync_dir) -> dict:
    """Exchange the directories ``a`` and ``b`` (finishing an exchange a killed run began, by the journal).
    Returns ``{"changed", "resumed", "steps"}`` (the renames done by this call)."""
    journal = read_journal(journal_path)
    if journal is not None and (journal.get("a") != a or journal.get("b") != b) and journal.get("done"):
        journal = None  # an earlier exchange, finished: this one starts its own
    if journal is not None and (journal.get("a") != a or journal.get("b") != b):
        raise SwapError(
            f"the journal {journal_path} is of another exchange ({journal.get('a')} and {journal.get('b')}), "
            f"not of {a} and {b}: finish that one first (or remove the journal once you have checked both directories)")
    state = where(a, b, journal)
    resumed = journal is not None and not journal.get("done") and state != "start"
    if state == "done":
        if not journal.get("done"):
            write_json_atomic(journal_path, dict(journal, done=True))
        return {"changed": False, "resumed": resumed, "steps": []}
    if journal is None:
        if os.stat(a).st_dev != os.stat(b).st_dev:
            raise SwapError(f"{a} and {b} are not on one filesystem; nothing was moved")
        journal = {"a": a, "b": b, "a_ino": _ino(a), "b_ino": _ino(b)}
        write_json_atomic(journal_path, journal)
    steps = []
    order = [("start", a, a + SWAP_SUFFIX), ("aside", b, a), ("moved", a + SWAP_SUFFIX, b)]
    started = False
    for at, src, dst in order:
        if at == state:
            started = True
        if started:
            rename(src, dst)
            fsync_dir(os.path.dirname(dst))
            if os.path.dirname(src) != os.path.dirname(dst):
                fsync_dir(os.path.dirname(src))
            steps.append(f"{src} -> {dst}")
    if where(a, b, journal) != "done":
        raise SwapError(f"the exchange of {a} and {b} did not end where it should; the journal {journal_path} stays")
    # kept, marked done: a run killed before it recorded the exchange done finds it finished, not to do again
    write_json_atomic(journal_path, dict(journal, done=True))
    return {"changed": bool(steps), "resumed": resumed, "steps": steps}
