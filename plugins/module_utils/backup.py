# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled backups of the PayCraft database: take, retain, copy off-site, verify, drill.

A backup is a snapshot in the format of :mod:`snapshot` (one ``<UTC stamp>-<version>``
directory, 0700, with ``database.dump``, ``globals.sql`` and ``manifest.json``, files 0600), so
``rollback.yml`` restores either. Backups live in a directory of their own
(``/var/backups/paycraft-backups`` by default), so an upgrade's snapshot retention never
removes one and backup retention never removes a snapshot. The manifest adds:

``kind``        ``backup``
``tables``      per table (``schema.table``): ``rows`` and ``checksum``, taken in the
                exported snapshot ``pg_dump --snapshot`` dumps, so they describe exactly
                the rows in the dump (the REPEATABLE READ transaction stays open until
                the dump ends)
``encryption``  ``{"tool": "age", "recipients": [...]}`` when encrypted: the files are then
                ``database.dump.age`` and ``globals.sql.age`` and ``plaintext`` holds the
                size and sha256 of the decrypted files. The host only ever holds the
                recipients' public keys; the identity (private key) stays on the controller.

A table's checksum is order independent: each row's text form hashed twice with PostgreSQL's
``hashtextextended`` (seeds 0 and 1), both summed over the table, then md5 of the two sums
(``CHECKSUM_METHOD``). Reading a table costs one sequential scan and constant memory, and a
restored table (its rows in another physical order) sums the same.

Off-site copies go to one target: a mounted ``path``, ``rsync`` over SSH, or a ``restic``
repository. A copy counts when the sha256 of every file read back at the far end equals the
manifest's. Copy failures are kept in ``offsite.json`` beside the backups; the next run
reports them and copies the backups still missing before it says the copy is current.

Pure Python; no Ansible import. The role runs :func:`cli` from the host's timer or cron job.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from ansible_collections.paycraft.selfhost.plugins.module_utils import lease, redact, snapshot
from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import (
    DUMP,
    GLOBALS,
    MANIFEST,
    Database,
    SnapshotError,
)

KIND = "backup"
AGE_SUFFIX = ".age"
STATUS = "offsite.json"
DRILL_PREFIX = "paycraft_drill_"
TARGET_KINDS = ("none", "path", "rsync", "restic")
CHUNK = 1 << 20
CHECKSUM_METHOD = "sum-hashtextextended-0-1"

# Ordinary tables of the database, without the catalogs and the tables extensions own
# (CREATE EXTENSION makes those again; pg_dump dumps their rows only when configured to).
TABLES_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "AND d.deptype = 'e') ORDER BY 1"
)


class BackupError(SnapshotError):
    """Something an operator has to act on; the message says what and what next."""


def checksum_sql(table: str) -> str:
    """One row ``rows|checksum`` for ``table`` (already quoted: ``"schema"."name"``).

    Each row's text form hashed twice (``hashtextextended``, seeds 0 and 1: 128 bits per row), each
    summed over the table (order independent), the md5 of both sums. PostgreSQL's own hash: four times
    cheaper than md5 per row, and the drill compares in the same server, so it need not be portable.
    """
    return (
        "SELECT count(*) || '|' || md5(coalesce(sum(hashtextextended(t::text, 0)), 0)::text || ':' "
        f"|| coalesce(sum(hashtextextended(t::text, 1)), 0)::text) FROM {table} t"
    )


# --- a psql session held open (the exported snapshot lives as long as its transaction) ---------

class Session:
    """An interactive ``psql`` (inside the container when there is one) fed one statement at a time."""

    _seq = 0

    def __init__(self, db: Database, database: str | None = None):
        self.db = db
        self.database = database or db.database
        argv = db._exec(["psql", "-U", db.user, "-d", self.database, "-X", "-q", "-tA",
                         "-v", "ON_ERROR_STOP=1"], interactive=True)
        self._err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                         env=dict(os.environ, **db.env) if db.env else None)
        except OSError as exc:
            raise BackupError(f"psql could not be started ({' '.join(argv[:4])}...): {exc}") from exc

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-600:]

    def query(self, sql: str) -> list[str]:
        """Run ``sql`` (one statement, no trailing semicolon needed); its output lines."""
        Session._seq += 1
        marker = f"__paycraft_end_{os.getpid()}_{Session._seq}__"
        try:
            self.proc.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {marker}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            raise BackupError(f"psql on database {self.database} ended: {self._stderr()}") from None
        lines = []
        while True:
            raw = self.proc.stdout.readline()
            if not raw:
                self.proc.wait()
                raise BackupError(f"psql on database {self.database} failed: {self._stderr() or 'it ended'} "
                                  f"(statement: {sql[:200]})")
            line = raw.decode(errors="replace").rstrip("\n")
            if line == marker:
                return [ln for ln in lines if ln != ""]
            lines.append(line)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self._err.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def table_checksums(session: Session, tables: list[str] | None = None) -> dict:
    """``{schema.table: {"rows": n, "checksum": hex}}`` read in ``session`` (its transaction's snapshot)."""
    if tables is None:
        tables = session.query(TABLES_SQL)
    out = {}
    for name in tables:
        schema, _, rel = name.partition(".")
        quoted = _ident(_unquote(schema)) + "." + _ident(_unquote(rel))
        row = session.query(checksum_sql(quoted))
        rows, _, digest = row[0].partition("|")
        out[name] = {"rows": int(rows), "checksum": digest}
    return out


# The table pg_restore is loading into the drill database, named as TABLES_SQL names it. A
# progress row exists only while its COPY runs (PostgreSQL 14+; readable by the drill's superuser).
COPY_PROGRESS_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_stat_progress_copy p "
    "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE p.datname = current_database()"
)


class LoadedTableChecksums(threading.Thread):
    """Read the checksums of the tables pg_restore's data section has finished, while it loads the next.

    It watches pg_restore's COPY in ``pg_stat_progress_copy``. A table counts as loaded (its COPY
    committed) only once pg_restore is seen copying another table: it sends the next COPY after the
    server answered the previous one, so the rows are visible then. Tables it never saw finish are
    left to :func:`drill`'s read beside the post-data section; so are all of them when the server
    has no progress view. Only a reader:
    a table's read waits for nothing and delays nothing in the data section.
    """

    def __init__(self, db: Database, database: str, interval: float = 0.2):
        super().__init__(name="paycraft-drill-checksums", daemon=True)
        self.db, self.database, self.interval = db, database, interval
        self.sums: dict = {}
        self.loading: str | None = None  # the table last seen in pg_restore's COPY
        self.error: str | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            with Session(self.db, database=self.database) as sess:
                while not self._done.is_set():
                    rows = sess.query(COPY_PROGRESS_SQL)
                    seen = rows[0] if rows else None
                    if seen is not None and seen != self.loading:
                        done, self.loading = self.loading, seen
                        if done is not None and done not in self.sums:
                            self.sums.update(table_checksums(sess, [done]))
                    self._done.wait(self.interval)
        except (BackupError, OSError, ValueError, IndexError) as exc:  # the rest is read afterwards
            self.error = str(exc)[:300]

    def finish(self) -> dict:
        """Stop watching (the data section has ended); the checksums read so far."""
        self._done.set()
        self.join()
        return dict(self.sums)


def _unquote(part: str) -> str:
    if part.startswith('"') and part.endswith('"'):
        return part[1:-1].replace('""', '"')
    return part


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- streaming a dump to a file (optionally through age), hashing on the way -------------------

def _stream_to_file(db: Database, argv: list[str], path: str, what: str, recipients: list[str],
                    age: str = "age") -> dict:
    """Run ``argv`` (in the container) and write its stdout to ``path`` (0600), through
    ``age -r ...`` when ``recipients``; returns ``{size, sha256}`` of the plain stream."""
    digest = hashlib.sha256()
    size = 0
    err = tempfile.TemporaryFile()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    out = os.fdopen(fd, "wb")
    enc = None
    try:
        if recipients:
            age_argv = [age]
            for r in recipients:
                age_argv += ["-r", r]
            try:
                enc = subprocess.Popen(age_argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
            except OSError as exc:
                raise BackupError(f"age could not be started to encrypt {path}: {exc} (install Debian's age "
                                  "package, or set paycraft_backup_age_recipients to [] for unencrypted "
                                  "backups)") from exc
            sink = enc.stdin
        else:
            sink = out
        try:
            proc = subprocess.Popen(db._exec(argv), stdout=subprocess.PIPE, stderr=err,
                                    env=dict(os.environ, **db.env) if db.env else None)
        except OSError as exc:
            raise BackupError(f"{what} could not be started: {exc}") from exc
        try:
            while True:
                chunk = proc.stdout.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
        except OSError as exc:
            proc.kill()
            raise BackupError(f"writing {path} failed: {exc}") from exc
        finally:
            rc = proc.wait(timeout=db.timeout)
        if rc != 0:
            err.seek(0)
            raise BackupError(f"{what} in container {db.container} failed (exit {rc}): "
                              f"{err.read().decode(errors='replace').strip()[-400:]}")
        if enc is not None:
            enc.stdin.close()
            enc_rc = enc.wait(timeout=db.timeout)
            if enc_rc != 0:
                raise BackupError(f"age could not encrypt {path} (exit {enc_rc}): "
                                  f"{enc.stderr.read().decode(errors='replace').strip()[-400:]} - check "
                                  "paycraft_backup_age_recipients (age1... public keys)")
        out.flush()
        os.fsync(out.fileno())
    finally:
        if enc is not None and enc.poll() is None:
            enc.kill()
            enc.wait()
        out.close()
        err.close()
    return {"size": size, "sha256": digest.hexdigest()}


# --- take ---------------------------------------------------------------------------------------

def take(backup_dir: str, db: Database, version: str, collection_version: str = "",
         recipients: list[str] | None = None, age: str = "age",
         now: datetime.datetime | None = None, reserve: int | None = None, factor: float = 1.0,
         free_of=snapshot.free_bytes) -> dict:
    """Remove the partial directories a killed run left, refuse when the disk would not hold the dump
    (``reserve`` given: ``pg_database_size`` times ``factor`` plus ``reserve`` bytes must be free), then
    dump the database (``pg_dump -Fc --snapshot``) with the per-table rows and checksums of the
    same snapshot, and the globals; encrypt to ``recipients`` with age when given; write the
    manifest last. Returns the manifest (with ``path``, ``name`` and ``cleaned``)."""
    recipients = [r.strip() for r in (recipients or []) if r and r.strip()]
    snapshot.ensure_private_dir(backup_dir)
    cleaned = snapshot.clean_partial(backup_dir)
    if reserve is not None:
        snapshot.require_space(backup_dir, db.size(), factor, reserve, what="the backup", free_of=free_of)
    given = now is not None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    name = f"{snapshot.utc_stamp(now)}-{snapshot.safe_version(version)}"
    snap_dir = os.path.join(backup_dir, name)
    if os.path.exists(snap_dir) and not given:
        # names are stamped to the second: a backup right after another one (cron and a manual run) takes the
        # next second's name instead of failing
        time.sleep(1.0 - now.microsecond / 1e6 + 0.01)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = f"{snapshot.utc_stamp(now)}-{snapshot.safe_version(version)}"
        snap_dir = os.path.join(backup_dir, name)
    if os.path.exists(snap_dir):
        raise BackupError(f"{snap_dir} already exists; wait a second and re-run")
    try:
        os.mkdir(snap_dir, 0o700)
    except OSError as exc:
        if snapshot.disk_full(exc):
            raise snapshot.disk_full_error(backup_dir, "the backup", 0, exc, free_of, cls=BackupError) from exc
        raise
    held = snapshot.lock_dir(snap_dir)  # a partial directory with no holder is a killed run's
    suffix = AGE_SUFFIX if recipients else ""
    dump_file, globals_file = DUMP + suffix, GLOBALS + suffix
    timings = {}
    try:
        t0 = time.monotonic()
        with Session(db) as sess:
            sess.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snap_id = sess.query("SELECT pg_export_snapshot()")[0]
            head = None
            if sess.query("SELECT to_regclass('public._paycraft_migrations') IS NOT NULL")[0] == "t":
                head = (sess.query("SELECT max(version) FROM public._paycraft_migrations") or [None])[0]
            tables = sess.query(TABLES_SQL)
            sums: dict = {}
            failure: list = []

            def checksum_worker():
                try:
                    sums.update(table_checksums(sess, tables))
                except BaseException as exc:  # handed to the main thread
                    failure.append(exc)

            worker = threading.Thread(target=checksum_worker, name="paycraft-backup-checksums")
            worker.start()
            try:
                plain_dump = _stream_to_file(
                    db, ["pg_dump", "-U", db.user, "-Fc", f"--snapshot={snap_id}", "-d", db.database],
                    os.path.join(snap_dir, dump_file), "pg_dump -Fc", recipients, age)
            finally:
                worker.join()
            timings["dump_and_checksums"] = round(time.monotonic() - t0, 3)
            if failure:
                raise BackupError(f"the per-table checksums failed: {failure[0]}")
            sess.query("COMMIT")
        plain_globals = _stream_to_file(db, ["pg_dumpall", "-U", db.user, "--globals-only"],
                                        os.path.join(snap_dir, globals_file), "pg_dumpall --globals-only",
                                        recipients, age)
        entries = None
        if not recipients:
            entries = db.list_dump(os.path.join(snap_dir, dump_file))
        files = {}
        for fname in (dump_file, globals_file):
            path = os.path.join(snap_dir, fname)
            files[fname] = {"size": os.path.getsize(path),
                            "sha256": snapshot.sha256_file(path) if recipients else None}
        if not recipients:  # the plain stream is the file: its hash was taken on the way
            files[dump_file]["sha256"] = plain_dump["sha256"]
            files[globals_file]["sha256"] = plain_globals["sha256"]
        timings["total"] = round(time.monotonic() - t0, 3)
        manifest = {
            "manifest_version": snapshot.MANIFEST_VERSION,
            "kind": KIND,
            "version": version,
            "created_at": snapshot.utc_iso(now),
            "database": db.database,
            "ledger_head": head,
            "collection_version": collection_version,
            "files": files,
            "size": sum(f["size"] for f in files.values()),
            "verified": {"pg_restore_list_entries": entries},
            "consistency": "pg_dump --snapshot of a REPEATABLE READ transaction that read the table checksums",
            "tables": sums,
            "checksum_method": CHECKSUM_METHOD,
            "encryption": {"tool": "age", "recipients": recipients} if recipients else None,
            "plaintext": {DUMP: plain_dump, GLOBALS: plain_globals} if recipients else None,
            "host": socket.gethostname(),
            "timings": timings,
        }
        snapshot.write_json_atomic(os.path.join(snap_dir, MANIFEST), manifest)
    except BaseException as exc:
        written = snapshot.bytes_in(snap_dir)
        shutil.rmtree(snap_dir, ignore_errors=True)
        if isinstance(exc, Exception) and snapshot.disk_full(exc):
            raise snapshot.disk_full_error(backup_dir, "the backup", written, exc, free_of, cls=BackupError) from exc
        raise
    finally:
        os.close(held)
    manifest["path"] = snap_dir
    manifest["name"] = name
    manifest["cleaned"] = cleaned
    return manifest


# --- listing, verifying, retention -------------------------------------------------------------

def list_backups(backup_dir: str) -> list[dict]:
    """Every complete backup (a manifest of kind ``backup``), oldest first."""
    return [m for m in snapshot.list_snapshots(backup_dir) if m.get("kind") == KIND]


def find_backup(backup_dir: str, name: str | None = None) -> dict:
    """The backup called ``name`` (directory name or path), or the newest. Raises naming what exists."""
    backups = list_backups(backup_dir)
    if name:
        base = os.path.basename(os.path.normpath(name))
        for b in backups:
            if b["name"] == base:
                return b
    elif backups:
        return backups[-1]
    have = ", ".join(b["name"] for b in backups[-5:]) or "none"
    wanted = f"a backup called {name}" if name else "a backup"
    raise BackupError(f"there is no complete {wanted} in {backup_dir} (the newest there: {have}). "
                      f"List them: ls -l {backup_dir}")


def verify(snap_dir: str) -> list[str]:
    """Every file of the manifest against its size and sha256; one problem per line, naming the file."""
    manifest = snapshot.read_manifest(snap_dir)
    if manifest is None:
        return [f"{snap_dir} has no readable {MANIFEST} (an interrupted or foreign backup)"]
    problems = []
    files = manifest.get("files") or {}
    if not files:
        problems.append(f"{os.path.join(snap_dir, MANIFEST)} lists no file")
    for fname, want in sorted(files.items()):
        problems += _check_file(os.path.join(snap_dir, fname), want or {})
    return problems


def _check_file(path: str, want: dict) -> list[str]:
    if not os.path.isfile(path):
        return [f"{path} is missing"]
    problems = []
    size = os.path.getsize(path)
    if want.get("size") is not None and size != want["size"]:
        problems.append(f"{path} is {size} bytes, the manifest says {want['size']} (truncated or replaced)")
    digest = snapshot.sha256_file(path)
    if digest != want.get("sha256"):
        problems.append(f"{path} has sha256 {digest[:16]}..., the manifest says {str(want.get('sha256'))[:16]}... "
                        "(the file changed after the backup was taken)")
    return problems


def _created(backup: dict) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(backup["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except (KeyError, TypeError, ValueError):
        return datetime.datetime.strptime(backup["name"][:16], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)


def expired(backups: list[dict], keep_count: int, keep_days: float,
            now: datetime.datetime | None = None) -> list[dict]:
    """The backups past BOTH limits: not among the newest ``keep_count`` and older than ``keep_days``."""
    if keep_count < 1:
        raise BackupError(f"the retention count must be at least 1 (got {keep_count}): "
                          "set paycraft_backup_keep_count to 1 or more")
    if keep_days < 0:
        raise BackupError(f"the retention age must be 0 days or more (got {keep_days})")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cutoff = now - datetime.timedelta(days=keep_days)
    ordered = sorted(backups, key=lambda b: b["name"])
    candidates = ordered[: max(0, len(ordered) - keep_count)]
    return [b for b in candidates if _created(b) < cutoff]


def prune(backup_dir: str, keep_count: int, keep_days: float, now: datetime.datetime | None = None,
          protect: tuple[str, ...] = (), dry_run: bool = False) -> list[dict]:
    """Remove the backups past both limits (never one in ``protect``). Returns ``{name, path, created_at}``."""
    protected = {os.path.basename(os.path.normpath(p)) for p in protect}
    removed = []
    for b in expired(list_backups(backup_dir), keep_count, keep_days, now):
        if b["name"] in protected:
            continue
        if not dry_run:
            shutil.rmtree(b["path"])
        removed.append({"name": b["name"], "path": b["path"], "created_at": b.get("created_at")})
    return removed


# --- age ----------------------------------------------------------------------------------------

def decrypt(snap_dir: str, identity: str, dest: str, age: str = "age") -> dict:
    """Decrypt an encrypted backup with the identity file into ``dest`` (0700, files 0600) beside a copy
    of its manifest; checks the ciphertext's sha256 first and the plaintext's after. Returns the manifest."""
    manifest = snapshot.read_manifest(snap_dir)
    if manifest is None:
        raise BackupError(f"{snap_dir} has no readable {MANIFEST}")
    if not manifest.get("encryption"):
        raise BackupError(f"{snap_dir} is not encrypted; nothing to decrypt")
    problems = verify(snap_dir)
    if problems:
        raise BackupError("the backup is damaged: " + "; ".join(problems))
    if not os.path.isfile(identity):
        raise BackupError(f"the age identity file {identity} does not exist on this machine (the controller): "
                          "pass the file that holds the private key of one of the recipients "
                          f"{', '.join(manifest['encryption'].get('recipients') or [])}")
    snapshot.ensure_private_dir(dest)
    for plain in (DUMP, GLOBALS):
        out = os.path.join(dest, plain)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            res = subprocess.run([age, "-d", "-i", identity, os.path.join(snap_dir, plain + AGE_SUFFIX)],
                                 stdout=fh, stderr=subprocess.PIPE)
        if res.returncode != 0:
            raise BackupError(f"age could not decrypt {os.path.join(snap_dir, plain + AGE_SUFFIX)} with {identity}: "
                              f"{res.stderr.decode(errors='replace').strip()[-300:]}")
        problems += _check_file(out, (manifest.get("plaintext") or {}).get(plain) or {})
    if problems:
        raise BackupError("the decrypted backup does not match its manifest: " + "; ".join(problems))
    plain_manifest = {k: v for k, v in manifest.items() if k not in ("path", "name")}
    plain_manifest["files"] = manifest["plaintext"]
    plain_manifest["decrypted_from"] = {"files": manifest["files"], "encryption": manifest["encryption"]}
    plain_manifest["encryption"] = None
    plain_manifest["plaintext"] = None
    snapshot.write_json_atomic(os.path.join(dest, MANIFEST), plain_manifest)
    return plain_manifest


# --- drill --------------------------------------------------------------------------------------

def compare_tables(expected: dict, restored: dict) -> list[dict]:
    """One row per table: rows and checksum expected and restored, and ``ok``."""
    out = []
    for name in sorted(set(expected) | set(restored)):
        e, r = expected.get(name), restored.get(name)
        row = {"table": name, "rows_expected": e["rows"] if e else None, "rows_restored": r["rows"] if r else None,
               "checksum_expected": e["checksum"] if e else None, "checksum_restored": r["checksum"] if r else None}
        if e is None:
            row["ok"], row["problem"] = False, "in the restored database only"
        elif r is None:
            row["ok"], row["problem"] = False, "missing from the restored database"
        elif e["rows"] != r["rows"]:
            row["ok"], row["problem"] = False, f"{r['rows']} rows restored, {e['rows']} dumped"
        elif e["checksum"] != r["checksum"]:
            row["ok"], row["problem"] = False, "same row count, different contents"
        else:
            row["ok"], row["problem"] = True, ""
        out.append(row)
    return out


def drill(db: Database, snap_dir: str, plain_dir: str | None = None, drill_db: str | None = None,
          now: datetime.datetime | None = None, jobs: int = 1) -> dict:
    """Restore the backup into a throw-away database of the same server, compare every table's rows and
    checksum with the manifest, drop the database. Nothing live is touched (no globals are applied).

    ``plain_dir``: the decrypted files of an encrypted backup (made by :func:`decrypt` on the controller).
    Raises :class:`BackupError` naming the file when a checksum does not match; returns the report
    (``passed``, ``tables``, ``restore_errors``) otherwise, a failed comparison included.
    """
    t0 = time.monotonic()
    manifest = snapshot.read_manifest(snap_dir)
    if manifest is None:
        raise BackupError(f"{snap_dir} has no readable {MANIFEST} (an interrupted or foreign backup)")
    problems = verify(snap_dir)
    source = snap_dir
    if manifest.get("encryption"):
        if not plain_dir:
            raise BackupError(f"{snap_dir} is encrypted with age: the drill needs the identity file on the "
                              "controller (-e paycraft_backup_drill_identity=/path/to/key.txt)")
        if not problems:
            for plain in (DUMP, GLOBALS):
                problems += _check_file(os.path.join(plain_dir, plain),
                                        (manifest.get("plaintext") or {}).get(plain) or {})
        source = plain_dir
    if problems:
        raise BackupError(f"backup {os.path.basename(snap_dir)} is damaged, nothing was restored: "
                          + "; ".join(problems))
    expected = manifest.get("tables")
    if expected is None:
        raise BackupError(f"{snap_dir} holds no per-table checksums (an upgrade snapshot, not a backup): "
                          "the drill compares them, so drill a backup taken by backup.yml")
    method = manifest.get("checksum_method")
    if method != CHECKSUM_METHOD:
        raise BackupError(f"{snap_dir} holds table checksums made as {method!r}; this collection compares "
                          f"{CHECKSUM_METHOD!r}. Drill it with the collection version that took it "
                          f"({manifest.get('collection_version') or 'unknown'}), or take a new backup")
    timings = {"verify": round(time.monotonic() - t0, 3)}
    now = now or datetime.datetime.now(datetime.timezone.utc)
    drill_db = drill_db or f"{DRILL_PREFIX}{snapshot.utc_stamp(now).lower()}"
    if not drill_db.startswith(DRILL_PREFIX):
        raise BackupError(f"the drill database must be named {DRILL_PREFIX}*: it is dropped afterwards")
    live = db.database
    if drill_db == live:
        raise BackupError("the drill database cannot be the live one")
    maint = "template1" if live == "postgres" else "postgres"
    db.psql(f"DROP DATABASE IF EXISTS {_ident(drill_db)}", database=maint)
    db.psql(f"CREATE DATABASE {_ident(drill_db)} TEMPLATE template0", database=maint)
    report = {"drill_database": drill_db, "backup": os.path.basename(snap_dir), "path": snap_dir,
              "created_at": manifest.get("created_at"), "version": manifest.get("version"),
              "encrypted": bool(manifest.get("encryption"))}
    try:
        # pre-data, then data, each table's checksum read as soon as pg_restore has moved on to the
        # next (LoadedTableChecksums); the rest are read while post-data (indexes, constraints,
        # triggers: no row changes) runs beside them, one autocommit query per table so pg_restore's
        # ALTER TABLE waits for one table's read at most
        dump = os.path.join(source, DUMP)
        restore = ["pg_restore", "-U", db.user, "-d", drill_db]
        t1 = time.monotonic()
        stderr, exits = [], []

        def restore_section(section: str) -> None:
            with open(dump, "rb") as fh:
                res = db.run([*restore, f"--section={section}"], stdin=fh, what=f"pg_restore --section={section}")
            stderr.append(res.stderr.decode(errors="replace"))
            exits.append(res.returncode)

        restore_section("pre-data")
        # the tables loaded so far are read while pg_restore loads the next ones
        watcher = LoadedTableChecksums(db, drill_db)
        watcher.start()
        try:
            restore_section("data")
        finally:
            early = watcher.finish()
        timings["restore_data"] = round(time.monotonic() - t1, 3)
        timings["tables_read_during_data"] = len(early)
        post_err = tempfile.TemporaryFile()
        with open(dump, "rb") as fh:
            try:
                post = subprocess.Popen(db._exec([*restore, "--section=post-data"], interactive=True), stdin=fh,
                                        stdout=subprocess.DEVNULL, stderr=post_err,
                                        env=dict(os.environ, **db.env) if db.env else None)
            except OSError as exc:
                post_err.close()
                raise BackupError(f"pg_restore --section=post-data could not be started: {exc}") from exc
            try:
                t2 = time.monotonic()
                with Session(db, database=drill_db) as sess:
                    tables = sess.query(TABLES_SQL)
                    restored = table_checksums(sess, [t for t in tables if t not in early])
                restored.update({t: early[t] for t in tables if t in early})
                timings["checksums"] = round(time.monotonic() - t2, 3)
            finally:
                try:
                    exits.append(post.wait(timeout=db.timeout))
                except subprocess.TimeoutExpired:
                    post.kill()
                    exits.append(post.wait())
        post_err.seek(0)
        stderr.append(post_err.read().decode(errors="replace"))
        post_err.close()
        timings["restore"] = round(time.monotonic() - t1, 3)
        report["restore_errors"] = [ln for ln in "\n".join(stderr).splitlines() if "error" in ln.lower()][:20]
        report["restore_exit"] = max(exits)
    finally:
        db.psql(f"DROP DATABASE IF EXISTS {_ident(drill_db)} WITH (FORCE)", database=maint)
        report["dropped"] = True
    rows = compare_tables(expected, restored)
    report["tables"] = rows
    report["tables_ok"] = sum(1 for r in rows if r["ok"])
    report["tables_failed"] = [r["table"] for r in rows if not r["ok"]]
    report["rows"] = sum(r["rows_restored"] or 0 for r in rows)
    report["passed"] = not report["tables_failed"] and report["restore_exit"] == 0
    timings["total"] = round(time.monotonic() - t0, 3)
    report["timings"] = timings
    return report


def drill_lines(report: dict) -> list[str]:
    """The drill's report as an operator reads it: one line per table, then the verdict."""
    lines = []
    for r in report["tables"]:
        state = "OK  " if r["ok"] else "FAIL"
        lines.append(f"{state} {r['table']}: {r['rows_restored']} rows restored, {r['rows_expected']} dumped"
                     + ("" if r["ok"] else f" - {r['problem']}"))
    for err in report.get("restore_errors") or []:
        lines.append(f"pg_restore: {err}")
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines.append(f"drill {verdict}: backup {report['backup']} ({report['created_at']}), {report['tables_ok']}/"
                 f"{len(report['tables'])} tables match, {report['rows']} rows, restored into "
                 f"{report['drill_database']} and dropped")
    return lines


# --- off-site copies ----------------------------------------------------------------------------

class Target:
    """Where the off-site copy goes: ``path`` (a mounted directory), ``rsync`` (``user@host:/dir`` over
    SSH) or ``restic`` (a repository; its password in a file)."""

    def __init__(self, kind: str, dest: str = "", ssh_key: str | None = None, ssh_port: int = 22,
                 ssh_options: list[str] | None = None, password_file: str | None = None,
                 env: dict | None = None, timeout: int = 3600, restic: str = "restic", rsync: str = "rsync",
                 ssh: str = "ssh"):
        if kind not in TARGET_KINDS:
            raise BackupError(f"unknown off-site target kind {kind!r}: use one of {', '.join(TARGET_KINDS)}")
        if kind != "none" and not dest:
            raise BackupError(f"the off-site target {kind} needs paycraft_backup_offsite_dest")
        if kind == "rsync" and ":" not in dest:
            raise BackupError(f"the rsync target {dest!r} is not of the form user@host:/path")
        if kind == "restic" and not password_file:
            raise BackupError("the restic target needs paycraft_backup_restic_password_file (the repository's "
                              "password, in a file on the host)")
        self.kind = kind
        self.dest = dest.rstrip("/") if kind in ("path", "rsync") else dest
        self.ssh_key = ssh_key
        self.ssh_port = int(ssh_port or 22)
        self.ssh_options = list(ssh_options or [])
        self.password_file = password_file
        self.env = dict(env or {})
        self.timeout = timeout
        self.restic_bin, self.rsync_bin, self.ssh_bin = restic, rsync, ssh

    @property
    def shown(self) -> str:
        """The destination as it may be printed: a password in a URL masked."""
        return redact.mask_url(self.dest)

    def describe(self) -> str:
        return {"none": "no off-site copy", "path": f"path {self.shown}", "rsync": f"rsync {self.shown}",
                "restic": f"restic {self.shown}"}[self.kind]

    # -- helpers
    def _run(self, argv: list[str], what: str, env: dict | None = None, stdout=None,
             input_: bytes | None = None) -> subprocess.CompletedProcess:
        try:
            res = subprocess.run(argv, stdout=stdout if stdout is not None else subprocess.PIPE,
                                 stderr=subprocess.PIPE, input=input_, timeout=self.timeout,
                                 env=dict(os.environ, **(env or {})))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackupError(redact.redact(f"{what} did not complete: {exc}", redact.url_passwords(self.dest))) \
                from exc
        if res.returncode != 0:
            raise BackupError(redact.redact(f"{what} failed (exit {res.returncode}): "
                                            f"{res.stderr.decode(errors='replace').strip()[-500:]}",
                                            redact.url_passwords(self.dest)))
        return res

    def _ssh_argv(self) -> list[str]:
        argv = [self.ssh_bin, "-o", "BatchMode=yes", "-p", str(self.ssh_port)]
        if self.ssh_key:
            argv += ["-i", self.ssh_key, "-o", "IdentitiesOnly=yes"]
        for opt in self.ssh_options:
            argv += ["-o", opt]
        return argv

    def _remote(self) -> tuple[str, str]:
        host, _, path = self.dest.rpartition(":")
        return host, path

    def _ssh(self, command: str, what: str) -> str:
        host, _ = self._remote()
        res = self._run([*self._ssh_argv(), host, command], what=f"{what} (ssh {host})")
        return res.stdout.decode(errors="replace")

    def _restic_env(self) -> dict:
        return dict(self.env, RESTIC_REPOSITORY=self.dest, RESTIC_PASSWORD_FILE=self.password_file or "")

    def _restic(self, args: list[str], what: str, stdout=None) -> subprocess.CompletedProcess:
        return self._run([self.restic_bin, *args], what=f"restic {what} ({self.shown})", env=self._restic_env(),
                         stdout=stdout)

    def _restic_snapshots(self, name: str) -> list[str]:
        res = self._restic(["snapshots", "--json", "--tag", f"paycraft-backup={name}"], "snapshots")
        return [snap["id"] for snap in json.loads(res.stdout.decode() or "[]") or []]

    def _restic_snapshot(self, name: str) -> str | None:
        ids = self._restic_snapshots(name)
        return ids[-1] if ids else None

    # -- copy, read back, remove
    def copy(self, snap_dir: str) -> dict:
        """Copy one backup directory; then read every file back at the far end and compare its sha256."""
        name = os.path.basename(os.path.normpath(snap_dir))
        manifest = snapshot.read_manifest(snap_dir)
        if manifest is None:
            raise BackupError(f"{snap_dir} has no manifest; it is not copied")
        want = {f: v["sha256"] for f, v in manifest["files"].items()}
        want[MANIFEST] = snapshot.sha256_file(os.path.join(snap_dir, MANIFEST))
        t0 = time.monotonic()
        if self.kind == "path":
            final = os.path.join(self.dest, name)
            if not os.path.isdir(self.dest):
                raise BackupError(f"the off-site path {self.dest} does not exist (is the disk mounted?)")
            if not os.path.isdir(final):
                part = os.path.join(self.dest, f".{name}.partial")
                shutil.rmtree(part, ignore_errors=True)
                os.mkdir(part, 0o700)
                for fname in want:
                    shutil.copyfile(os.path.join(snap_dir, fname), os.path.join(part, fname))
                    os.chmod(os.path.join(part, fname), 0o600)
                    with open(os.path.join(part, fname), "rb") as fh:
                        os.fsync(fh.fileno())
                os.replace(part, final)
        elif self.kind == "rsync":
            host, path = self._remote()
            part = f"{path}/.{name}.partial"
            self._ssh(f"mkdir -p {shlex.quote(path)} && chmod 700 {shlex.quote(path)}", "mkdir")
            self._run([self.rsync_bin, "-a", "--chmod=D700,F600", "-e", shlex.join(self._ssh_argv()),
                       snap_dir.rstrip("/") + "/", f"{host}:{part}/"], what=f"rsync to {host}")
            self._ssh(f"rm -rf {shlex.quote(path + '/' + name)} && mv {shlex.quote(part)} "
                      f"{shlex.quote(path + '/' + name)}", "rename")
        elif self.kind == "restic":
            self._ensure_restic_repo()
            if self._restic_snapshot(name) is None:
                self._restic(["backup", "--json", "--tag", "paycraft", "--tag", f"paycraft-backup={name}",
                              snap_dir], "backup")
        got = self.remote_checksums(name, snap_dir)
        bad = [f"{f}: sha256 {str(got.get(f))[:16]}... at the far end, {want[f][:16]}... here"
               for f in sorted(want) if got.get(f) != want[f]]
        if bad:
            raise BackupError(f"the copy of {name} at {self.describe()} does not match: " + "; ".join(bad))
        return {"name": name, "target": self.describe(), "verified": sorted(want),
                "seconds": round(time.monotonic() - t0, 3)}

    def _ensure_restic_repo(self) -> None:
        try:
            self._restic(["cat", "config"], "cat config", stdout=subprocess.DEVNULL)
        except BackupError:
            self._restic(["init"], "init")

    def remote_checksums(self, name: str, snap_dir: str | None = None) -> dict:
        """``{file: sha256}`` of the copy of ``name``, read at the far end."""
        if self.kind == "path":
            d = os.path.join(self.dest, name)
            return {f: snapshot.sha256_file(os.path.join(d, f)) for f in sorted(os.listdir(d))
                    if os.path.isfile(os.path.join(d, f))} if os.path.isdir(d) else {}
        if self.kind == "rsync":
            _, path = self._remote()
            out = self._ssh(f"cd {shlex.quote(path + '/' + name)} && sha256sum -- *", "sha256sum")
            sums = {}
            for line in out.splitlines():
                digest, _, fname = line.partition("  ")
                if fname:
                    sums[fname.lstrip("*")] = digest
            return sums
        if self.kind == "restic":
            snap_id = self._restic_snapshot(name)
            if snap_id is None:
                return {}
            res = self._restic(["ls", "--json", snap_id], "ls")
            sums = {}
            for line in res.stdout.decode().splitlines():
                try:
                    node = json.loads(line)
                except ValueError:
                    continue
                if node.get("type") == "file" and node.get("path", "").rstrip("/").rsplit("/", 2)[-2:-1] == [name]:
                    digest = hashlib.sha256()
                    proc = subprocess.Popen([self.restic_bin, "dump", snap_id, node["path"]], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=dict(os.environ, **self._restic_env()))
                    for chunk in iter(lambda p=proc: p.stdout.read(CHUNK), b""):
                        digest.update(chunk)
                    err = proc.stderr.read()
                    if proc.wait() != 0:
                        raise BackupError(redact.redact(f"restic dump {node['path']} failed: "
                                                        f"{err.decode(errors='replace')[-300:]}",
                                                        redact.url_passwords(self.dest)))
                    sums[node["name"]] = digest.hexdigest()
            return sums
        return {}

    def fetch(self, name: str, dest_parent: str) -> str:
        """Bring the copy of ``name`` back into ``dest_parent/name`` (0700, files 0600); returns the path."""
        snapshot.ensure_private_dir(dest_parent)
        out = os.path.join(dest_parent, name)
        shutil.rmtree(out, ignore_errors=True)
        if self.kind == "path":
            src = os.path.join(self.dest, name)
            if not os.path.isdir(src):
                raise BackupError(f"there is no copy of {name} in {self.dest}")
            shutil.copytree(src, out)
        elif self.kind == "rsync":
            host, path = self._remote()
            self._run([self.rsync_bin, "-a", "--chmod=D700,F600", "-e", shlex.join(self._ssh_argv()),
                       f"{host}:{path}/{name}/", out + "/"], what=f"rsync from {host}")
        elif self.kind == "restic":
            snap_id = self._restic_snapshot(name)
            if snap_id is None:
                raise BackupError(f"the restic repository {self.shown} holds no snapshot tagged paycraft-backup={name}")
            tmp = tempfile.mkdtemp(prefix=".restic-", dir=dest_parent)
            try:
                self._restic(["restore", snap_id, "--target", tmp], "restore")
                found = [root for root, _dirs, files in os.walk(tmp) if os.path.basename(root) == name
                         and MANIFEST in files]
                if not found:
                    raise BackupError(f"restic restored no {name}/{MANIFEST}")
                shutil.move(found[0], out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise BackupError("no off-site target is configured (paycraft_backup_offsite: none)")
        os.chmod(out, 0o700)
        for f in os.listdir(out):
            os.chmod(os.path.join(out, f), 0o600)
        return out

    def remove(self, names: list[str]) -> list[str]:
        """Remove the copies of ``names`` (backups retention removed here); returns what was removed."""
        removed = []
        for name in names:
            if self.kind == "path":
                d = os.path.join(self.dest, name)
                if os.path.isdir(d):
                    shutil.rmtree(d)
                    removed.append(name)
            elif self.kind == "rsync":
                _, path = self._remote()
                self._ssh(f"rm -rf {shlex.quote(path + '/' + name)}", "rm")
                removed.append(name)
            elif self.kind == "restic":
                ids = self._restic_snapshots(name)
                if ids:  # by id: restic forget with a tag and no keep policy removes nothing
                    self._restic(["forget", "--prune", *ids], "forget")
                    removed.append(name)
        return removed


# --- the off-site status record -----------------------------------------------------------------

def read_status(backup_dir: str) -> dict:
    try:
        with open(os.path.join(backup_dir, STATUS)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_status(backup_dir: str, status: dict) -> None:
    snapshot.write_json_atomic(os.path.join(backup_dir, STATUS), status)


def previous_failure_line(status: dict) -> str | None:
    """The sentence a run says about the last run's failed copy, or None."""
    failure = status.get("last_failure")
    if not failure or status.get("state") != "failed":
        return None
    return (f"the off-site copy failed at {failure.get('at')} ({failure.get('target')}): {failure.get('error')}; "
            f"not copied yet: {', '.join(status.get('pending') or []) or 'none'}")


def copy_offsite(backup_dir: str, target: Target, names: list[str]) -> dict:
    """Copy ``names`` plus every backup a failed run left uncopied; record the outcome in ``offsite.json``.

    Returns ``{copied, previous_failure}``; raises :class:`BackupError` (after recording it) on a failure.
    """
    status = read_status(backup_dir)
    previous = previous_failure_line(status)
    present = {b["name"] for b in list_backups(backup_dir)}
    todo = [n for n in (status.get("pending") or []) if n in present and n not in names] + list(names)
    copied = []
    for i, name in enumerate(todo):
        try:
            copied.append(target.copy(os.path.join(backup_dir, name)))
        except BackupError as exc:
            status.update(state="failed", pending=todo[i:], target=target.describe(),
                          last_failure={"at": snapshot.utc_iso(), "backup": name, "target": target.describe(),
                                        "error": str(exc)[:800]})
            write_status(backup_dir, status)
            raise
    status.update(state="ok", pending=[], target=target.describe(),
                  last_success={"at": snapshot.utc_iso(), "backups": [c["name"] for c in copied]})
    write_status(backup_dir, status)
    return {"copied": copied, "previous_failure": previous}


# --- one scheduled run ---------------------------------------------------------------------------

def run(backup_dir: str, db: Database, version: str, keep_count: int, keep_days: float,
        target: Target | None = None, recipients: list[str] | None = None, collection_version: str = "",
        age: str = "age", now: datetime.datetime | None = None, reserve: int | None = None,
        free_of=snapshot.free_bytes, protect: tuple[str, ...] = ()) -> dict:
    """A backup run: report a previous failed copy, take, prune (both limits), copy off-site.

    Returns ``{backup, removed, offsite, previous_failure}``; raises :class:`BackupError` with the backup
    kept when the off-site copy fails (the failure is recorded for the next run).
    """
    target = target or Target("none")
    status = read_status(backup_dir)
    previous = previous_failure_line(status)
    manifest = take(backup_dir, db, version, collection_version, recipients=recipients, age=age, now=now,
                    reserve=reserve, free_of=free_of)
    removed = prune(backup_dir, keep_count, keep_days, now=now, protect=(manifest["path"], *protect))
    result = {"backup": manifest, "removed": removed, "previous_failure": previous, "offsite": None,
              "offsite_removed": []}
    if target.kind != "none":
        try:
            result["offsite"] = copy_offsite(backup_dir, target, [manifest["name"]])
        except BackupError as exc:
            raise BackupError(f"backup {manifest['name']} was taken and is kept in {backup_dir}, but its off-site "
                              f"copy to {target.describe()} failed: {exc}. The next run reports this and copies it "
                              "again; fix the target, then run playbooks/backup.yml") from exc
        result["offsite_removed"] = target.remove([r["name"] for r in removed])
    return result


def run_lines(result: dict) -> list[str]:
    b = result["backup"]
    lines = []
    if result.get("previous_failure"):
        lines.append("WARNING: the previous run's " + result["previous_failure"])
    lines.append(f"backup {b['name']} taken: {b['size']} bytes, {len(b.get('tables') or {})} tables, "
                 f"{sum(t['rows'] for t in (b.get('tables') or {}).values())} rows"
                 + (", encrypted with age" if b.get("encryption") else "") + f" in {b['path']}")
    lines += [f"removed {c}, left without its manifest by a killed run" for c in b.get("cleaned") or []]
    if result["removed"]:
        lines += [f"retention removed {r['name']} (created {r['created_at']})" for r in result["removed"]]
    else:
        lines.append("retention removed nothing")
    off = result.get("offsite")
    if off:
        lines += [f"off-site copy of {c['name']} verified at {c['target']} (sha256 of {len(c['verified'])} files "
                  "read back)" for c in off["copied"]]
    return lines


# --- the command the timer runs on the host -----------------------------------------------------

def target_from_config(cfg: dict) -> Target:
    off = cfg.get("offsite") or {}
    return Target(off.get("kind") or "none", dest=off.get("dest") or "", ssh_key=off.get("ssh_key") or None,
                  ssh_port=off.get("ssh_port") or 22, ssh_options=off.get("ssh_options") or [],
                  password_file=off.get("password_file") or None, env=off.get("env") or {},
                  timeout=cfg.get("timeout") or 3600)


def installed_version(source_dest: str, default: str = "unknown") -> str:
    """The tag the checkout is at (as the release role reads it), else its short commit, else ``default``."""
    if not source_dest or not os.path.isdir(source_dest):
        return default
    for argv in (["git", "-C", source_dest, "describe", "--tags", "--exact-match", "HEAD"],
                 ["git", "-C", source_dest, "rev-parse", "--short", "HEAD"]):
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return default
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip()
    return default


def cli(argv: list[str] | None = None, clock=time.time, sleep=time.sleep) -> int:
    """``paycraft-backup [--config FILE]``: one backup run as the timer starts it.

    Exit 0 done; 1 failed; 75 (``lease.EXIT_LOCKED``) skipped: another operation (an upgrade, a
    rollback, a rotation, backup.yml) held the host lock for the whole ``lock_wait_seconds``.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="paycraft-backup", description=cli.__doc__)
    parser.add_argument("--config", default="/etc/paycraft/backup.json")
    parser.add_argument("--lock-wait", type=float, default=None,
                        help="seconds to wait for the host lock (default: lock_wait_seconds of the config)")
    args = parser.parse_args(argv)
    host = socket.gethostname()
    try:
        with open(args.config) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"paycraft-backup on {host} FAILED: {exc}", file=sys.stderr)
        return 1
    lock = cfg.get("lock_file") or ""
    # the run id of a playbook's run (controller:pid:start), so that a playbook on this same host sees
    # a live runner as alive and never breaks its lock
    run_id = f"{host}:{os.getpid()}:{lease.process_start(os.getpid())}"
    if lock:
        wait = float(cfg.get("lock_wait_seconds", 1800) if args.lock_wait is None else args.lock_wait)
        holder = {"run_id": run_id, "controller": host, "user": os.environ.get("USER") or "root", "pid": os.getpid(),
                  "playbook": "paycraft-backup (scheduled)"}
        try:
            # the holder renews the lease while this process lives; it is given back below, or by the
            # holder itself as soon as this process is gone
            lease.acquire(lock, holder, "scheduled backup", heartbeat=float(cfg.get("lock_heartbeat_seconds", 5)),
                          lease=float(cfg.get("lock_lease_seconds", 300)), watch_pid=os.getpid(), step="dump",
                          wait=wait, clock=clock, sleep=sleep)
        except lease.LockError as exc:
            print(f"paycraft-backup on {host} SKIPPED (exit {lease.EXIT_LOCKED}): waited {wait:.0f} s for the host "
                  f"lock, {exc}. No backup was taken this time; the next scheduled run tries again.", file=sys.stderr)
            return lease.EXIT_LOCKED
        except OSError as exc:
            print(f"paycraft-backup on {host} FAILED: the host lock {lock} cannot be taken: {exc}", file=sys.stderr)
            return 1
    try:
        version = installed_version(cfg.get("source_dest") or "", cfg.get("version") or "unknown")
        db = Database(cfg.get("container") or "paycraft_db", user=cfg.get("db_user") or "postgres",
                      database=cfg.get("db_name") or "postgres", docker=cfg.get("docker") or "docker",
                      timeout=cfg.get("timeout") or 3600)
        result = run(cfg["backup_dir"], db, version, int(cfg.get("keep_count", 7)), float(cfg.get("keep_days", 7)),
                     target=target_from_config(cfg), recipients=cfg.get("age_recipients") or [],
                     collection_version=cfg.get("collection_version") or "",
                     reserve=int(cfg.get("reserve_mb", 256)) * 1048576,
                     protect=tuple(filter(None, [snapshot.recorded_snapshot(
                         cfg.get("operation_file") or "/etc/paycraft/operation.json")])))
    except (OSError, ValueError, KeyError, SnapshotError) as exc:
        failure = redact.mask_url(f"paycraft-backup on {host} FAILED: {exc}")
        print(failure, file=sys.stderr)
        _record_result(cfg, False, failure)
        return 1
    finally:
        if lock:
            lease.release(lock, run_id)
    for line in run_lines(result):
        print(f"paycraft-backup on {host}: {line}")
    _record_result(cfg, True, (result.get("backup") or {}).get("name") or "")
    return 0


def _record_result(cfg: dict, ok: bool, detail: str) -> None:
    """The run's result in the results file the host's metrics read (``results_file`` of backup.json; issue #35).
    Never fails the run: a backup taken is not undone by a metrics file that cannot be written."""
    path = cfg.get("results_file")
    if not path:
        return
    import sys

    try:
        from ansible_collections.paycraft.selfhost.plugins.module_utils import metrics
    except ImportError as exc:
        print(f"paycraft-backup: the result was not recorded in {path}: {exc}", file=sys.stderr)
        return
    try:
        metrics.record_result(path, "backup", ok, snapshot.utc_iso(), detail)
    except (OSError, ValueError, metrics.MetricsError) as exc:
        print(f"paycraft-backup: the result was not recorded in {path}: {exc}", file=sys.stderr)
