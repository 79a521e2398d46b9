# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's own metrics for Prometheus (issue #35): a file for node_exporter's textfile collector.

The values come from what the host already records, never from a playbook's memory, so a run that was
killed half-way still shows:

    the operation record (/etc/paycraft/operation.json)  paycraft_operation_*
    the host lock (<operation.json>.lock.json + flock)    paycraft_lock_*
    the backup directory (manifests, offsite.json)        paycraft_backup_*
    the results file (results.json: backup runs, drills,  paycraft_result_*
      smoke runs, each written by the collection)
    the Docker engine (docker inspect of paycraft_*)      paycraft_container_*

The alert rules (roles/monitoring/files/rules/paycraft.rules.yml) are written against these names; their
promtool tests feed the same series.

Every reader takes its paths, clock and command runner as arguments. Pure Python, no Ansible import: the
module runs it, and so can a schedule from the library directory the backup runner already installs
(``python3 -m ansible_collections.paycraft.selfhost.plugins.module_utils.metrics --config ...``).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import subprocess
import sys
import time

from ansible_collections.paycraft.selfhost.plugins.module_utils import backup, lease, snapshot

# status of the operation record -> success of the last finished operation (1) or not (0)
_OUTCOME = {"done": 1, "rolled_back": 0, "failed": 0, "abandoned": 0, "refused": 0}
RESULT_KINDS = ("backup", "drill", "smoke")


class MetricsError(Exception):
    pass


# --- the exposition format ---------------------------------------------------------------------

class Family:
    """One metric family: name, type (gauge | counter), help, and its samples (labels, value)."""

    def __init__(self, name: str, kind: str, help_text: str):
        if kind not in ("gauge", "counter"):
            raise MetricsError(f"unknown metric type {kind} for {name}")
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list = []

    def add(self, value, **labels) -> Family:
        self.samples.append((labels, float(value)))
        return self


def _escape_label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def render(families: list) -> str:
    """The text exposition format (version 0.0.4), families and samples in a stable order."""
    lines = []
    for fam in sorted(families, key=lambda f: f.name):
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in sorted(fam.samples, key=lambda s: sorted(s[0].items())):
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{fam.name}{{{text}}} {_number(value)}" if text else f"{fam.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def epoch(iso: str | None) -> float | None:
    """Seconds since the epoch of a ``YYYY-MM-DDTHH:MM:SSZ`` time the collection wrote; None if absent or not one."""
    if not iso:
        return None
    try:
        return float(calendar.timegm(time.strptime(str(iso), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise MetricsError(f"{path} cannot be read ({exc}); look at it (cat {path})") from exc
    return data if isinstance(data, dict) else {}


# --- the readers --------------------------------------------------------------------------------

def operation_families(state: dict) -> list:
    """The last upgrade, rollback or rotation recorded on the host, and whether one is unfinished."""
    unfinished = Family("paycraft_operation_unfinished", "gauge",
                        "1 while the operation record says an operation is running or was interrupted")
    started = Family("paycraft_operation_started_timestamp_seconds", "gauge",
                     "When the operation in the record started")
    finished = Family("paycraft_operation_finished_timestamp_seconds", "gauge",
                      "When the operation in the record finished")
    success = Family("paycraft_operation_last_success", "gauge",
                     "1 when the last finished operation ended done, 0 when rolled back, failed, abandoned or refused")
    if state:
        op = str(state.get("operation") or "unknown")
        status = str(state.get("status") or "")
        labels = {"operation": op, "to_version": str(state.get("to_version") or "")}
        unfinished.add(1 if status == "running" else 0, operation=op)
        if epoch(state.get("started_at")) is not None:
            started.add(epoch(state.get("started_at")), operation=op)
        if status in _OUTCOME:
            success.add(_OUTCOME[status], status=status, **labels)
            if epoch(state.get("finished_at")) is not None:
                finished.add(epoch(state.get("finished_at")), status=status, **labels)
    else:
        unfinished.add(0, operation="none")
    return [unfinished, started, finished, success]


def lock_families(state: str, info: dict) -> list:
    """The host lock: held or not, and since when (``state`` as lease.status gives it: free, held, stale)."""
    held = Family("paycraft_lock_held", "gauge", "1 while an operation holds the host lock (stale counts as held)")
    since = Family("paycraft_lock_held_since_timestamp_seconds", "gauge", "Since when the host lock is held")
    is_held = state in ("held", "stale")
    op = str(info.get("operation") or "unknown") if is_held else "none"
    held.add(1 if is_held else 0, operation=op, stale="1" if state == "stale" else "0")
    when = info.get("since_epoch") or epoch(info.get("since"))
    if is_held and when:
        since.add(float(when), operation=op)
    return [held, since]


def backup_families(backups: list, offsite: dict) -> list:
    """The newest complete backup (time, size), how many are kept, and the off-site copy's state."""
    last = Family("paycraft_backup_last_success_timestamp_seconds", "gauge",
                  "When the newest complete backup in the backup directory was taken")
    size = Family("paycraft_backup_last_size_bytes", "gauge", "Size of the newest complete backup")
    count = Family("paycraft_backups_kept", "gauge", "Complete backups kept in the backup directory")
    off_ok = Family("paycraft_backup_offsite_ok", "gauge", "1 when the last off-site copy succeeded, 0 when it failed")
    pending = Family("paycraft_backup_offsite_pending", "gauge", "Backups not copied off-site yet")
    count.add(len(backups))
    if backups:
        newest = backups[-1]
        when = epoch(newest.get("created_at"))
        if when is not None:
            last.add(when)
        size.add(float(newest.get("size") or 0))
    if offsite.get("state") in ("ok", "failed"):
        off_ok.add(1 if offsite["state"] == "ok" else 0)
        pending.add(len(offsite.get("pending") or []))
    return [last, size, count, off_ok, pending]


def result_families(results: dict) -> list:
    """The last result of each kind the collection records (backup runs, drills, smoke runs)."""
    success = Family("paycraft_result_success", "gauge", "1 when the last run of this kind succeeded, 0 when it failed")
    at = Family("paycraft_result_timestamp_seconds", "gauge", "When the last run of this kind ended")
    for kind in sorted(results):
        entry = results[kind] if isinstance(results[kind], dict) else {}
        if "ok" not in entry:
            continue
        success.add(1 if entry["ok"] else 0, kind=kind)
        when = epoch(entry.get("at"))
        if when is not None:
            at.add(when, kind=kind)
    return [success, at]


def container_families(inspected: list) -> list:
    """Each PayCraft container as the engine reports it (``docker inspect`` output, a list)."""
    running = Family("paycraft_container_running", "gauge", "1 when the container runs (and is not restarting)")
    restarting = Family("paycraft_container_restarting", "gauge", "1 while the engine restarts the container")
    restarts = Family("paycraft_container_restarts_total", "counter", "Restarts of the container by the engine")
    for item in inspected:
        name = str(item.get("Name") or "").lstrip("/")
        state = item.get("State") or {}
        compose_labels = (item.get("Config") or {}).get("Labels") or {}
        labels = {"container": name, "service": str(compose_labels.get("com.docker.compose.service") or name)}
        running.add(1 if state.get("Running") and not state.get("Restarting") else 0, **labels)
        restarting.add(1 if state.get("Restarting") else 0, **labels)
        restarts.add(int(item.get("RestartCount") or 0), **labels)
    return [running, restarting, restarts]


def local_runner(argv, cwd=None, timeout=None):
    """A runner (module_utils/_cli.py's convention: argv -> (rc, stdout, stderr)) for the scheduled collector,
    which runs without Ansible; a missing binary is rc 127."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout or 30)
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)} did not answer within {timeout or 30}s"
    return res.returncode, res.stdout, res.stderr


def inspect_containers(runner, prefix: str = "paycraft_") -> list:
    """``docker inspect`` of every container whose name starts with ``prefix`` (running or not)."""
    rc, out, err = runner(["docker", "ps", "--all", "--filter", f"name=^/{prefix}", "--format", "{{.Names}}"])
    if rc != 0:
        raise MetricsError(f"docker ps failed: {(err or '').strip()[:300]}")
    names = [n for n in out.split() if n.startswith(prefix)]
    if not names:
        return []
    rc, out, err = runner(["docker", "inspect", *names])
    if rc != 0:
        # a container removed between the two calls: inspect what is left, one at a time
        found = []
        for name in names:
            rc, out, err = runner(["docker", "inspect", name])
            if rc == 0:
                found += json.loads(out or "[]")
        return found
    return json.loads(out or "[]")


# --- the results file ---------------------------------------------------------------------------

def record_result(path: str, kind: str, ok: bool, at: str, detail: str = "") -> dict:
    """Write the result of a backup run, drill or smoke run into the results file (atomically); the new content."""
    if kind not in RESULT_KINDS:
        raise MetricsError(f"unknown result kind {kind!r}; one of {', '.join(RESULT_KINDS)}")
    results = _read_json(path)
    results[kind] = {"ok": bool(ok), "at": at, "detail": str(detail)[:500]}
    snapshot.write_json_atomic(path, results, 0o644)
    return results


# --- collecting and writing ---------------------------------------------------------------------

def collect(cfg: dict, runner=local_runner, lock_status=None, clock=time.time) -> list:
    """Every family, from the paths in ``cfg``: operation_file, lock_file, backup_dir, results_file;
    ``containers: false`` leaves the engine out. ``runner`` runs docker (module_utils/_cli.py's convention);
    ``lock_status(lock)`` is lease.status (injected)."""
    families = []
    families += operation_families(_read_json(cfg["operation_file"]) if cfg.get("operation_file") else {})
    if cfg.get("lock_file") and lock_status is not None:
        state, info = lock_status(cfg["lock_file"])
        families += lock_families(state, info or {})
    if cfg.get("backup_dir"):
        families += backup_families(backup.list_backups(cfg["backup_dir"]),
                                    _read_json(os.path.join(cfg["backup_dir"], backup.STATUS)))
    if cfg.get("results_file"):
        families += result_families(_read_json(cfg["results_file"]))
    if cfg.get("containers", True):
        families += container_families(inspect_containers(runner))
    families.append(Family("paycraft_metrics_collected_timestamp_seconds", "gauge",
                           "When this file was written (a stale file means the collector stopped)").add(int(clock())))
    return families


def without_timestamp(text: str) -> str:
    """The file's content without the collection time: what ``changed`` compares."""
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith("paycraft_metrics_collected_timestamp_seconds"))


def differs(path: str, text: str) -> bool:
    """Whether writing ``text`` to ``path`` changes a metric (the collection time aside); check mode asks this."""
    try:
        with open(path) as fh:
            before = fh.read()
    except FileNotFoundError:
        return True
    return without_timestamp(before) != without_timestamp(text)


def write(path: str, text: str) -> bool:
    """Write the textfile atomically (node_exporter reads it at any time, never half of it); whether the metrics
    other than the collection time changed."""
    changed = differs(path, text)
    snapshot.write_atomic(path, text, 0o644)
    return changed


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the PayCraft host's textfile metrics for node_exporter.")
    parser.add_argument("--config", default="/etc/paycraft/metrics.json")
    parser.add_argument("--out", help="the .prom file (default: the config's out)")
    args = parser.parse_args(argv)
    cfg = _read_json(args.config)
    out = args.out or cfg.get("out")
    if not out:
        print(f"metrics: no output file: set out in {args.config} or pass --out", file=sys.stderr)
        return 2
    try:
        write(out, render(collect(cfg, lock_status=lease.status)))
    except (MetricsError, OSError, ValueError) as exc:
        print(f"metrics: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
