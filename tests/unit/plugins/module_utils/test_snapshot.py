"""module_utils/snapshot.py: manifest, checksums, retention, disk estimate; dump/verify/restore on real PostgreSQL."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import snapshot as s

# the same server binaries as the session's cluster (tests/conftest.py); not imported from there:
# `conftest` is whichever conftest module pytest imported last under that name
PG_BIN = Path(os.environ.get("PAYCRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))

T0 = datetime.datetime(2026, 11, 28, 23, 0, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017 - Python 3.9


def _fake_snapshot(backup_dir, version, minute, body=b"PGDMP-fake"):
    now = T0 + datetime.timedelta(minutes=minute)
    d = os.path.join(backup_dir, f"{s.utc_stamp(now)}-{s.safe_version(version)}")
    os.makedirs(d, mode=0o700)
    for name, data in ((s.DUMP, body), (s.GLOBALS, b"CREATE ROLE x;\n")):
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(data)
    manifest = s.make_manifest(version, os.path.join(d, s.DUMP), os.path.join(d, s.GLOBALS), "040", "0.1.0",
                               "postgres", 3, now)
    s.write_json_atomic(os.path.join(d, s.MANIFEST), manifest)
    return d


def test_manifest_names_version_time_size_checksums_ledger_and_collection(tmp_path):
    d = _fake_snapshot(str(tmp_path), "v1.0.0", 0)
    m = s.read_manifest(d)
    assert m["version"] == "v1.0.0"
    assert m["created_at"] == "2026-11-28T23:00:00Z"
    assert m["ledger_head"] == "040" and m["collection_version"] == "0.1.0"
    assert m["files"][s.DUMP]["sha256"] == s.sha256_file(os.path.join(d, s.DUMP))
    assert m["size"] == len(b"PGDMP-fake") + len(b"CREATE ROLE x;\n")
    assert stat.S_IMODE(os.stat(os.path.join(d, s.MANIFEST)).st_mode) == 0o600
    assert s.verify_checksums(d) == []


def test_truncated_dump_is_reported_by_the_checksum(tmp_path):
    d = _fake_snapshot(str(tmp_path), "v1.0.0", 0, body=b"PGDMP" + b"x" * 100)
    with open(os.path.join(d, s.DUMP), "r+b") as fh:
        fh.truncate(10)
    problems = s.verify_checksums(d)
    assert any("truncated" in p for p in problems)
    assert any("sha256" in p for p in problems)


def test_a_directory_without_manifest_is_incomplete_and_never_offered(tmp_path):
    d = _fake_snapshot(str(tmp_path), "v1.0.0", 0)
    os.unlink(os.path.join(d, s.MANIFEST))
    assert s.list_snapshots(str(tmp_path)) == []
    assert s.incomplete_snapshots(str(tmp_path)) == [d]
    assert "no readable" in s.verify_checksums(d)[0]


def test_find_newest_of_a_version_or_by_name(tmp_path):
    a = _fake_snapshot(str(tmp_path), "v1.0.0", 0)
    b = _fake_snapshot(str(tmp_path), "v1.0.0", 5)
    c = _fake_snapshot(str(tmp_path), "v1.1.0", 9)
    assert s.find_snapshot(str(tmp_path), "v1.0.0")["path"] == b
    assert s.find_snapshot(str(tmp_path), "v1.1.0")["path"] == c
    assert s.find_snapshot(str(tmp_path), name=os.path.basename(a))["path"] == a
    assert s.find_snapshot(str(tmp_path), name=a)["path"] == a
    assert s.find_snapshot(str(tmp_path), "v9.9.9") is None


def test_retention_keeps_the_newest_and_never_the_protected(tmp_path):
    made = [_fake_snapshot(str(tmp_path), f"v1.0.{i}", i) for i in range(7)]
    removed = s.prune(str(tmp_path), 5, protect=(made[0],))
    assert removed == [made[1]]
    assert [x["path"] for x in s.list_snapshots(str(tmp_path))] == [made[0], *made[2:]]
    with pytest.raises(s.SnapshotError):
        s.prune(str(tmp_path), 0)


def test_private_dir_is_0700_even_when_it_existed(tmp_path):
    d = tmp_path / "backups"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)  # noqa: S103 - the mode the test expects fixed
    assert s.ensure_private_dir(str(d)) is True
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert s.ensure_private_dir(str(d)) is False


def test_disk_estimate_and_free_space_of_a_directory_yet_to_be_made(tmp_path):
    assert s.needed_bytes(1000, factor=1.5, reserve=10) == 1510
    assert s.free_bytes(str(tmp_path / "not" / "yet")) > 0


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "x.json"
    s.write_json_atomic(str(p), {"a": 1})
    s.write_json_atomic(str(p), {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["x.json"]


# -- real PostgreSQL: dump, pg_restore --list, restore --clean --if-exists ----------------------
@pytest.fixture
def db(pg, pg_db):
    if not (PG_BIN / "pg_dump").exists():
        pytest.skip("pg_dump not installed")
    env = {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGPASSWORD": pg.password,
           "PATH": f"{PG_BIN}:{os.environ['PATH']}"}
    return s.Database(None, user=pg.user, database=pg_db["dbname"], env=env)


def test_take_verify_and_restore_bring_back_exactly_the_snapshot(tmp_path, db):
    db.psql("CREATE TABLE _paycraft_migrations(version text primary key);"
            "INSERT INTO _paycraft_migrations VALUES ('010'),('040');"
            "CREATE TABLE products(id int primary key, name text);"
            "INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 50) g")
    backups = str(tmp_path / "backups")
    m = s.take(backups, db, "v1.0.0", "0.1.0", keep=5)
    assert m["ledger_head"] == "040"
    assert m["verified"]["pg_restore_list_entries"] >= 2
    assert stat.S_IMODE(os.stat(backups).st_mode) == 0o700
    for name in (s.DUMP, s.GLOBALS, s.MANIFEST):
        assert stat.S_IMODE(os.stat(os.path.join(m["path"], name)).st_mode) == 0o600
    assert s.verify_checksums(m["path"]) == []

    # what an upgrade writes after the snapshot: a new column, a new table, more rows
    db.psql("ALTER TABLE products ADD COLUMN archived_at timestamptz; CREATE TABLE provider_kinds(k text);"
            "INSERT INTO products(id, name) VALUES (51, 'late'); INSERT INTO _paycraft_migrations VALUES ('060')")
    db.restore(os.path.join(m["path"], s.DUMP), os.path.join(m["path"], s.GLOBALS))
    assert db.psql("SELECT count(*), sum(id) FROM products") == "50|1275"
    assert db.psql("SELECT to_regclass('provider_kinds') IS NULL") == "t"
    assert db.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'archived_at'") == "0"
    assert db.ledger_head() == "040"


def test_a_truncated_dump_fails_the_checksum_and_pg_restore_list_refuses_a_broken_header(tmp_path, db):
    db.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g")
    m = s.take(str(tmp_path), db, "v1.0.0", "0.1.0", keep=5)
    dump = os.path.join(m["path"], s.DUMP)
    # pg_restore --list reads only the table of contents: a dump cut in its data passes it,
    # which is why the manifest's sha256 is checked first
    with open(dump, "r+b") as fh:
        fh.truncate(os.path.getsize(dump) - 200)
    assert db.list_dump(dump) > 0
    assert any("truncated" in p for p in s.verify_checksums(m["path"]))
    with open(dump, "r+b") as fh:
        fh.truncate(40)
    with pytest.raises(s.SnapshotError, match="pg_restore --list"):
        db.list_dump(dump)


def test_restore_with_jobs_reads_the_file_and_every_table_of_the_dump_is_there(tmp_path, db):
    db.psql("CREATE TABLE products(id int primary key, name text); CREATE TABLE plans(id int);"
            "INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 50) g")
    m = s.take(str(tmp_path), db, "v1.0.0", "0.1.0", keep=5)
    dump = os.path.join(m["path"], s.DUMP)
    assert {"public.products", "public.plans"} <= set(db.tables_of(dump))
    db.psql("DROP TABLE plans")
    assert db.missing_tables(dump) == ["public.plans"]
    # the local tools see the dump where the host does: its "path in the container" is the same one
    db.restore(dump, os.path.join(m["path"], s.GLOBALS), jobs=2, container_dump=dump)
    assert db.missing_tables(dump) == []
    assert db.psql("SELECT count(*) FROM products") == "50"
    with pytest.raises(s.SnapshotError, match="-j reads the dump from a file"):
        db.restore(dump, os.path.join(m["path"], s.GLOBALS), jobs=2)


def test_a_dump_cut_in_its_data_fails_its_restore(tmp_path, db):
    db.psql("CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
    m = s.take(str(tmp_path), db, "v1.0.0", "0.1.0", keep=5)
    dump = os.path.join(m["path"], s.DUMP)
    with open(dump, "r+b") as fh:
        fh.truncate(os.path.getsize(dump) // 2)
    with pytest.raises(s.SnapshotError, match="pg_restore"):
        db.restore(dump, os.path.join(m["path"], s.GLOBALS), jobs=2, container_dump=dump)


def test_table_entries_reads_the_table_entries_of_a_listing():
    listing = (";\n; Archive created at 2026-12-07\n;\n"
               "215; 1259 16390 TABLE public tenants postgres\n"
               "3400; 0 16390 TABLE DATA public tenants postgres\n"
               "216; 1259 16391 SEQUENCE public tenants_id_seq postgres\n"
               "217; 1259 16392 TABLE auth users supabase_auth_admin\n")
    assert s.table_entries(listing) == ["public.tenants", "auth.users"]


# -- retention per kind, the recorded rollback snapshot, partial directories, free space (issue 32) --
def _kinded(backup_dir, version, minute, kind):
    d = _fake_snapshot(backup_dir, version, minute)
    manifest = s.read_manifest(d)
    manifest.pop("path")
    manifest["kind"] = kind
    s.write_json_atomic(os.path.join(d, s.MANIFEST), manifest)
    return d


def test_one_upgrade_then_five_rotations_keeps_the_upgrade_snapshot(tmp_path):
    upgrade = _kinded(str(tmp_path), "v1.0.0", 0, "upgrade")
    rotations = [_kinded(str(tmp_path), "v1.1.0", 1 + i, "rotation") for i in range(6)]
    # what rotate.yml's snapshot prunes after its sixth snapshot (keep 5)
    removed = s.prune(str(tmp_path), 5, protect=(rotations[-1],), kind="rotation")
    assert removed == [rotations[0]]
    assert os.path.isdir(upgrade)
    # and an upgrade's retention never removes a rotation snapshot or a backup
    backup = _kinded(str(tmp_path), "v1.1.0", 30, "backup")
    assert s.prune(str(tmp_path), 1, kind="upgrade") == []
    assert os.path.isdir(backup) and all(os.path.isdir(r) for r in rotations[1:])


def test_an_old_snapshot_without_kind_counts_as_an_upgrade_snapshot(tmp_path):
    old = [_fake_snapshot(str(tmp_path), "v1.0.0", i) for i in range(3)]
    assert s.kind_of(s.read_manifest(old[0])) == "upgrade"
    assert s.prune(str(tmp_path), 2, kind="upgrade") == [old[0]]
    assert s.prune(str(tmp_path), 1, kind="rotation") == []


def test_the_snapshot_the_last_upgrade_would_roll_back_to_is_never_pruned(tmp_path):
    snaps = str(tmp_path / "snaps")
    first = _kinded(snaps, "v1.0.0", 0, "upgrade")
    later = [_kinded(snaps, "v1.1.0", 1 + i, "upgrade") for i in range(3)]
    record = tmp_path / "operation.json"
    record.write_text(json.dumps({"operation": "upgrade", "status": "done", "snapshot": first + "/"}))
    assert s.recorded_snapshot(str(record)) == first
    assert s.recorded_snapshot(str(tmp_path / "missing.json")) is None
    removed = s.prune(snaps, 1, protect=(s.recorded_snapshot(str(record)),), kind="upgrade")
    assert removed == later[:2]
    assert os.path.isdir(first)


def test_a_partial_directory_is_cleaned_a_complete_or_live_one_never(tmp_path):
    complete = _fake_snapshot(str(tmp_path), "v1.0.0", 0)
    dead = os.path.join(str(tmp_path), "20261128T231000Z-v1.0.0")
    os.makedirs(dead)
    (Path(dead) / s.DUMP).write_bytes(b"PGDMP-half")
    live = os.path.join(str(tmp_path), "20261128T232000Z-v1.0.0")
    os.makedirs(live)
    held = s.lock_dir(live)  # a run still writing it
    try:
        assert s.clean_partial(str(tmp_path)) == [dead]
    finally:
        os.close(held)
    assert os.path.isdir(complete) and os.path.isdir(live) and not os.path.exists(dead)
    assert s.clean_partial(str(tmp_path)) == [live]  # its writer is gone now
    assert os.path.isdir(complete)


def test_take_cleans_a_killed_snapshot_and_records_its_kind(tmp_path, db):
    db.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    backups = str(tmp_path / "snaps")
    os.makedirs(os.path.join(backups, "20261128T231000Z-v0.9.0"))
    m = s.take(backups, db, "v1.0.0", "0.1.0", keep=5, kind="rotation")
    assert m["cleaned"] == [os.path.join(backups, "20261128T231000Z-v0.9.0")]
    assert s.read_manifest(m["path"])["kind"] == "rotation"
    assert [x["name"] for x in s.list_snapshots(backups)] == [m["name"]]


def test_take_refuses_before_writing_when_the_disk_is_too_small(tmp_path, db):
    db.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    backups = str(tmp_path / "snaps")
    with pytest.raises(s.SnapshotError) as err:
        s.take(backups, db, "v1.0.0", "0.1.0", keep=5, kind="rotation", reserve=1000, free_of=lambda p: 4096)
    msg = str(err.value)
    size = db.size()
    assert "4096 bytes are free" in msg and f"{size + 1000} bytes are needed" in msg
    assert backups in msg and s.socket.gethostname() in msg
    assert os.listdir(backups) == []


# -- a disk that fills while the snapshot is written (the free-space estimate was wrong) --------------
DOCKER_ENOSPC = "pg_dump -Fc in container paycraft_db failed (exit 1): write /dev/stdout: no space left on device"


def test_a_full_disk_is_told_apart_from_other_failures():
    assert s.disk_full(OSError(s.errno.ENOSPC, "No space left on device"))
    assert s.disk_full(OSError(s.errno.EDQUOT, "Disk quota exceeded"))
    assert s.disk_full(s.SnapshotError(DOCKER_ENOSPC))
    wrapped = s.SnapshotError("writing x failed")
    wrapped.__cause__ = OSError(s.errno.ENOSPC, "No space left on device")
    assert s.disk_full(wrapped)
    assert not s.disk_full(s.SnapshotError("pg_dump -Fc in container paycraft_db failed (exit 1): permission denied"))
    assert not s.disk_full(OSError(s.errno.EACCES, "Permission denied"))


class _FillingDb:
    """A database whose dump writes ``written`` bytes, then fails the way ``fail`` says."""

    database = "postgres"

    def __init__(self, written: int, fail: BaseException | None) -> None:
        self.written, self.fail = written, fail

    def size(self) -> int:
        return 1000

    def ledger_head(self):
        return "040"

    def dump(self, dump_path, globals_path):
        with open(dump_path, "wb") as fh:
            fh.write(b"P" * self.written)
        if self.fail is not None:
            raise self.fail
        with open(globals_path, "wb") as fh:
            fh.write(b"CREATE ROLE x;\n")

    def list_dump(self, dump_path):
        return 3


@pytest.mark.parametrize("fail", [s.SnapshotError(DOCKER_ENOSPC), OSError(s.errno.ENOSPC, "No space left on device")])
def test_a_dump_that_fills_the_disk_removes_its_partial_snapshot_and_says_what_to_do(tmp_path, fail):
    backups = str(tmp_path / "snaps")
    with pytest.raises(s.SnapshotError) as err:
        s.take(backups, _FillingDb(4096, fail), "v1.0.0", "0.1.0", keep=5, free_of=lambda p: 123)
    msg = str(err.value)
    assert msg.startswith(f"the upgrade snapshot did not fit in {backups}: the disk filled after 4096 bytes")
    assert "no space left on device" in msg.lower() and "123 bytes are free there now" in msg
    assert f"df -B1 {backups}" in msg and "run the same command again" in msg
    assert os.listdir(backups) == []  # no half snapshot left behind


def test_a_manifest_that_meets_a_full_disk_leaves_nothing_either(tmp_path, monkeypatch):
    backups = str(tmp_path / "snaps")

    def full(path, data, mode=0o600):
        raise OSError(s.errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s, "write_json_atomic", full)
    with pytest.raises(s.SnapshotError) as err:
        s.take(backups, _FillingDb(10, None), "v1.0.0", "0.1.0", keep=5, kind="rotation", free_of=lambda p: 0)
    assert str(err.value).startswith(f"the rotation snapshot did not fit in {backups}: the disk filled after 25 bytes")
    assert os.listdir(backups) == []


def test_another_failure_of_the_dump_is_not_called_a_full_disk(tmp_path):
    backups = str(tmp_path / "snaps")
    other = s.SnapshotError("pg_dump -Fc in container paycraft_db failed (exit 1): connection refused")
    with pytest.raises(s.SnapshotError) as err:
        s.take(backups, _FillingDb(10, other), "v1.0.0", "0.1.0", keep=5)
    assert err.value is other
    assert os.listdir(backups) == []
