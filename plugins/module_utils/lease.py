# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host lock: one lease for every operation that changes a PayCraft host (issue #32).

Files, beside each other (``/etc/paycraft/operation.json.lock`` by default)::

    <lock>        flock(2) target; held by the HOLDER process on the host for the whole operation
    <lock>.json   what the holder says (written atomically at every heartbeat):
                  {"run_id", "controller", "user", "pid", "playbook", "operation", "step",
                   "since", "renewed_at", "holder_pid", "lease_seconds", "heartbeat_seconds",
                   "state": "held" | "released" | "lost" | "broken"}
    <lock>.pulse  the owning run's sign of life: {"run_id", "pulse_at"} (written by each renew)
    <lock>.doing  what the owning run does now: {"run_id", "operation", "step"}

The holder renews the lease (``renewed_at``) every ``heartbeat`` seconds while its owner lives:
either a local process (``watch_pid``: the scheduled backup's runner) or a run on a controller,
whose keeper process (``keep``, on the controller, while that run's ansible-playbook lives) writes a
pulse every few seconds through Ansible. A pulse older than the lease means the owner is gone: the
holder writes ``lost`` and exits, which frees the flock. There is no fixed deadline: an operation
that lasts longer than the lease keeps its lock as long as its owner keeps pulsing.

A second operation sees, in order: the flock free -> the lock is free (whatever ``<lock>.json``
says); the flock held and ``renewed_at`` younger than the lease -> held, refused with the holder's
name; the flock held and ``renewed_at`` older than the lease -> the holder process hangs (stopped,
frozen): ``stale``, and it may be broken (the holder is stopped by its pid).

Every function takes its clock and process probes as arguments, so the unit tests drive it with a
fake clock and real processes. Pure Python (3.7+), no Ansible import: the module, the scheduled
backup runner and the controller's keeper run this same file (``python3 lease.py hold|keep ...``).
"""

from __future__ import annotations

import errno
import fcntl
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# exit code of the scheduled backup runner when it skipped because the host lock stayed taken
EXIT_LOCKED = 75  # EX_TEMPFAIL (sysexits.h)


class LockError(Exception):
    """The lock cannot be taken or is not this run's; ``info`` is what the holder recorded."""

    def __init__(self, message: str, info: dict | None = None, status: str = ""):
        super().__init__(message)
        self.info = info or {}
        self.status = status


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def info_path(lock: str) -> str:
    return lock + ".json"


def pulse_path(lock: str) -> str:
    return lock + ".pulse"


def doing_path(lock: str) -> str:
    return lock + ".doing"


def write_json(path: str, data: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-lease-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def flock_held(lock: str) -> bool:
    """True when some process holds the flock on ``lock``."""
    try:
        fd = os.open(lock, os.O_RDONLY)
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


def pid_alive(pid) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not alive
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid) -> str:
    """The start time of a process (field 22 of /proc/<pid>/stat, clock ticks since boot); "" when gone.

    A run id is ``<controller>:<pid>:<start>``: the same for every task of one run, and a reused pid
    gives another one (roles/common tasks/lock.yml reads the same field with ``cut -d' ' -f22``).
    """
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


# --- what a second operation sees ---------------------------------------------------------------

def status(lock: str, now: float | None = None, held: bool | None = None) -> tuple[str, dict]:
    """(free | held | stale, the holder's info). ``held`` is the flock probe (injected by tests)."""
    now = time.time() if now is None else now
    info = read_json(info_path(lock))
    doing = read_json(doing_path(lock))
    if info and doing.get("run_id") == info.get("run_id"):
        # what the run does now (the holder copies it at its next heartbeat)
        info["operation"] = doing.get("operation") or info.get("operation")
        info["step"] = doing.get("step") or info.get("step") or ""
    if not (flock_held(lock) if held is None else held):
        return "free", info
    lease = float(info.get("lease_seconds") or 0)
    renewed = float(info.get("renewed_epoch") or 0)
    if lease and renewed and now - renewed > lease:
        return "stale", info
    return "held", info


def describe(info: dict, now: float | None = None) -> str:
    """The holder's name and what it is doing, for a refusal."""
    if not info:
        return "another process (it recorded nothing)"
    now = time.time() if now is None else now
    renewed = float(info.get("renewed_epoch") or 0)
    age = f", lease renewed {int(max(0, now - renewed))} s ago" if renewed else ""
    step = info.get("step") or "-"
    return (f"{info.get('operation') or 'an operation'} (step: {step}) run by {info.get('user', '?')}@"
            f"{info.get('controller', '?')}, {info.get('playbook') or '?'} pid {info.get('pid', '?')}, "
            f"since {info.get('since', '?')}{age}; run id {info.get('run_id', '?')}, "
            f"lock holder pid {info.get('holder_pid', '?')} on this host")


# --- the holder (runs on the host, as `python3 -c <this file> hold ...`) --------------------------

def owner_alive(lock: str, info: dict, now: float, lease: float, watch_pid: int, alive=pid_alive) -> bool:
    """The holder's owner lives: its watched pid runs, or its last pulse is younger than the lease."""
    if watch_pid:
        return alive(watch_pid)
    pulse = read_json(pulse_path(lock))
    if pulse.get("run_id") != info.get("run_id"):
        return False
    return now - float(pulse.get("pulse_epoch") or 0) <= lease


def beat(lock: str, info: dict, now: float, lease: float, watch_pid: int, alive=pid_alive) -> bool:
    """One heartbeat: renew the lease when the owner lives (True), else record it lost (False)."""
    doing = read_json(doing_path(lock))
    if doing.get("run_id") == info.get("run_id"):
        info["operation"] = doing.get("operation") or info.get("operation")
        info["step"] = doing.get("step") or ""
    if owner_alive(lock, info, now, lease, watch_pid, alive):
        info.update(renewed_epoch=now, renewed_at=_iso(now), state="held")
        write_json(info_path(lock), info)
        return True
    info.update(state="lost", lost_at=_iso(now),
                lost_because=(f"its process {watch_pid} ended") if watch_pid else
                f"no pulse from its run for more than {int(lease)} s")
    write_json(info_path(lock), info)
    return False


def hold(lock: str, info: dict, heartbeat: float, lease: float, watch_pid: int = 0,
         clock=time.time, sleep=time.sleep, stopped=lambda: False, alive=pid_alive, ready=None) -> str:
    """Take the flock and renew the lease until stopped (-> released) or the owner is gone (-> lost)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return "busy"
    now = clock()
    info = dict(info, holder_pid=os.getpid(), lease_seconds=lease, heartbeat_seconds=heartbeat,
                since=info.get("since") or _iso(now), since_epoch=now)
    if not beat(lock, info, now, lease, watch_pid, alive):
        os.close(fd)
        return "lost"
    if ready:
        ready()
    while True:
        sleep(heartbeat)
        if stopped():
            info.update(state="released", released_at=_iso(clock()))
            write_json(info_path(lock), info)
            os.close(fd)
            return "released"
        if not beat(lock, info, clock(), lease, watch_pid, alive):
            os.close(fd)
            return "lost"


def _hold_main(argv: list) -> int:
    lock, info, heartbeat, lease, watch_pid = argv[0], json.loads(argv[1]), float(argv[2]), float(argv[3]), int(argv[4])
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def ready():
        sys.stdout.write("locked\n")
        sys.stdout.flush()
        sys.stdout.close()

    def nap(seconds):
        # wake at once on SIGTERM
        end = time.monotonic() + seconds
        while not stop and time.monotonic() < end:
            time.sleep(min(0.2, seconds))

    result = hold(lock, info, heartbeat, lease, watch_pid, sleep=nap, stopped=lambda: bool(stop), ready=ready)
    if result == "busy":
        sys.stdout.write("busy\n")
        return 3
    return 0 if result == "released" else 4


def source() -> str:
    """This file's text (the holder runs it with ``python3 -c``), from disk or from the module's zip."""
    try:
        with open(__file__) as fh:
            return fh.read()
    except (OSError, NameError):
        return inspect.getsource(sys.modules[__name__])


# --- taking, renewing and giving the lock back ------------------------------------------------------

def renew(lock: str, run_id: str, now: float | None = None, step: str | None = None,
          operation: str | None = None) -> dict:
    """A sign of life from the owning run (and what it does now). LockError when the lock is not its."""
    now = time.time() if now is None else now
    state, info = status(lock, now)
    if state == "free" or info.get("run_id") != run_id:
        raise LockError(lost_text(state, info, run_id), info, state)
    write_json(pulse_path(lock), {"run_id": run_id, "pulse_epoch": now, "pulse_at": _iso(now)})
    if step is not None or operation is not None:
        doing = read_json(doing_path(lock))
        if doing.get("run_id") != run_id:
            doing = {"run_id": run_id}
        if operation is not None:
            doing["operation"] = operation
        if step is not None:
            doing["step"] = step
        write_json(doing_path(lock), doing)
    return info


def lost_text(state: str, info: dict, run_id: str) -> str:
    if state == "free":
        why = info.get("lost_because") if info.get("run_id") == run_id and info.get("state") == "lost" else ""
        return ("this run no longer holds the host lock: it is free"
                + (f" (the holder gave it up: {why})" if why else "")
                + ". Another operation may have run meanwhile")
    return f"the host lock is held by another run: {describe(info)}"


def acquire(lock: str, holder: dict, operation: str, heartbeat: float = 5, lease: float = 300,
            watch_pid: int = 0, step: str = "", break_lock: bool = False, wait: float = 0,
            python: str | None = None, clock=time.time, sleep=time.sleep) -> dict:
    """Take the lock for the run ``holder['run_id']`` (starts the holder process); returns its info.

    Already this run's: returned as it is (``reused``). Held by another run: waits up to ``wait``
    seconds, then LockError naming it. Stale (its holder stopped renewing) or ``break_lock``: the
    holder process is stopped first.
    """
    run_id = holder.get("run_id") or ""
    if not run_id:
        raise LockError("no run id to take the host lock for")
    directory = os.path.dirname(os.path.abspath(lock))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    deadline = clock() + wait
    broken = None
    while True:
        state, info = status(lock, clock())
        if state != "free" and info.get("run_id") == run_id:
            renew(lock, run_id, clock(), step=step or None, operation=operation)
            return dict(status(lock, clock())[1], reused=True)
        if state == "stale" or (state == "held" and break_lock):
            broken = dict(info, broken_as=state)
            stop_holder(lock, info)
            state, info = status(lock, clock())
        if state == "free":
            break
        if clock() >= deadline:
            raise LockError(f"the host lock is held by {describe(info, clock())}", info, state)
        sleep(min(2.0, max(0.1, deadline - clock())))
    now = clock()
    write_json(pulse_path(lock), {"run_id": run_id, "pulse_epoch": now, "pulse_at": _iso(now)})
    write_json(doing_path(lock), {"run_id": run_id, "operation": operation, "step": step})
    record = dict(holder, operation=operation, step=step, since=_iso(now))
    proc = subprocess.Popen(
        [python or sys.executable, "-c", source(), "hold", lock, json.dumps(record), str(heartbeat), str(lease),
         str(int(watch_pid or 0))],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    line = proc.stdout.readline().decode().strip() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    if line != "locked":
        proc.wait(timeout=30)
        state, info = status(lock)
        raise LockError(f"the host lock is held by {describe(info)}", info, state)
    out = dict(read_json(info_path(lock)), reused=False)
    if broken:
        out["broke"] = broken
    return out


def stop_holder(lock: str, info: dict, wait: float = 10.0) -> bool:
    """Stop the holder process named in ``info`` (SIGTERM, then SIGKILL). True when one was stopped."""
    pid = info.get("holder_pid")
    if not pid or not flock_held(lock):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
        # a stopped (frozen) holder handles the signal once it runs again
        os.kill(int(pid), signal.SIGCONT)
    except ProcessLookupError:
        return False
    end = time.monotonic() + wait
    while time.monotonic() < end and flock_held(lock):
        time.sleep(0.1)
    if flock_held(lock):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        end = time.monotonic() + wait
        while time.monotonic() < end and flock_held(lock):
            time.sleep(0.1)
    return True


def release(lock: str, run_id: str) -> bool:
    """Give the lock back when it is held by ``run_id``. True when this call released it."""
    state, info = status(lock)
    if state == "free" or info.get("run_id") != run_id:
        return False
    return stop_holder(lock, info)


def check_owner(lock: str, run_id: str, now: float | None = None) -> dict:
    """The holder's info when ``run_id`` holds the lock (stale counts as lost); LockError otherwise."""
    state, info = status(lock, now)
    if state == "held" and info.get("run_id") == run_id:
        return info
    if state == "stale" and info.get("run_id") == run_id:
        raise LockError(f"this run's host lock went stale: its holder process (pid {info.get('holder_pid')}) "
                        "stopped renewing it", info, state)
    raise LockError(lost_text(state, info, run_id), info, state)


# --- the keeper (runs on the controller while ansible-playbook lives) ---------------------------------

def _log(line: str) -> None:
    sys.stdout.write(f"{_iso(time.time())} keeper {os.getpid()}: {line}\n")
    sys.stdout.flush()


def keep(pid: int, interval: float, renew_cmd: list, release_cmd: list, alive=pid_alive,
         run=subprocess.run, sleep=time.sleep, log=_log) -> str:
    """Pulse the lease with ``renew_cmd`` every ``interval`` s while ``pid`` lives; then ``release_cmd``.

    The first pulse comes one interval after the keeper starts: taking the lock wrote the run's first
    sign of life (``acquire``), and each pulse is a whole ad-hoc Ansible run (about 1 CPU-s), so a run
    shorter than the interval pulses not at all. A renew that exits 2 (the module refused: the lock is
    no longer this run's, e.g. released at the end of the play) ends the keeper without a release.
    """
    while True:
        # wait for the next pulse a second at a time, so that a killed run's lock is given back
        # within a second of its end, not after a whole interval
        waited = 0.0
        while waited < interval and alive(pid):
            step = min(1.0, interval - waited)
            sleep(step)
            waited += step
        if not alive(pid):
            break
        try:
            rc = run(renew_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     timeout=max(60.0, interval * 4)).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        if rc == 2:
            log(f"the lock is no longer run {pid}'s (released, or taken over): done")
            return "not ours"
        if rc != 0:
            log(f"renew exited {rc} (the host unreachable?); trying again in {interval:g} s")
    log(f"ansible-playbook {pid} is gone: giving its lock back")
    try:
        rc = run(release_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 timeout=300).returncode
        log(f"release exited {rc}")
    except subprocess.TimeoutExpired:
        log("release timed out: the holder gives the lock up after its lease")
    return "released"


def keeper_commands(cfg: dict) -> tuple:
    """The renew and release commands of a keeper: ad-hoc Ansible runs of paycraft_lock on the host."""
    ansible = cfg.get("ansible") or "ansible"
    if not os.path.exists(ansible):
        ansible = shutil.which("ansible") or "ansible"
    base = [ansible, cfg["host"]]
    for source in cfg.get("inventory") or []:
        base += ["-i", source]
    base += ["-m", "paycraft.selfhost.paycraft_lock", "-a"]

    def args(state):
        return json.dumps({"state": state, "path": cfg["lock"], "run_id": cfg["run_id"]})

    return [*base, args("renew")], [*base, args("release")]


def main(argv: list) -> int:
    if argv and argv[0] == "hold":
        return _hold_main(argv[1:])
    if argv and argv[0] in ("keep", "spawn-keeper"):
        cfg = json.loads(argv[1])
        if argv[0] == "spawn-keeper":
            log = cfg.get("log") or os.devnull
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "keep", argv[1]],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True, close_fds=True)
            sys.stdout.write(json.dumps({"keeper_pid": proc.pid}) + "\n")
            return 0
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        renew_cmd, release_cmd = keeper_commands(cfg)
        keep(int(cfg["pid"]), float(cfg["interval"]), renew_cmd, release_cmd)
        return 0
    sys.stderr.write("usage: lease.py hold LOCK INFO HEARTBEAT LEASE WATCH_PID | keep JSON | spawn-keeper JSON\n")
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
