"""module_utils/backup.py on real PostgreSQL, real age, rsync over a real sshd, a real restic repository.

Every backup here is taken from the session's PostgreSQL 15 cluster with its own client tools
(``Database(None, env=...)``, the tools a container would run), restored by the drill into a
throw-away database of the same cluster, and compared table by table.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import backup as b
from ansible_collections.paycraft.selfhost.plugins.module_utils import snapshot as s
from paycraft_testlib import free_port, missing, wait_for

PG_BIN = Path(os.environ.get("PAYCRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))
ODD = '"Odd Schema"."Quoted Name"'  # format('%I.%I') of the oddly named table
T0 = datetime.datetime(2026, 11, 20, 3, 15, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017 - Python 3.9

SCHEMA = """
CREATE TABLE _paycraft_migrations(version text primary key);
INSERT INTO _paycraft_migrations VALUES ('010'), ('040');
CREATE TABLE tenants(id uuid primary key default gen_random_uuid(), name text not null, created_at timestamptz);
CREATE TABLE products(id bigserial primary key, tenant_id uuid references tenants, name text, price numeric(12,2),
                      meta jsonb);
CREATE TABLE api_keys(id bigserial primary key, tenant_id uuid references tenants, key_hash bytea, label text);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Quoted Name"(x int);
INSERT INTO "Odd Schema"."Quoted Name" SELECT g FROM generate_series(1, 7) g;
INSERT INTO tenants(name, created_at) SELECT 'tenant ' || g, timestamptz '2026-01-01' + g * interval '1 hour'
  FROM generate_series(1, 40) g;
INSERT INTO products(tenant_id, name, price, meta)
  SELECT t.id, 'product ' || g, g * 1.25, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g))
  FROM tenants t, generate_series(1, 25) g;
INSERT INTO api_keys(tenant_id, key_hash, label) SELECT id, sha256(name::bytea), NULL FROM tenants;
"""


def need(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            missing(f"{tool} (apt-get install -y {'openssh-server' if tool == 'sshd' else tool})")


@pytest.fixture
def db(pg, pg_db):
    if not (PG_BIN / "pg_dump").exists():
        missing(f"pg_dump in {PG_BIN}")
    env = {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGPASSWORD": pg.password,
           "PATH": f"{PG_BIN}:{os.environ['PATH']}"}
    database = s.Database(None, user=pg.user, database=pg_db["dbname"], env=env)
    database.psql(SCHEMA)
    return database


def databases(db) -> set[str]:
    return set(db.psql("SELECT datname FROM pg_database", database="postgres").split())


def test_a_backup_is_the_snapshot_format_with_per_table_rows_and_checksums(tmp_path, db):
    backups = str(tmp_path / "backups")
    m = b.take(backups, db, "v1.0.0", "0.1.0", now=T0)
    assert m["name"] == "20261120T031500Z-v1.0.0" and m["kind"] == "backup"
    assert stat.S_IMODE(os.stat(backups).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(m["path"]).st_mode) == 0o700
    assert sorted(os.listdir(m["path"])) == [s.DUMP, s.GLOBALS, s.MANIFEST]
    for name in os.listdir(m["path"]):
        assert stat.S_IMODE(os.stat(os.path.join(m["path"], name)).st_mode) == 0o600
    assert m["ledger_head"] == "040"
    assert m["tables"]["public.tenants"]["rows"] == 40
    assert m["tables"]["public.products"]["rows"] == 1000
    assert m["tables"]["public.api_keys"]["rows"] == 40
    assert m["tables"][ODD]["rows"] == 7
    assert all(len(t["checksum"]) == 32 for t in m["tables"].values())
    # what rollback.yml reads: the snapshot library sees a complete snapshot with intact checksums
    assert s.verify_checksums(m["path"]) == [] and b.verify(m["path"]) == []
    assert s.find_snapshot(backups, name=m["name"])["kind"] == "backup"
    # rollback.yml names a backup by its path; the upgrade snapshots live elsewhere
    assert s.find_snapshot(str(tmp_path / "snapshots"), name=m["path"])["path"] == m["path"]
    assert s.find_snapshot(str(tmp_path / "snapshots"), name=m["name"]) is None
    assert m["verified"]["pg_restore_list_entries"] > 5
    on_disk = json.loads(Path(m["path"], s.MANIFEST).read_text())
    assert on_disk["tables"] == m["tables"]


def test_two_backups_in_one_second_get_two_names(tmp_path, db):
    """The scheduled command and a manual run back to back: the second takes the next second's name."""
    first = b.take(str(tmp_path), db, "v1.0.0")
    second = b.take(str(tmp_path), db, "v1.0.0")
    assert first["name"] != second["name"]
    assert sorted(os.listdir(tmp_path)) == sorted([first["name"], second["name"]])
    # a stamp given by the caller is kept as it is: taken twice, it is refused
    b.take(str(tmp_path / "given"), db, "v1.0.0", now=T0)
    with pytest.raises(b.BackupError, match="already exists"):
        b.take(str(tmp_path / "given"), db, "v1.0.0", now=T0)


def test_the_checksum_is_the_contents_not_the_physical_order(db):
    with b.Session(db) as sess:
        before = b.table_checksums(sess)
        # rewrite every row (new physical order), then put the same values back
        sess.query("UPDATE products SET name = name || '!'")
        sess.query("UPDATE products SET name = left(name, -1)")
        sess.query("CLUSTER products USING products_pkey")
        same = b.table_checksums(sess)
        sess.query("UPDATE products SET price = price + 0.01 WHERE id = 17")
        changed = b.table_checksums(sess)
    assert same == before
    assert changed["public.products"]["rows"] == before["public.products"]["rows"]
    assert changed["public.products"]["checksum"] != before["public.products"]["checksum"]
    assert {k: v for k, v in changed.items() if k != "public.products"} == \
           {k: v for k, v in before.items() if k != "public.products"}


def test_the_drill_restores_into_a_throwaway_database_compares_every_table_and_drops_it(tmp_path, db):
    m = b.take(str(tmp_path), db, "v1.0.0")
    db.psql("INSERT INTO tenants(name) VALUES ('after the backup'); DELETE FROM api_keys WHERE id < 5")
    live_before = db.psql("SELECT count(*) FROM tenants") + "/" + db.psql("SELECT count(*) FROM api_keys")
    before = databases(db)
    report = b.drill(db, m["path"])
    assert report["passed"], b.drill_lines(report)
    assert report["restore_exit"] == 0 and report["restore_errors"] == []
    assert [r["table"] for r in report["tables"]] == sorted(m["tables"])
    assert {r["table"]: r["rows_restored"] for r in report["tables"]}["public.tenants"] == 40
    assert all(r["ok"] and r["checksum_restored"] == r["checksum_expected"] for r in report["tables"])
    assert report["drill_database"].startswith("paycraft_drill_")
    assert databases(db) == before  # the throw-away database is gone
    # nothing live touched: the rows written after the backup are still there
    assert db.psql("SELECT count(*) FROM tenants") + "/" + db.psql("SELECT count(*) FROM api_keys") == live_before
    lines = b.drill_lines(report)
    assert "OK   public.products: 1000 rows restored, 1000 dumped" in lines
    assert lines[-1].startswith(f"drill PASSED: backup {m['name']} (")


def test_a_table_is_read_once_the_restore_moved_on_to_the_next_and_not_before(db):
    """What the drill overlaps with pg_restore's data section: a table's checksum is read as soon as its
    COPY is over (the next table's COPY seen running), never while it is still loading."""
    db.psql("CREATE TABLE load_a(n int); CREATE TABLE load_b(n int)")
    watcher = b.LoadedTableChecksums(db, db.database, interval=0.05)
    watcher.start()
    argv = db._exec(["psql", "-U", db.user, "-d", db.database, "-X", "-q", "-v", "ON_ERROR_STOP=1"], interactive=True)
    loader = subprocess.Popen(argv, stdin=subprocess.PIPE, env=dict(os.environ, **db.env))
    try:
        def send(text):
            loader.stdin.write(text.encode())
            loader.stdin.flush()

        send("COPY load_a FROM STDIN;\n" + "".join(f"{n}\n" for n in range(500)))
        wait_for(lambda: watcher.loading == "public.load_a", timeout=60, what="the COPY of load_a seen")
        assert watcher.sums == {}  # still loading: not read
        send("".join(f"{n}\n" for n in range(500, 1000)) + "\\.\nCOPY load_b FROM STDIN;\n1\n")
        wait_for(lambda: "public.load_a" in watcher.sums, timeout=60, what="load_a read once load_b's COPY ran")
        send("2\n\\.\n")
        loader.stdin.close()
        assert loader.wait(timeout=60) == 0
    finally:
        sums = watcher.finish()
        if loader.poll() is None:
            loader.kill()
    with b.Session(db) as sess:
        assert sums == {"public.load_a": b.table_checksums(sess, ["public.load_a"])["public.load_a"]}
    assert sums["public.load_a"]["rows"] == 1000
    assert watcher.error is None


def test_the_drill_names_a_truncated_dump_and_a_flipped_byte_and_restores_nothing(tmp_path, db):
    m = b.take(str(tmp_path), db, "v1.0.0")
    dump = os.path.join(m["path"], s.DUMP)
    good = Path(dump).read_bytes()
    before = databases(db)

    Path(dump).write_bytes(good[: len(good) - 300])
    with pytest.raises(b.BackupError) as exc:
        b.drill(db, m["path"])
    assert f"{dump} is {len(good) - 300} bytes, the manifest says {len(good)} (truncated or replaced)" in str(exc.value)
    assert "nothing was restored" in str(exc.value)

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    Path(dump).write_bytes(bytes(flipped))
    with pytest.raises(b.BackupError) as exc:
        b.drill(db, m["path"])
    assert f"{dump} has sha256 " in str(exc.value) and "the manifest says" in str(exc.value)
    assert "bytes, the manifest says" not in str(exc.value)  # same size: only the checksum tells

    globals_file = os.path.join(m["path"], s.GLOBALS)
    Path(dump).write_bytes(good)
    Path(globals_file).write_text(Path(globals_file).read_text() + "-- edited\n")
    with pytest.raises(b.BackupError, match=f"{globals_file} is "):
        b.drill(db, m["path"])
    assert databases(db) == before


def test_the_drill_reports_a_table_that_differs(tmp_path, db):
    """A dump that does not hold what the manifest says (rewritten with a consistent sha256) fails per table."""
    m = b.take(str(tmp_path), db, "v1.0.0")
    manifest = json.loads(Path(m["path"], s.MANIFEST).read_text())
    manifest["tables"]["public.products"]["rows"] = 999
    manifest["tables"]["public.tenants"]["checksum"] = "0" * 32
    manifest["tables"]["public.gone"] = {"rows": 1, "checksum": "1" * 32}
    s.write_json_atomic(os.path.join(m["path"], s.MANIFEST), manifest)
    report = b.drill(db, m["path"])
    assert not report["passed"]
    assert report["tables_failed"] == ["public.gone", "public.products", "public.tenants"]
    lines = b.drill_lines(report)
    assert "FAIL public.products: 1000 rows restored, 999 dumped - 1000 rows restored, 999 dumped" in lines
    assert "FAIL public.tenants: 40 rows restored, 40 dumped - same row count, different contents" in lines
    assert "FAIL public.gone: None rows restored, 1 dumped - missing from the restored database" in lines
    assert lines[-1].startswith("drill FAILED")


def _fake_backup(backup_dir, minutes_ago, now):
    created = now - datetime.timedelta(minutes=minutes_ago)
    d = os.path.join(backup_dir, f"{s.utc_stamp(created)}-v1.0.0")
    os.makedirs(d, mode=0o700)
    Path(d, s.DUMP).write_bytes(b"PGDMP")
    Path(d, s.GLOBALS).write_bytes(b"--")
    manifest = s.make_manifest("v1.0.0", os.path.join(d, s.DUMP), os.path.join(d, s.GLOBALS), None, "", "postgres",
                               1, created)
    manifest["kind"] = "backup"
    s.write_json_atomic(os.path.join(d, s.MANIFEST), manifest)
    return os.path.basename(d)


def test_retention_removes_exactly_the_backups_past_both_limits(tmp_path):
    now = T0
    day = 24 * 60
    # ages in days: 0, 1, 2, 3, 9, 10, 30 - keep 3 by count and 7 days by age
    names = [_fake_backup(str(tmp_path), d * day, now) for d in (30, 10, 9, 3, 2, 1, 0)]
    # an upgrade snapshot in the same directory is never a backup to prune
    snap = _fake_backup(str(tmp_path), 40 * day, now)
    m = json.loads(Path(tmp_path, snap, s.MANIFEST).read_text())
    del m["kind"]
    s.write_json_atomic(str(Path(tmp_path, snap, s.MANIFEST)), m)

    assert [x["name"] for x in b.prune(str(tmp_path), 3, 7, now=now, dry_run=True)] == names[:3]
    assert sorted(os.listdir(tmp_path)) == sorted([*names, snap])  # dry run
    # the 3-day-old one is past the count (4th newest) but not the age: it stays
    removed = b.prune(str(tmp_path), 3, 7, now=now)
    assert [x["name"] for x in removed] == names[:3]
    assert sorted(os.listdir(tmp_path)) == sorted([*names[3:], snap])
    # by count alone nothing old enough: keep 10 -> nothing; age 0 and count 1 -> all but the newest
    assert b.prune(str(tmp_path), 10, 0, now=now) == []
    assert [x["name"] for x in b.prune(str(tmp_path), 1, 0, now=now)] == names[3:6]
    assert [x["name"] for x in b.list_backups(str(tmp_path))] == [names[6]]
    with pytest.raises(b.BackupError, match="at least 1"):
        b.prune(str(tmp_path), 0, 7, now=now)


@pytest.fixture(scope="session")
def age_identity(tmp_path_factory):
    need("age", "age-keygen")
    d = tmp_path_factory.mktemp("age")
    identity = d / "identity.txt"
    out = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = next(ln.split(": ", 1)[1] for ln in out.stderr.splitlines() if ln.startswith("Public key: "))
    return identity, recipient


def test_an_encrypted_backup_holds_no_plaintext_and_drills_with_the_identity(tmp_path, db, age_identity):
    identity, recipient = age_identity
    backups = tmp_path / "host"
    m = b.take(str(backups), db, "v1.0.0", recipients=[recipient])
    assert sorted(os.listdir(m["path"])) == ["database.dump.age", "globals.sql.age", s.MANIFEST]
    assert m["encryption"] == {"tool": "age", "recipients": [recipient]}
    raw = Path(m["path"], "database.dump.age").read_bytes()
    assert raw.startswith(b"age-encryption.org/v1") and b"PGDMP" not in raw
    assert b"tenant 1" not in raw and b"CREATE ROLE" not in Path(m["path"], "globals.sql.age").read_bytes()
    assert b.verify(m["path"]) == []
    # rollback's snapshot check sees the files are not there as plain dumps
    assert any("database.dump is missing" in p for p in s.verify_checksums(m["path"]))

    with pytest.raises(b.BackupError, match="needs the identity file on the controller"):
        b.drill(db, m["path"])

    # the controller: decrypt with the identity, checks on both sides of age
    plain = tmp_path / "controller" / m["name"]
    decrypted = b.decrypt(m["path"], str(identity), str(plain))
    assert Path(plain, s.DUMP).read_bytes().startswith(b"PGDMP")
    assert stat.S_IMODE(os.stat(plain).st_mode) == 0o700
    assert decrypted["files"][s.DUMP]["sha256"] == s.sha256_file(str(plain / s.DUMP))
    assert b.verify(str(plain)) == []  # a plain backup now, usable by rollback.yml too
    report = b.drill(db, m["path"], plain_dir=str(plain))
    assert report["passed"] and report["encrypted"], b.drill_lines(report)

    # a wrong key, and a flipped byte of the ciphertext, are named
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], capture_output=True, check=True)
    with pytest.raises(b.BackupError, match=r"age could not decrypt .*database.dump.age with .*other.txt"):
        b.decrypt(m["path"], str(other), str(tmp_path / "x"))
    enc = Path(m["path"], "database.dump.age")
    data = bytearray(enc.read_bytes())
    data[-10] ^= 0x40
    enc.write_bytes(bytes(data))
    with pytest.raises(b.BackupError, match=r"database.dump.age has sha256"):
        b.drill(db, m["path"], plain_dir=str(plain))


def test_a_copy_to_a_path_is_read_back_and_a_damaged_far_copy_is_named(tmp_path, db):
    far = tmp_path / "mnt"
    far.mkdir()
    target = b.Target("path", str(far))
    res = b.run(str(tmp_path / "backups"), db, "v1.0.0", 3, 7, target=target)
    name = res["backup"]["name"]
    assert res["offsite"]["copied"][0]["verified"] == [s.DUMP, s.GLOBALS, s.MANIFEST]
    assert sorted(os.listdir(far)) == [name]
    assert stat.S_IMODE(os.stat(far / name / s.DUMP).st_mode) == 0o600
    assert b.read_status(str(tmp_path / "backups"))["state"] == "ok"
    with open(far / name / s.DUMP, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    sums = target.remote_checksums(name)
    assert sums[s.DUMP] != res["backup"]["files"][s.DUMP]["sha256"]
    # restored from there: fetched back and drilled, after the far copy is mended
    shutil.copyfile(os.path.join(res["backup"]["path"], s.DUMP), far / name / s.DUMP)
    fetched = target.fetch(name, str(tmp_path / "fetched"))
    assert b.drill(db, fetched)["passed"]


def test_a_failed_copy_is_an_error_and_the_next_run_reports_it_and_copies_what_is_missing(tmp_path, db):
    backups = str(tmp_path / "backups")
    far = tmp_path / "not-mounted"
    target = b.Target("path", str(far))
    with pytest.raises(b.BackupError) as exc:
        b.run(backups, db, "v1.0.0", 3, 7, target=target, now=T0)
    msg = str(exc.value)
    assert "backup 20261120T031500Z-v1.0.0 was taken and is kept in" in msg
    assert f"the off-site path {far} does not exist (is the disk mounted?)" in msg
    status = b.read_status(backups)
    assert status["state"] == "failed" and status["pending"] == ["20261120T031500Z-v1.0.0"]

    far.mkdir()
    res = b.run(backups, db, "v1.0.0", 3, 7, target=target, now=T0 + datetime.timedelta(hours=1))
    assert res["previous_failure"].startswith("the off-site copy failed at ")
    assert "not copied yet: 20261120T031500Z-v1.0.0" in res["previous_failure"]
    assert [c["name"] for c in res["offsite"]["copied"]] == ["20261120T031500Z-v1.0.0", "20261120T041500Z-v1.0.0"]
    assert sorted(os.listdir(far)) == ["20261120T031500Z-v1.0.0", "20261120T041500Z-v1.0.0"]
    assert b.run_lines(res)[0].startswith("WARNING: the previous run's the off-site copy failed at ")
    assert b.read_status(backups)["state"] == "ok" and b.read_status(backups)["pending"] == []
    # the third run has nothing to report
    res = b.run(backups, db, "v1.0.0", 3, 7, target=target, now=T0 + datetime.timedelta(hours=2))
    assert res["previous_failure"] is None


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port>, a key for the current user, a known_hosts file."""
    need("sshd", "ssh", "ssh-keygen", "rsync", "sha256sum")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    shutil.copyfile(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nPidFile {d / 'sshd.pid'}\nUsePAM no\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([shutil.which("sshd"), "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "wb"))
    pubkey = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {pubkey[0]} {pubkey[1]}\n")
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    opts = [f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=yes"]
    probe = ["ssh", "-o", "BatchMode=yes", "-p", str(port), "-i", str(d / "client_key"), "-o", opts[0], "-o", opts[1],
             f"{user}@127.0.0.1", "true"]
    try:
        wait_for(lambda: subprocess.run(probe, capture_output=True).returncode == 0, timeout=30,
                 what=f"sshd on 127.0.0.1:{port} (log: {d / 'sshd.log'})")
        yield {"port": port, "key": str(d / "client_key"), "options": opts, "user": user}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_rsync_over_ssh_copies_verifies_at_the_far_end_and_restores_from_there(tmp_path, db, sshd):
    far = Path(tempfile.mkdtemp(prefix="paycraft-far-"))
    try:
        target = b.Target("rsync", f"{sshd['user']}@127.0.0.1:{far}/paycraft", ssh_key=sshd["key"],
                          ssh_port=sshd["port"], ssh_options=sshd["options"])
        backups = str(tmp_path / "backups")
        first = b.run(backups, db, "v1.0.0", 1, 0, target=target, now=T0)["backup"]["name"]
        res = b.run(backups, db, "v1.0.0", 1, 0, target=target, now=T0 + datetime.timedelta(days=1))
        name = res["backup"]["name"]
        assert res["offsite"]["copied"][0]["verified"] == [s.DUMP, s.GLOBALS, s.MANIFEST]
        # retention removed the first here and there
        assert [r["name"] for r in res["removed"]] == [first] and res["offsite_removed"] == [first]
        assert sorted(os.listdir(far / "paycraft")) == [name]
        assert stat.S_IMODE(os.stat(far / "paycraft" / name / s.DUMP).st_mode) == 0o600
        assert target.remote_checksums(name) == {f: s.sha256_file(os.path.join(res["backup"]["path"], f))
                                                 for f in (s.DUMP, s.GLOBALS, s.MANIFEST)}
        # the far end damaged: the check names the file
        with open(far / "paycraft" / name / s.GLOBALS, "ab") as fh:
            fh.write(b"--\n")
        assert target.remote_checksums(name)[s.GLOBALS] != res["backup"]["files"][s.GLOBALS]["sha256"]
        # a copy again mends it; fetched back from the far host and drilled
        target.copy(res["backup"]["path"])
        shutil.rmtree(res["backup"]["path"])
        fetched = target.fetch(name, str(tmp_path / "restore"))
        report = b.drill(db, fetched)
        assert report["passed"], b.drill_lines(report)
        # a host key that does not match is refused, never accepted silently
        bad_target = b.Target("rsync", f"{sshd['user']}@127.0.0.1:{far}/paycraft", ssh_key=sshd["key"],
                              ssh_port=sshd["port"],
                              ssh_options=[f"UserKnownHostsFile={tmp_path / 'empty'}", "StrictHostKeyChecking=yes"])
        with pytest.raises(b.BackupError, match="Host key verification failed"):
            bad_target.remote_checksums(name)
    finally:
        shutil.rmtree(far, ignore_errors=True)


def test_restic_repository_copy_is_read_back_and_restored(tmp_path, db):
    need("restic")
    pw = tmp_path / "restic.pw"
    pw.write_text("correct horse battery staple\n")
    os.chmod(pw, 0o600)
    target = b.Target("restic", str(tmp_path / "repo"), password_file=str(pw),
                      env={"RESTIC_CACHE_DIR": str(tmp_path / "cache")})
    backups = str(tmp_path / "backups")
    res = b.run(backups, db, "v1.0.0", 3, 7, target=target)
    name = res["backup"]["name"]
    assert res["offsite"]["copied"][0]["verified"] == [s.DUMP, s.GLOBALS, s.MANIFEST]
    assert target.remote_checksums(name)[s.DUMP] == res["backup"]["files"][s.DUMP]["sha256"]
    # a second copy of the same backup adds no snapshot
    target.copy(res["backup"]["path"])
    out = subprocess.run(["restic", "snapshots", "--json"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, RESTIC_REPOSITORY=target.dest, RESTIC_PASSWORD_FILE=str(pw),
                                  RESTIC_CACHE_DIR=str(tmp_path / "cache")))
    assert len(json.loads(out.stdout)) == 1
    fetched = target.fetch(name, str(tmp_path / "restore"))
    assert sorted(os.listdir(fetched)) == [s.DUMP, s.GLOBALS, s.MANIFEST]
    assert b.drill(db, fetched)["passed"]
    assert target.remove([name]) == [name]
    assert target.remote_checksums(name) == {}


# -- issue 32 item 7: partial directories, free space, credentials in the restic URL ------------------
def test_a_killed_backup_directory_is_cleaned_by_the_next_run_and_a_complete_one_kept(tmp_path, db):
    backups = str(tmp_path / "backups")
    complete = _fake_backup(backups, 60, T0)
    killed = os.path.join(backups, "20261128T225900Z-v1.0.0")
    os.makedirs(killed)
    Path(killed, s.DUMP).write_bytes(b"PGDMP-half")
    result = b.run(backups, db, "v1.0.0", keep_count=7, keep_days=7, now=T0)
    assert result["backup"]["cleaned"] == [killed]
    assert not os.path.exists(killed) and os.path.isdir(os.path.join(backups, complete))
    assert f"removed {killed}, left without its manifest by a killed run" in b.run_lines(result)


def test_a_scheduled_backup_refuses_before_writing_when_the_disk_is_too_small(tmp_path, db):
    backups = str(tmp_path / "backups")
    with pytest.raises(b.SnapshotError) as err:
        b.run(backups, db, "v1.0.0", keep_count=7, keep_days=7, now=T0, reserve=2048, free_of=lambda p: 1000)
    msg = str(err.value)
    assert "1000 bytes are free" in msg and f"{db.size() + 2048} bytes are needed" in msg
    assert backups in msg and socket.gethostname() in msg
    assert os.listdir(backups) == []


def test_the_scheduled_command_refuses_on_a_full_disk(tmp_path, db, capsys, monkeypatch):
    """The timer's command reads reserve_mb from backup.json; a tiny file system (a 1 MiB reserve too big)."""
    backups = tmp_path / "backups"
    cfg = tmp_path / "backup.json"
    cfg.write_text(json.dumps({"backup_dir": str(backups), "container": "", "reserve_mb": 1 << 30}))
    monkeypatch.setattr(b, "Database", lambda *a, **k: db)
    assert b.cli(["--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "not enough disk for the backup" in err and str(backups) in err
    assert os.listdir(backups) == []


def test_a_password_in_the_restic_url_is_never_printed(tmp_path):
    pw = tmp_path / "restic.pw"
    pw.write_text("repo-password\n")
    # a restic that fails and says which repository it could not open (restic's messages name it)
    fake = tmp_path / "restic"
    fake.write_text("#!/bin/sh\necho \"Fatal: unable to open repository at $RESTIC_REPOSITORY: connection refused\""
                    " >&2\nexit 1\n")
    fake.chmod(0o755)
    url = "rest:https://paycraft:hunter2-s3cret@backup.example.invalid:8000/paycraft"
    target = b.Target("restic", url, password_file=str(pw), restic=str(fake))
    assert "hunter2-s3cret" not in target.describe()
    assert "rest:https://paycraft:********@backup.example.invalid:8000/paycraft" in target.describe()
    backups = tmp_path / "backups"
    name = _fake_backup(str(backups), 1, T0)
    with pytest.raises(b.BackupError) as err:
        b.copy_offsite(str(backups), target, [name])
    assert "connection refused" in str(err.value)
    assert "hunter2-s3cret" not in str(err.value)
    assert "hunter2-s3cret" not in (backups / b.STATUS).read_text()
    assert "hunter2-s3cret" not in (b.previous_failure_line(b.read_status(str(backups))) or "")


def test_the_scheduled_runner_carries_every_module_backup_imports():
    """roles/backup/tasks/install.yml copies a list of module_utils files to the host for the timer's command;
    each module-level import of the collection's module_utils from them must be in that list."""
    import re as _re

    import yaml

    repo = Path(__file__).resolve().parents[4]
    tasks = yaml.safe_load((repo / "roles" / "backup" / "tasks" / "install.yml").read_text())
    copied = next(t["loop"] for t in tasks if "module_utils/{{ item }}" in str(t.get("ansible.builtin.copy", "")))
    todo, seen = ["backup.py"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = (repo / "plugins" / "module_utils" / name).read_text()
        for line in text.splitlines():
            if not line.startswith("from ansible_collections.paycraft.selfhost.plugins.module_utils"):
                continue  # module level only (an indented import is a lazy one)
            prefix = r"from ansible_collections\.paycraft\.selfhost\.plugins\.module_utils"
            m = _re.match(prefix + r"(?:\.(\w+))? import (.+)", line)
            mods = [m.group(1)] if m.group(1) else [p.strip().split(" as ")[0] for p in m.group(2).split(",")]
            todo += [f"{mod}.py" for mod in mods if mod and (repo / "plugins" / "module_utils" / f"{mod}.py").exists()]
    assert seen <= set(copied), f"the runner lacks {sorted(seen - set(copied))}"


def test_the_backup_the_operation_record_names_is_never_removed_by_retention(tmp_path, db):
    backups = str(tmp_path / "backups")
    old = [_fake_backup(backups, 60 * 24 * 30 + i, T0) for i in (3, 2, 1)]
    record = tmp_path / "operation.json"
    record.write_text(json.dumps({"operation": "rollback", "status": "done",
                                  "snapshot": os.path.join(backups, old[0])}))
    result = b.run(backups, db, "v1.0.0", keep_count=1, keep_days=0, now=T0,
                   protect=(s.recorded_snapshot(str(record)),))
    assert sorted(r["name"] for r in result["removed"]) == sorted(old[1:])
    assert os.path.isdir(os.path.join(backups, old[0]))


def test_a_backup_whose_dump_fills_the_disk_removes_it_and_says_what_to_do(tmp_path, db, monkeypatch):
    """The real dump is written, then the disk is full (the write of the globals fails with ENOSPC)."""
    backups = str(tmp_path / "backups")
    real = b._stream_to_file

    def filling(db_, argv, path, what, recipients, age="age"):
        if "pg_dumpall" in argv:
            raise b.BackupError(f"writing {path} failed: [Errno 28] No space left on device") \
                from OSError(28, "No space left on device")
        return real(db_, argv, path, what, recipients, age)

    monkeypatch.setattr(b, "_stream_to_file", filling)
    with pytest.raises(b.BackupError) as err:
        b.run(backups, db, "v1.0.0", keep_count=7, keep_days=7, now=T0, free_of=lambda p: 77)
    msg = str(err.value)
    assert msg.startswith(f"the backup did not fit in {backups}: the disk filled after ")
    assert "77 bytes are free there now" in msg and "run the same command again" in msg
    assert os.listdir(backups) == []


def test_the_scheduled_command_records_its_result_for_the_metrics(tmp_path, db, capsys, monkeypatch):
    """results_file in backup.json: a failed run and then a good one, as the host's metrics read them (issue #35)."""
    from ansible_collections.paycraft.selfhost.plugins.module_utils import metrics

    backups = tmp_path / "backups"
    results = tmp_path / "results.json"
    cfg = tmp_path / "backup.json"
    monkeypatch.setattr(b, "Database", lambda *a, **k: db)
    cfg.write_text(json.dumps({"backup_dir": str(backups), "container": "", "reserve_mb": 1 << 30,
                               "results_file": str(results)}))
    assert b.cli(["--config", str(cfg)]) == 1
    failed = json.loads(results.read_text())["backup"]
    assert failed["ok"] is False and "not enough disk for the backup" in failed["detail"]
    assert metrics.epoch(failed["at"]) is not None
    cfg.write_text(json.dumps({"backup_dir": str(backups), "container": "", "results_file": str(results)}))
    assert b.cli(["--config", str(cfg)]) == 0
    done = json.loads(results.read_text())["backup"]
    assert done["ok"] is True and done["detail"] in os.listdir(backups)


def test_a_results_file_that_cannot_be_written_does_not_fail_the_backup(tmp_path, db, capsys, monkeypatch):
    backups = tmp_path / "backups"
    cfg = tmp_path / "backup.json"
    monkeypatch.setattr(b, "Database", lambda *a, **k: db)
    cfg.write_text(json.dumps({"backup_dir": str(backups), "container": "",
                               "results_file": str(tmp_path / "no-such-dir" / "results.json")}))
    assert b.cli(["--config", str(cfg)]) == 0
    assert "the result was not recorded" in capsys.readouterr().err
    assert len(b.list_backups(str(backups))) == 1
