"""The host lock every operation takes, and the write hold of rollback.yml (issue #32), on one disposable
Docker-in-Docker host installed with ``site.yml`` (the reference release v1.0.0), through Ansible.

The holders are real operations. A real ``upgrade.yml`` v1.0.0 -> v1.1.0 runs in the background while a
bounded writer (tests/paycraft_writer.py) inserts a product every 0.1 s through the gateway; once
/etc/paycraft/operation.json shows it at a step after its snapshot, the test pauses its ansible-playbook
(SIGSTOP: a live run that is slow, as a long migration is; the module in flight on the host finishes, the
keeper keeps pulsing) until the lock is older than its lease, then, as an operator would run them:

- ``site.yml`` is refused, naming the holder (user@controller, playbook, pid) and its step;
- the scheduled backup's runner (installed by ``backup.yml``) waits its bounded time, then skips with the
  logged line and exit code 75;
- the lock was not broken: the same holder, still renewing; resumed (SIGCONT), the upgrade passes and
  every acknowledged write is in the database (the writer's counts are printed).

A real ``backup.yml``, paused at its ``dump`` step the same way, refuses ``rotate.yml``. ``kill -9`` of a
holding ansible-playbook uses the stand-in ``hold.yml`` (beside this file): it holds the lock on the
controller, with nothing of its own running on the host, so that what the next run meets is the keeper's
release alone (a real run killed mid-task leaves its module running on the host).

Last, rollback.yml holds writes from its start: refused by its copy check, it lets writes through again
(503 only during its checks, more writes acknowledged afterwards); run for real (v1.1.0 -> v1.0.0) with
the writer, not one write acknowledged after the moment it held writes (``writes_held_at`` of its record,
before its snapshot check) is missing. The tests share the host and run in this order.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests" / "integration" / "reference"))

from conftest_release import SERVICES, make_release, reference_host_vars, require_playbook_on_dind, wait_http  # noqa: E402

WRITER = REPO / "tests" / "paycraft_writer.py"
LOCK = "/etc/paycraft/operation.json.lock"
RECORD = "/etc/paycraft/operation.json"
HOLD_RECORD = "/etc/paycraft/write-hold.json"
LEASE = 20
PULSE = 3
ME = f"{os.environ.get('USER') or 'root'}@{socket.gethostname()}"
# the upgrade's steps after its snapshot: writes are held, the lock renewed by a live run
UPGRADE_STEPS = ("checkout", "images", "migrate", "recreate", "smoke")
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def until(condition, what: str, bound: float = 900.0, interval: float = 1.0):
    """Wait for ``condition``; the bound only stops a broken build from hanging.

    Most conditions here read the host through one to three ``docker exec`` each (about 0.05 CPU-s each:
    the CLI, dockerd and containerd, the command in the host): a look a second, not three, except where a
    short step is to be caught (``interval``).
    """
    end = time.monotonic() + bound
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"never happened: {what}")


class Writer:
    """tests/paycraft_writer.py through the host's gateway: a product every 0.1 s, the keys of the 2xx kept."""

    def __init__(self, live, case: str):
        self.live, self.case = live, case
        root = live["root"]
        self.acked, self.stop_file = root / f"{case}.acked", root / f"{case}.stop"
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), "run", "--api-url", live["api"], "--anon-key-file", str(live["anon_file"]),
             "--email", "writer-1@paycraft-tests.invalid", "--password", "pw-writer-1-Secret!", "--out",
             str(self.acked), "--prefix", f"w-{case}", "--stop-file", str(self.stop_file), "--max-seconds", "1500"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        until(lambda: Path(f"{self.acked}.ready").exists() or self.proc.poll() is not None, f"writer {case} ready",
              bound=300)
        assert self.proc.poll() is None, self.proc.communicate()[0]

    def acked_before(self, at: str) -> int:
        """The writes acknowledged after the writer was ready (the run under test was started then) and
        before ``at`` (a record's whole-second UTC time, the next second included)."""
        ready = Path(f"{self.acked}.ready").read_text().strip()
        times = [line.split("\t")[1] for line in self.acked.read_text().splitlines() if "\t" in line]
        end = at.replace("Z", ".999999Z")
        return sum(1 for t in times if ready <= t <= end)

    def lines(self) -> int:
        return len(self.acked.read_text().splitlines()) if self.acked.exists() else 0

    def stop(self, since: str = "") -> dict:
        """Stop, then count: acknowledged (at or after ``since``), present, missing, refused."""
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, out
        present = self.live["psql"](f"SELECT sku FROM public.products WHERE sku LIKE 'w-{self.case}-%'")
        check = subprocess.run([sys.executable, str(WRITER), "check", "--acked", str(self.acked),
                                *(["--since", since] if since else [])],
                               input=present, capture_output=True, text=True, timeout=120)
        counts = json.loads(check.stdout)
        print(f"[host-lock] writer {self.case}: acknowledged {counts['acknowledged']}, present {counts['present']}, "
              f"missing {counts['missing']}, refused {counts['refused_total']} {counts['refused']}"
              + (f"; before {since} (the documented loss of a rollback): acknowledged "
                 f"{counts['acknowledged_before_since']}, present {counts['present_before_since']}" if since else ""))
        return counts


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from paycraft_dind import DindHost, _controller_env

    compose_src = require_playbook_on_dind()
    root = tmp_path_factory.mktemp("host-lock")
    origin = root / "paycraft.git"
    make_release(origin)
    t0 = time.monotonic()
    with DindHost(tmp_path_factory.getbasetemp(), name=f"paycraft-pytest-lock-{secrets.token_hex(3)}") as host:
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        inventory = root / "inventory.yml"
        hostvars = reference_host_vars(origin, compose_src, paycraft_lock_heartbeat_seconds=1,
                                       paycraft_lock_pulse_seconds=PULSE, paycraft_lock_lease_seconds=LEASE,
                                       paycraft_lock_keeper_log=str(root / "keeper.log"),
                                       paycraft_backup_scheduler="none", paycraft_backup_install_packages=False)
        inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: hostvars}}}))
        env = {**_controller_env(), "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}

        def argv(playbook: str, *extra: str) -> list:
            path = playbook if "/" in playbook else str(REPO / "playbooks" / playbook)
            return ["ansible-playbook", "-i", str(inventory), path, *extra]

        def play(playbook: str, *extra: str, timeout: float = 1800) -> tuple[int, str]:
            proc = subprocess.run(argv(playbook, *extra), env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=timeout)
            return proc.returncode, proc.stdout + proc.stderr

        @contextmanager
        def running(playbook: str, *extra: str):
            """A playbook in the background (output to a file, never a pipe it could fill); on the way out
            it is let go on (SIGCONT) and waited for: .returncode, .output."""
            log = root / f"{Path(playbook).stem}-{time.monotonic_ns()}.log"
            with open(log, "w", encoding="utf-8") as out:
                proc = subprocess.Popen(argv(playbook, *extra), env=env, cwd=REPO, stdout=out,
                                        stderr=subprocess.STDOUT, text=True)
            try:
                yield proc
            finally:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                try:
                    proc.wait(timeout=1800)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.output = log.read_text()

        def sh(script: str) -> subprocess.CompletedProcess:
            return subprocess.run(["docker", "exec", host.name, "sh", "-c", script], capture_output=True, text=True,
                                  env=_controller_env(), timeout=600)

        def read_json(path: str) -> dict:
            out = sh(f"cat {path} 2>/dev/null").stdout
            try:
                return json.loads(out) if out.strip() else {}
            except ValueError:  # read while replaced: the next poll reads it whole
                return {}

        def psql(sql: str) -> str:
            out = sh("docker exec paycraft_db psql -U postgres -d postgres -tAX -v ON_ERROR_STOP=1 -c "
                     + json.dumps(sql))
            assert out.returncode == 0, out
            return out.stdout

        rc, out = play("site.yml")
        assert rc == 0, out[-6000:]
        # the scheduled backup's runner, installed the way operators do (no schedule: the test starts it)
        rc, out = play("backup.yml", "-e", "paycraft_backup_now=false")
        assert rc == 0, out[-6000:]
        env_text = sh("cat /etc/paycraft/paycraft.env").stdout
        anon = re.search(r"^PAYCRAFT_ANON_KEY=(.*)$", env_text, re.M).group(1).strip().strip('"')
        anon_file = root / "anon.key"
        anon_file.write_text(anon)
        anon_file.chmod(0o600)
        api = host.url(54321)
        wait_http(f"{api}/auth/v1/health", ok=lambda r: r.status == 200, timeout=120, what="auth",
                  headers={"apikey": anon})
        print(f"\n[host-lock] host installed (v1.0.0) and runner installed in {time.monotonic() - t0:.0f} s")
        yield {"play": play, "running": running, "sh": sh, "psql": psql, "name": host.name, "root": root,
               "api": api, "anon_file": anon_file, "inventory": inventory, "env": env,
               "info": lambda: read_json(f"{LOCK}.json"), "record": lambda: read_json(RECORD),
               "free": lambda: sh(f"flock -n {LOCK} true").returncode == 0}
    print(f"[host-lock] module done in {time.monotonic() - t0:.0f} s")


@contextmanager
def paused(proc):
    """SIGSTOP of a run's ansible-playbook (alive: its keeper keeps pulsing), SIGCONT on the way out."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def installed(live) -> str:
    return live["sh"]("git -C /opt/paycraft/src describe --tags").stdout.strip()


def test_site_and_the_scheduled_backup_during_a_real_upgrade_with_a_writer(live):
    t0 = time.monotonic()
    writer = Writer(live, "upgrade")
    with live["running"]("upgrade.yml", "-e", "paycraft_version=v1.1.0") as upgrade:
        def at_a_step():
            rec = live["record"]()
            steps = rec.get("steps") or [{}]
            return (rec.get("operation") == "upgrade" and rec.get("status") == "running"
                    and f":{upgrade.pid}:" in rec.get("holder", {}).get("run_id", "")
                    and steps[-1].get("name") in UPGRADE_STEPS) or upgrade.poll() is not None

        until(at_a_step, "operation.json shows the upgrade at a step after its snapshot")
        with paused(upgrade):
            first = until(lambda: live["info"]().get("since_epoch") and live["info"](), "the lock's record")
            assert upgrade.poll() is None and not live["free"]() and f":{upgrade.pid}:" in first["run_id"], first
            # the lock outlives its lease: renewed by the holder, kept alive by the keeper's pulses
            until(lambda: live["info"]().get("renewed_epoch", 0) - first["since_epoch"] > LEASE,
                  "the lock is older than its lease")
            pulse = json.loads(live["sh"](f"cat {LOCK}.pulse").stdout)
            assert pulse["run_id"] == first["run_id"] and pulse["pulse_epoch"] > first["since_epoch"], pulse

            rc, out = live["play"]("site.yml")
            assert rc != 0, out[-4000:]
            assert "another operation holds the lock of this host" in out, out[-4000:]
            holder = re.search(r"upgrade v1\.0\.0 -> v1\.1\.0 \(step: (\w+ (?:begun|done))\) run by " + re.escape(ME)
                               + rf", upgrade\.yml pid {upgrade.pid}\b", out)
            assert holder and holder.group(1).split()[0] in UPGRADE_STEPS, out[-4000:]
            # nothing of site.yml ran past the lock: no preflight, no install
            assert "TASK [paycraft.selfhost.preflight" not in out and "TASK [paycraft.selfhost.docker" not in out

            # the scheduled backup during the upgrade waits its bounded time, then skips, visibly
            runner = live["sh"]("/usr/local/sbin/paycraft-backup --lock-wait 4")
            assert runner.returncode == 75, runner
            assert f"paycraft-backup on {live['name']} SKIPPED (exit 75): waited 4 s for the host lock" in runner.stderr
            assert f"upgrade v1.0.0 -> v1.1.0 (step: {holder.group(1)})" in runner.stderr, runner.stderr
            taken = live["sh"]("ls /var/backups/paycraft-backups 2>/dev/null | grep -c T || true").stdout.strip()
            assert taken in ("", "0"), taken

            # not broken: the same holder, still renewing
            after = live["info"]()
            assert after["holder_pid"] == first["holder_pid"] and after["run_id"] == first["run_id"], after
            assert after["state"] == "held" and after["renewed_epoch"] > first["renewed_epoch"]
    assert upgrade.returncode == 0, upgrade.output[-6000:]
    assert installed(live) == "v1.1.0"
    # the operation record of an upgrade that passed (also what an upgrade from an untagged commit records:
    # tests/integration/site/test_site_from_a_commit_live.py checks its from_version and snapshot up to a rollback)
    record = live["record"]()
    assert (record.get("operation"), record.get("from_version"), record.get("to_version"), record.get("status")) \
        == ("upgrade", "v1.0.0", "v1.1.0", "done"), record
    assert live["sh"](f"test -f {record.get('snapshot')}/manifest.json").returncode == 0, record
    assert live["free"]() and live["info"]()["state"] == "released"
    counts = writer.stop()
    # every acknowledged write is there; writes were held (503) while the upgrade could still roll back
    assert counts["missing"] == 0 and counts["acknowledged"] > 0, counts
    assert counts["refused"].get("503", 0) > 0, counts
    print(f"[host-lock] site + scheduled backup during a real upgrade, with the writer: {time.monotonic() - t0:.0f} s")


def test_rotate_during_a_real_backup_is_refused(live):
    t0 = time.monotonic()
    with live["running"]("backup.yml") as backup:
        until(lambda: (live["info"]().get("step") == "dump" and f":{backup.pid}:" in live["info"]().get("run_id", "")
                       and not live["free"]()) or backup.poll() is not None, "backup.yml at its dump step",
              interval=0.3)  # a small database's dump step is short
        with paused(backup):
            assert backup.poll() is None and not live["free"](), live["info"]()
            rc, out = live["play"]("rotate.yml", "-e", "paycraft_rotate_secret=db_password",
                                   "-e", "paycraft_rotate_confirm=db_password")
            assert rc != 0, out[-4000:]
            assert f"backup (step: dump) run by {ME}, backup.yml pid {backup.pid}" in out, out[-4000:]
            assert "Nothing was changed" in out
    assert backup.returncode == 0, backup.output[-4000:]
    assert live["free"]() and live["info"]()["state"] == "released"
    print(f"[host-lock] rotate during a real backup: {time.monotonic() - t0:.0f} s")


def test_a_killed_run_gives_the_lock_back_through_its_keeper(live):
    t0 = time.monotonic()
    # a lease long enough that a loaded controller's slow pulses cannot let it run out: what gives the
    # lock back here must be the keeper seeing its ansible-playbook gone, not the lease
    release = live["root"] / f"release-{time.monotonic_ns()}"
    with live["running"](str(HERE / "hold.yml"), "-e", json.dumps({
            "paycraft_lock_operation": "rollback", "paycraft_lock_step": "restore begun",
            "paycraft_test_release_file": str(release), "paycraft_lock_lease_seconds": 600})) as rollback:
        until(lambda: live["info"]().get("step") == "restore begun" and f":{rollback.pid}:" in
              live["info"]().get("run_id", "") and not live["free"](), "hold.yml took the lock")
        rollback.send_signal(signal.SIGKILL)
        rollback.wait()
        # the keeper sees its ansible-playbook gone and releases the lock (no lease to wait out)
        until(lambda: live["free"](), "the keeper released the lock of the killed run")
        # the keeper either stops the holder (released) or stops pulsing as its run is gone, which the
        # holder records as lost at its next heartbeat (seen on a machine at load 12): both give the lock
        # back long before the 600 s lease, which is what this test is about
        assert live["info"]()["state"] in ("released", "lost"), live["info"]()
    # the next operation takes it: the scheduled runner takes a backup
    runner = live["sh"]("/usr/local/sbin/paycraft-backup --lock-wait 0")
    assert runner.returncode == 0, runner
    assert live["free"]() and live["info"]()["state"] == "released"
    print(f"[host-lock] a killed run: {time.monotonic() - t0:.0f} s")


def test_a_refused_rollback_held_writes_only_during_its_checks(live):
    t0 = time.monotonic()
    if installed(live) != "v1.1.0":
        rc, out = live["play"]("upgrade.yml", "-e", "paycraft_version=v1.1.0")
        assert rc == 0, out[-4000:]
    ids = live["sh"]("docker ps -q --no-trunc | sort").stdout
    writer = Writer(live, "refused")
    # a full disk, as the copy check (the last check before anything stops) sees it
    rc, out = live["play"]("rollback.yml", "-e", "paycraft_rollback_version=v1.0.0",
                           "-e", "paycraft_release_copy_reserve_mb=1000000000")
    ended = writer.lines()
    until(lambda: writer.lines() >= ended + 5, "writes acknowledged again after the refused rollback", bound=120)
    counts = writer.stop()
    assert rc != 0 and "does not fit. Nothing was" in out, out[-4000:]
    held = out.find("Hold writes back from the start of the run")
    checked = out.find("Check that a copy of the database fits")
    assert 0 <= held < checked, out[-4000:]
    assert "Writes were held back during the checks and flow again" in out, out[-4000:]
    assert "Lock the host and start the record" not in out
    assert live["sh"](f"test -e {HOLD_RECORD}").returncode != 0, "the hold outlived the refused rollback"
    assert live["sh"]("docker ps -q --no-trunc | sort").stdout == ids and installed(live) == "v1.1.0"
    # held from the start (503 only), then writes flowed again; nothing acknowledged is missing
    assert counts["refused"].get("503", 0) > 0 and counts["refused_total"] == counts["refused"]["503"], counts
    assert counts["missing"] == 0 and counts["acknowledged"] > 0, counts
    print(f"[host-lock] a refused rollback: {time.monotonic() - t0:.0f} s")


def test_rollback_loses_no_write_acknowledged_after_its_start(live):
    t0 = time.monotonic()
    writer = Writer(live, "rollback")
    rc, out = live["play"]("rollback.yml", "-e", "paycraft_rollback_version=v1.0.0")
    record = live["record"]()
    counts = writer.stop(since=record.get("writes_held_at", ""))
    print(f"[host-lock] rollback.yml: {writer.acked_before(record.get('writes_held_at', ''))} writes acknowledged "
          "between its start and its hold (the host lock, the recovery check, the hold itself)")
    assert rc == 0, out[-6000:]
    assert installed(live) == "v1.0.0"
    # writes were held before the snapshot's check, before the record began, and nothing since is missing
    assert record["operation"] == "rollback" and record["status"] == "done", record
    assert record.get("writes_held_at") and record["writes_held_at"] <= record["started_at"], record
    assert 0 <= out.find("Hold writes back from the start of the run") < out.find("Find the snapshot and verify")
    assert counts["missing"] == 0 and counts["acknowledged"] > 0 and counts["present"] == counts["acknowledged"], counts
    assert counts["refused"].get("503", 0) > 0, counts
    print(f"[host-lock] rollback.yml with the writer: {time.monotonic() - t0:.0f} s")
