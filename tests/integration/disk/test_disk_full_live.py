"""Issue 32, disk full: operations on a host whose disks are real small filesystems, with a writer on the gateway.

One disposable Docker-in-Docker host is installed by ``site.yml`` at v1.0.0. Two of its filesystems are
small on purpose: the snapshot directory (/var/backups/paycraft, a tmpfs mounted in the host before the
install) and the inner engine's volume area (/var/lib/docker/volumes, a tmpfs mounted into the host
container; the live database volume and every copy of it live there). Each case fills or shrinks one of
them, runs the operation while tests/paycraft_writer.py inserts a product every 0.1 s through the
gateway, and checks that every acknowledged write is in the database, that writes are accepted again
after the run, and that nothing of the host's release changed (checkout, containers and their ids,
volumes, env file, operation record, write hold, snapshots: no half-made one left behind).

- upgrade.yml with a snapshot directory too small for the dump (the reserve set to 0, so the refusal
  comes from the real free space): refused before the lock, the hold or any change, naming the host,
  the MiB needed and free and what to do next;
- upgrade.yml whose estimate is wrong (size factor tiny), on a filled snapshot filesystem: the real
  pg_dump hits "no space left on device"; the partial snapshot is removed, writes are let through
  again, the record says the upgrade failed at its snapshot, the message names the free space;
- rollback.yml whose copy of the database volume does not fit on the volume area (reserve 0): refused
  before anything stops, naming the volume, MiB used and free;
- backup.yml and the scheduled runner, and rotate.yml's rotation snapshot, on a filled filesystem:
  refused before writing, nothing live touched;
- rollback.yml whose copy fills the volume area half-way (the check passed): the half copy removed, the
  database started again, the rollback ends as refused (finished record, hold lifted, writes flow again),
  and a following site.yml changes nothing of the data or the release.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "integration" / "reference"))

from conftest_release import SERVICES, make_release, reference_host_vars, require_playbook_on_dind  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]
MIB = 1048576
SNAPSHOTS = "/var/backups/paycraft"
BACKUPS = "/var/backups/paycraft-backups"
VOLUMES = "/var/lib/docker/volumes"
DB_VOLUME = "selfhost_paycraft-db"
WRITER = REPO / "tests" / "paycraft_writer.py"
FILLER = ".filler"


def until(condition, what: str, bound: float = 300.0):
    """Wait for ``condition``; the bound only stops a broken build from hanging."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from paycraft_dind import DindHost, _controller_env

    compose_src = require_playbook_on_dind()
    root = tmp_path_factory.mktemp("disk-full")
    origin = root / "paycraft.git"
    make_release(origin)
    t0 = time.monotonic()
    # the volume area: big enough to install, shrunk later (tmpfs remount) below a copy of the database
    volumes = ("--mount", f"type=tmpfs,dst={VOLUMES},tmpfs-size={1024 * MIB}")
    with DindHost(tmp_path_factory.getbasetemp(), name=f"paycraft-pytest-disk-{secrets.token_hex(3)}",
                  run_args=volumes) as host:
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        inventory = root / "inventory.yml"
        hostvars = reference_host_vars(origin, compose_src, paycraft_backup_scheduler="none",
                                       paycraft_backup_install_packages=False)
        inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: hostvars}}}))
        env = {**_controller_env(), "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}

        def sh(script: str, check: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run(["docker", "exec", host.name, "sh", "-c", script], capture_output=True, text=True,
                                  env=_controller_env(), timeout=600)
            if check and proc.returncode != 0:
                raise AssertionError(f"{script} exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
            return proc

        def play(playbook: str, *extra: str) -> tuple[int, str]:
            args = []
            for item in extra:
                args += ["-e", item]
            proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / playbook),
                                   *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
            return proc.returncode, proc.stdout + proc.stderr

        # the snapshot directory: an 8 MiB filesystem of its own, there before the install creates it
        sh(f"mkdir -p {SNAPSHOTS} && mount -t tmpfs -o size=8m,mode=0700 paycraft-snapshots {SNAPSHOTS}")
        rc, out = play("site.yml")
        assert rc == 0, out[-6000:]
        key = root / "anon.key"
        env_text = sh("cat /etc/paycraft/paycraft.env").stdout
        key.write_text(re.search(r"(?m)^PAYCRAFT_ANON_KEY=(.*)$", env_text).group(1).strip())
        key.chmod(0o600)
        print(f"\n[disk-full] host installed in {time.monotonic() - t0:.0f} s")
        yield {"host": host, "sh": sh, "play": play, "root": root, "key": key, "name": host.name, "env": env}
    print(f"[disk-full] module done in {time.monotonic() - t0:.0f} s")


def psql(live, sql: str) -> str:
    return live["sh"]("docker exec paycraft_db psql -U postgres -d postgres -tAX -v ON_ERROR_STOP=1 -c "
                      f"{json.dumps(sql)}").stdout.strip()


def release_state(live) -> dict:
    """What an operation that changed nothing leaves as it was."""
    sh = live["sh"]
    return {
        "head": sh("git -C /opt/paycraft/src rev-parse HEAD").stdout.strip(),
        "containers": sorted(sh("docker ps -a --filter name=paycraft_ --format '{{.Names}} {{.ID}} {{.State}}'")
                             .stdout.split("\n")),
        "volumes": sorted(sh("docker volume ls -q").stdout.split()),
        "env": sh("sha256sum /etc/paycraft/paycraft.env").stdout.split()[0],
        "record": sh("cat /etc/paycraft/operation.json 2>/dev/null || echo none").stdout,
        "hold": sh("cat /etc/paycraft/write-hold.json 2>/dev/null || echo none").stdout,
        "snapshots": sorted(sh(f"ls -A {SNAPSHOTS}").stdout.split()),
    }


def fill(live, mount: str, leave: int) -> int:
    """Fill the filesystem at ``mount`` with a file until ``leave`` bytes are free; returns the free bytes."""
    sh = live["sh"]
    sh(f"rm -f {mount}/{FILLER}")
    free = int(sh(f"df -B1 --output=avail {mount} | tail -n 1").stdout)
    if free > leave:
        sh(f"head -c {free - leave} /dev/zero > {mount}/{FILLER}")
    return int(sh(f"df -B1 --output=avail {mount} | tail -n 1").stdout)


def free_of(live, mount: str) -> int:
    return int(live["sh"](f"df -B1 --output=avail {mount} | tail -n 1").stdout)


def take_snapshot(live) -> str:
    """A snapshot of v1.0.0 to roll back to (the module an upgrade uses); returns its name."""
    sh = live["sh"]
    had = set(sh(f"ls -A {SNAPSHOTS}").stdout.split())
    taken = subprocess.run(
        ["ansible", "-i", str(live["root"] / "inventory.yml"), live["name"],
         "-m", "paycraft.selfhost.paycraft_snapshot",
         "-a", json.dumps({"state": "present", "backup_dir": SNAPSHOTS, "version": "v1.0.0"})],
        capture_output=True, text=True, timeout=600, env=live["env"], cwd=REPO)
    assert taken.returncode == 0, taken.stdout[-3000:] + taken.stderr[-3000:]
    names = sorted(set(sh(f"ls -A {SNAPSHOTS}").stdout.split()) - had)
    assert len(names) == 1, names
    return names[0]


class Writer:
    """tests/paycraft_writer.py inserting through the host's gateway while an operation runs."""

    def __init__(self, live, case: str, held_after: bool = False) -> None:
        self.live, self.case, self.held_after = live, case, held_after
        self.out = live["root"] / f"{case}.acked"
        self.stop = live["root"] / f"{case}.stop"

    def __enter__(self) -> Writer:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), "run", "--api-url", self.live["host"].url(54321), "--anon-key-file",
             str(self.live["key"]), "--email", "writer-1@paycraft-tests.invalid", "--password", "pw-writer-1-Secret!",
             "--out", str(self.out), "--prefix", f"w-{self.case}", "--stop-file", str(self.stop),
             "--max-seconds", "1200"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        until(lambda: Path(str(self.out) + ".ready").exists() or self.proc.poll() is not None, "the writer is ready")
        assert self.proc.poll() is None, self.proc.communicate()[0]
        until(lambda: self.acked() >= 5, "the writer's first acknowledged writes")
        return self

    def acked(self) -> int:
        return len(self.out.read_text().splitlines()) if self.out.exists() else 0

    def __exit__(self, *exc) -> None:
        self.ended_at = time.time()
        if self.proc.poll() is None and not self.held_after:
            # writes go through again after the run: ten more acknowledged before it stops
            after = self.acked()
            until(lambda: self.acked() >= after + 10, "writes acknowledged after the run")
        self.stop.touch()
        out, _ = self.proc.communicate(timeout=120)
        self.summary = json.loads(out.strip().splitlines()[-1])

    def check(self) -> dict:
        present = psql(self.live, f"SELECT sku FROM public.products WHERE sku LIKE 'w-{self.case}-%'")
        proc = subprocess.run([sys.executable, str(WRITER), "check", "--acked", str(self.out)], input=present,
                              capture_output=True, text=True, timeout=60)
        result = json.loads(proc.stdout)
        assert proc.returncode == 0 and result["missing"] == 0, result
        assert result["acknowledged"] >= 15, result
        return result


def test_upgrade_is_refused_before_anything_when_the_snapshot_filesystem_is_too_small(live):
    t0 = time.monotonic()
    # a real full disk: 1 MiB left, less than the database (the reserve set to 0: no margin decides it)
    left = fill(live, SNAPSHOTS, MIB)
    db_size = int(psql(live, "SELECT pg_database_size('postgres')"))
    assert db_size > left, (db_size, left)
    before = release_state(live)
    with Writer(live, "upgfull") as writer:
        rc, out = live["play"]("upgrade.yml", "paycraft_version=v1.1.0", "paycraft_snapshot_reserve_mb=0")
    assert rc != 0, out[-6000:]
    assert f"{live['name']}: not enough disk for the snapshot" in out, out[-6000:]
    told = re.search(rf"the snapshot needs [\d.]+ MiB free in {SNAPSHOTS} and [\d.]+ MiB is free \((\d+) and (\d+) "
                     r"bytes; the estimate is the database size x 1.0 plus 0 MiB kept free\)", out)
    assert told, out[-6000:]
    assert int(told.group(1)) >= db_size and int(told.group(2)) == left, (told.group(0), db_size, left)
    assert "Nothing was changed" in out and "then run the same command again" in out, out[-6000:]
    # nothing ran past the check: no record of an upgrade, no hold, no checkout, no container touched
    assert "TASK [paycraft.selfhost.release : Lock the host and start the record" not in out, out[-6000:]
    assert "TASK [paycraft.selfhost.release : Hold every write back" not in out, out[-6000:]
    assert release_state(live) == before
    result = writer.check()
    # rollback.yml holds writes from its start, so its checks ran with writes held: 503s only, none lost
    assert set(writer.summary["refused"]) <= {"503"}, writer.summary
    live["sh"](f"rm -f {SNAPSHOTS}/{FILLER}")
    print(f"[disk-full] upgrade refused by the snapshot disk: {time.monotonic() - t0:.0f} s, writer {result}")


def test_an_upgrade_whose_dump_fills_the_disk_removes_its_partial_snapshot_and_lets_writes_through(live):
    t0 = time.monotonic()
    db_size = int(psql(live, "SELECT pg_database_size('postgres')"))
    # the estimate is wrong on purpose (a factor far below what pg_dump writes): the check passes on
    # 32 KiB, and the real dump (about 100 KiB of pg_dump -Fc here) meets the full disk
    left = fill(live, SNAPSHOTS, 32 * 1024)
    factor = 8 * 1024 / db_size
    before = release_state(live)
    ledger = psql(live, "SELECT count(*), max(version) FROM public._paycraft_migrations")
    with Writer(live, "dumpfull") as writer:
        rc, out = live["play"]("upgrade.yml", "paycraft_version=v1.1.0", "paycraft_snapshot_reserve_mb=0",
                               f"paycraft_snapshot_size_factor={factor:.8f}")
    assert rc != 0, out[-6000:]
    assert "failed at step snapshot" in out, out[-6000:]
    assert f"{live['name']}: the upgrade snapshot did not fit in {SNAPSHOTS}" in out, out[-6000:]
    assert "no space left on device" in out, out[-6000:]
    assert "It failed while taking the snapshot, before anything else changed: v1.0.0 still runs." in out
    after = release_state(live)
    # the same release, containers (ids) and volumes; no partial snapshot; writes let through again
    for key in ("head", "containers", "volumes", "env", "snapshots"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert after["hold"] == "none\n", after["hold"]
    assert free_of(live, SNAPSHOTS) == left
    record = json.loads(after["record"])
    assert (record["operation"], record["status"], record["to_version"]) == ("upgrade", "failed", "v1.1.0"), record
    failed = [s for s in record["steps"] if s.get("status") == "failed"]
    assert [s["name"] for s in failed] == ["snapshot"], record["steps"]
    assert psql(live, "SELECT count(*), max(version) FROM public._paycraft_migrations") == ledger
    result = writer.check()
    live["sh"](f"rm -f {SNAPSHOTS}/{FILLER}")
    print(f"[disk-full] upgrade whose dump filled the disk: {time.monotonic() - t0:.0f} s, writer {result}")


def test_a_rollback_whose_copy_does_not_fit_on_the_volume_area_is_refused_before_anything_stops(live):
    t0 = time.monotonic()
    sh = live["sh"]
    name = take_snapshot(live)
    # the volume area shrunk (tmpfs remount) until the database volume's copy cannot fit, with room left
    # for the live database to keep writing
    used_db = int(sh(f"du -sk {VOLUMES}/{DB_VOLUME}/_data | cut -f1").stdout) * 1024
    used_all = int(sh(f"df -B1 --output=used {VOLUMES} | tail -n 1").stdout)
    sh(f"mount -o remount,size={used_all + used_db // 2} {VOLUMES}")
    assert free_of(live, VOLUMES) < used_db
    before = release_state(live)
    with Writer(live, "copyfull") as writer:
        rc, out = live["play"]("rollback.yml", f"paycraft_rollback_snapshot={name}",
                               "paycraft_release_copy_reserve_mb=0")
    assert rc != 0, out[-6000:]
    assert f"{live['name']}: the database volume {DB_VOLUME} takes" in out, out[-6000:]
    assert "a copy of it plus the 0 MiB reserve (paycraft_release_copy_reserve_mb) does not fit" in out
    assert "Nothing was stopped, restored or changed" in out and "run the same command again" in out
    assert release_state(live) == before
    result = writer.check()
    # rollback.yml holds writes from its start, so its checks ran with writes held: 503s only, none lost
    assert set(writer.summary["refused"]) <= {"503"}, writer.summary
    sh(f"mount -o remount,size={1024 * MIB} {VOLUMES}")
    print(f"[disk-full] rollback refused by the volume area: {time.monotonic() - t0:.0f} s, writer {result}")


def test_backup_and_rotation_snapshot_are_refused_on_a_full_filesystem(live):
    t0 = time.monotonic()
    sh = live["sh"]
    sh(f"mkdir -p {BACKUPS} && mount -t tmpfs -o size=4m,mode=0700 paycraft-backups {BACKUPS}")
    left = fill(live, BACKUPS, MIB)
    before = release_state(live)
    with Writer(live, "backupfull") as writer:
        rc, out = live["play"]("backup.yml", "paycraft_backup_reserve_mb=0")
        assert rc != 0, out[-6000:]
        assert f"{live['name']}: not enough disk for the backup in {BACKUPS}: {left} bytes are free there" in out
        assert "Nothing was written" in out, out[-6000:]
        # the scheduled runner backup.yml installed, as the timer starts it (it waits for the failed run's
        # lock to be given back by its keeper)
        runner = sh("/usr/local/sbin/paycraft-backup --lock-wait 120", check=False)
        assert runner.returncode == 1, runner
        assert f"paycraft-backup on {live['name']} FAILED: {live['name']}: not enough disk for the backup" \
            in runner.stderr, runner.stderr
        assert sh(f"ls -A {BACKUPS}").stdout.split() == [FILLER]
        # rotate.yml: its snapshot comes first and does not fit either
        fill(live, SNAPSHOTS, MIB)
        rc, out = live["play"]("rotate.yml", "paycraft_rotate_secret=db_password",
                               "paycraft_rotate_confirm=db_password")
        assert rc != 0, out[-6000:]
        assert f"{live['name']}: not enough disk for the rotation snapshot in {SNAPSHOTS}" in out, out[-6000:]
    after = release_state(live)
    assert after == {**before, "snapshots": sorted([*before["snapshots"], FILLER])}, (before, after)
    result = writer.check()
    # the rotation holds writes from before its snapshot: 503s only, none lost
    assert set(writer.summary["refused"]) <= {"503"}, writer.summary
    sh(f"rm -f {SNAPSHOTS}/{FILLER} {BACKUPS}/{FILLER}")
    print(f"[disk-full] backup, runner and rotation refused: {time.monotonic() - t0:.0f} s, writer {result}")


def test_a_rollback_copy_that_fills_the_volume_area_half_way_ends_refused_and_writes_flow_again(live):
    """The check passes (a negative reserve stands for an estimate that was wrong, or a disk something else filled
    after the check): the real ``cp`` meets the full volume area. Nothing changed the live database (the copy
    read it only): the half copy is removed, the database started again, the rollback ends as refused (record
    finished, so no later run restores the snapshot over the live data), the hold is lifted and writes flow
    again; a following site.yml, once space is freed, changes nothing of the data or the release."""
    t0 = time.monotonic()
    sh = live["sh"]
    # the snapshot the rollback before took (this test alone: one of its own)
    name = ([n for n in sorted(sh(f"ls -A {SNAPSHOTS}").stdout.split()) if n != FILLER] or [take_snapshot(live)])[-1]
    used_db = int(sh(f"du -sk {VOLUMES}/{DB_VOLUME}/_data | cut -f1").stdout) * 1024
    used_all = int(sh(f"df -B1 --output=used {VOLUMES} | tail -n 1").stdout)
    sh(f"mount -o remount,size={used_all + used_db // 2} {VOLUMES}")
    assert free_of(live, VOLUMES) < used_db
    before = release_state(live)
    with Writer(live, "copyhalf") as writer:
        rc, out = live["play"]("rollback.yml", f"paycraft_rollback_snapshot={name}",
                               f"paycraft_release_copy_reserve_mb={-(used_db // MIB + 1)}")
        # (leaving the block waits for ten more writes acknowledged after the run: the hold is lifted)
    assert rc != 0, out[-6000:]
    assert f"{live['name']}: rollback v1.0.0 -> v1.0.0 REFUSED, no data changed:" in out, out[-6000:]
    assert f"{live['name']}: the copy of the database volume {DB_VOLUME} to {DB_VOLUME}-before-rollback-" in out
    assert "No space left on device" in out and "Docker's volume filesystem filled up" in out, out[-6000:]
    assert "The partial copy was removed and what was stopped for the copy was started again" in out
    assert f"The live database volume {DB_VOLUME} was only read by the copy" in out, out[-6000:]
    assert "Postgres answers again." in out, out[-6000:]
    assert "Writes were held back at the gateway (503) during the attempt and flow again" in out, out[-6000:]
    assert "recorded as refused in /etc/paycraft/operation.json, so no later run completes it" in out, out[-6000:]
    assert f"Next: free space on the filesystem of /var/lib/docker on {live['name']}" in out, out[-6000:]
    assert f"playbooks/rollback.yml -e paycraft_rollback_snapshot={SNAPSHOTS}/{name}" in out, out[-6000:]
    after = release_state(live)
    # no half copy, the same containers (ids) running again, the checkout and the env file as they were
    for key in ("head", "containers", "volumes", "env", "snapshots"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert free_of(live, VOLUMES) > used_db // 4  # the partial copy's space is free again
    # the rollback ended as refused: finished, the failed step kept, no hold left
    record = json.loads(after["record"])
    assert (record["operation"], record["status"]) == ("rollback", "refused"), record
    assert record["finished_at"] and "no data changed" in record["message"], record
    assert [s["name"] for s in record["steps"] if s.get("status") == "failed"] == ["keep"], record["steps"]
    assert after["hold"] == "none\n", after["hold"]
    result = writer.check()  # every acknowledged write is in the live database, which was never touched
    # 503 while held; no answer while the gateway was stopped for the copy (and until it was started again)
    assert writer.summary["refused"].get("503", 0) > 0, writer.summary
    assert set(writer.summary["refused"]) <= {"503", "no-answer"}, writer.summary

    # the operator frees space; the next site.yml finds a finished record and changes nothing of the data
    sh(f"mount -o remount,size={1024 * MIB} {VOLUMES}")
    with Writer(live, "aftercopy") as later:
        rc, out = live["play"]("site.yml")
    assert rc == 0, out[-6000:]
    assert "the last operation did not finish" not in out, out[-6000:]
    again = release_state(live)
    for key in ("head", "volumes", "env", "snapshots", "record", "hold"):
        assert again[key] == after[key], (key, after[key], again[key])
    later.check()
    assert writer.check() == result  # the writes acknowledged around the refused rollback are all still there
    print(f"[disk-full] rollback copy filled the volume area, refused: {time.monotonic() - t0:.0f} s, writer {result}")
