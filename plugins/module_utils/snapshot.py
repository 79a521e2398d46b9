# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a PayCraft database, taken before an upgrade, restored by a rollback.

A snapshot is one directory under the backup directory (0700, outside the
Docker volume) named ``<UTC stamp>-<version>``::

    database.dump   pg_dump -Fc of the PayCraft database        (0600)
    globals.sql     pg_dumpall --globals-only (roles, passwords) (0600)
    manifest.json   version, UTC time, sizes, sha256 of both files, ledger head,
                    collection version, and whether pg_restore --list read the dump

The manifest is written last (atomically): a directory without one is an
interrupted snapshot and is never offered for a restore. The dumps are made
by the tools inside the database container (``docker exec``), so client and
server versions always match.

Pure Python; no Ansible import.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile

from ansible_collections.paycraft.selfhost.plugins.module_utils import preflight

MANIFEST = "manifest.json"
DUMP = "database.dump"
GLOBALS = "globals.sql"
MANIFEST_VERSION = 1
# What a snapshot was taken for; each kind keeps its own count. A manifest without ``kind`` was taken
# before kinds were recorded and counts as an upgrade snapshot. Backups (the backup role) are kind
# ``backup`` and are never pruned here.
KINDS = ("upgrade", "rotation")
DEFAULT_KIND = "upgrade"
_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)-([A-Za-z0-9][A-Za-z0-9._+-]*)$")


class SnapshotError(Exception):
    """Something an operator has to act on; the message says what and what next."""


def utc_stamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def utc_iso(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: str, bufsize: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(bufsize)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def safe_version(version: str) -> str:
    """The version as it may appear in a directory name (``/`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", version) or "unknown"


def ensure_private_dir(path: str) -> bool:
    """Create ``path`` (and parents) 0700; fix the mode of an existing one. True when changed."""
    changed = False
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        changed = True
    if os.stat(path).st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
        changed = True
    return changed


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, fsync, rename, fsync the
    directory: a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_json_atomic(path: str, data: dict, mode: int = 0o600) -> None:
    """Write JSON to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def read_manifest(snapshot_dir: str) -> dict | None:
    try:
        with open(os.path.join(snapshot_dir, MANIFEST)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data["path"] = snapshot_dir
    return data


def make_manifest(
    version: str,
    dump_path: str,
    globals_path: str,
    ledger_head: str | None,
    collection_version: str,
    database: str,
    listed_entries: int,
    now: datetime.datetime | None = None,
    kind: str = DEFAULT_KIND,
) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "version": version,
        "created_at": utc_iso(now),
        "database": database,
        "ledger_head": ledger_head,
        "collection_version": collection_version,
        "files": {
            DUMP: {"size": os.path.getsize(dump_path), "sha256": sha256_file(dump_path)},
            GLOBALS: {"size": os.path.getsize(globals_path), "sha256": sha256_file(globals_path)},
        },
        "size": os.path.getsize(dump_path) + os.path.getsize(globals_path),
        "verified": {"pg_restore_list_entries": listed_entries},
    }


def list_snapshots(backup_dir: str) -> list[dict]:
    """Every complete snapshot (with a readable manifest), oldest first."""
    try:
        names = sorted(os.listdir(backup_dir))
    except OSError:
        return []
    out = []
    for name in names:
        if not _NAME_RE.match(name):
            continue
        manifest = read_manifest(os.path.join(backup_dir, name))
        if manifest is not None:
            manifest["name"] = name
            out.append(manifest)
    return out


def incomplete_snapshots(backup_dir: str) -> list[str]:
    """Snapshot directories without a manifest (an interrupted snapshot)."""
    try:
        names = sorted(os.listdir(backup_dir))
    except OSError:
        return []
    return [
        os.path.join(backup_dir, n)
        for n in names
        if _NAME_RE.match(n) and not os.path.exists(os.path.join(backup_dir, n, MANIFEST))
    ]


def find_snapshot(backup_dir: str, version: str | None = None, name: str | None = None) -> dict | None:
    """The newest snapshot of ``version``, or the one called ``name``: a directory name in ``backup_dir``,
    or an absolute path (a scheduled backup of the backup role, in a directory of its own)."""
    if name:
        path = os.path.normpath(name)
        directory = os.path.dirname(path) if os.path.isabs(path) else backup_dir
        for snap in list_snapshots(directory):
            if snap["name"] == os.path.basename(path):
                return snap
        return None
    snaps = list_snapshots(backup_dir)
    matching = [s for s in snaps if version is None or s.get("version") == version]
    return matching[-1] if matching else None


def verify_checksums(snapshot_dir: str) -> list[str]:
    """Problems found comparing the files with the manifest (empty: intact)."""
    manifest = read_manifest(snapshot_dir)
    if manifest is None:
        return [f"{snapshot_dir} has no readable {MANIFEST} (an interrupted or foreign snapshot)"]
    problems = []
    for fname in (DUMP, GLOBALS):
        want = (manifest.get("files") or {}).get(fname) or {}
        path = os.path.join(snapshot_dir, fname)
        if not os.path.isfile(path):
            problems.append(f"{path} is missing")
            continue
        size = os.path.getsize(path)
        if want.get("size") is not None and size != want["size"]:
            problems.append(f"{path} is {size} bytes, the manifest says {want['size']} (truncated or replaced)")
        digest = sha256_file(path)
        if digest != want.get("sha256"):
            problems.append(f"{path} has sha256 {digest[:16]}..., the manifest says {str(want.get('sha256'))[:16]}...")
    return problems


def kind_of(manifest: dict) -> str:
    """The kind of a snapshot: ``upgrade``, ``rotation`` or ``backup`` (no ``kind`` recorded: ``upgrade``)."""
    return manifest.get("kind") or DEFAULT_KIND


def recorded_snapshot(state_path: str | None) -> str | None:
    """The snapshot the operation record (``/etc/paycraft/operation.json``) names: the one the last
    upgrade would roll back to. None when there is no record or it names none."""
    if not state_path:
        return None
    try:
        with open(state_path) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return None
    snap = state.get("snapshot") if isinstance(state, dict) else None
    return os.path.normpath(snap) if isinstance(snap, str) and snap else None


def prune(backup_dir: str, keep: int, protect: tuple[str, ...] = (), kind: str = DEFAULT_KIND) -> list[str]:
    """Remove complete snapshots of ``kind`` beyond the newest ``keep`` of that kind (never one in
    ``protect``, never one of another kind). Returns removed paths."""
    if keep < 1:
        raise SnapshotError(f"keep must be at least 1 (got {keep}): a rollback needs a snapshot")
    snaps = [snap for snap in list_snapshots(backup_dir) if kind_of(snap) == kind]
    protected = {os.path.normpath(p) for p in protect if p}
    removed = []
    for snap in snaps[: max(0, len(snaps) - keep)]:
        if os.path.normpath(snap["path"]) in protected:
            continue
        shutil.rmtree(snap["path"])
        removed.append(snap["path"])
    return removed


def needed_bytes(db_size: int, factor: float = 1.0, reserve: int = 0) -> int:
    """Bytes to keep free for a snapshot of a database of ``db_size`` bytes.

    pg_dump -Fc compresses, so the database size is an upper bound of the dump;
    ``factor`` scales it and ``reserve`` is left free on top (logs, the OS).
    """
    return int(db_size * factor) + int(reserve)


def free_bytes(path: str) -> int:
    """Free bytes for an unprivileged writer on the file system of ``path`` (or its nearest existing parent)."""
    return preflight.free_bytes(preflight.nearest_existing(path))


def require_space(path: str, db_size: int, factor: float = 1.0, reserve: int = 0, what: str = "the snapshot",
                  free_of=free_bytes, host: str | None = None) -> dict:
    """Refuse (before anything is written) when ``path``'s file system would not hold a dump of a database
    of ``db_size`` bytes. Returns ``{db_size, needed, free}``."""
    needed = needed_bytes(db_size, factor, reserve)
    free = free_of(path)
    if free < needed:
        host = host or socket.gethostname()
        raise SnapshotError(
            f"{host}: not enough disk for {what} in {path}: {free} bytes are free there and {needed} bytes are "
            f"needed (the database is {db_size} bytes by pg_database_size, plus {int(reserve)} bytes kept free). "
            f"Nothing was written. Free space there (df -B1 {path}; ls -l {path}) or point the directory at a "
            "larger disk, then re-run."
        )
    return {"db_size": db_size, "needed": needed, "free": free}


def disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is a write that met a full disk: ENOSPC or EDQUOT raised here, or reported by a
    command that wrote the file (``docker exec`` says ``write /dev/stdout: no space left on device``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc).lower()
        if "no space left on device" in text or "disk quota exceeded" in text:
            return True
        exc = exc.__cause__
    return False


def bytes_in(path: str) -> int:
    """Bytes of the files under ``path`` (0 when it is gone)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def disk_full_error(path: str, what: str, written: int, exc: BaseException, free_of=free_bytes,
                    cls=SnapshotError) -> SnapshotError:
    """The error for a dump that met a full disk in ``path`` after ``written`` bytes (its files are already
    removed): what happened, the free space now, what to do next."""
    try:
        free = f"{free_of(path)} bytes are free there now"
    except OSError as err:
        free = f"the free space there cannot be read ({err})"
    return cls(
        f"{what} did not fit in {path}: the disk filled after {written} bytes of it were written "
        f"({str(exc).strip()[-300:]}). Its partial files were removed; {free}, less than it needs. The free-space "
        f"check before it expected it to fit (pg_database_size x size factor + reserve): raise the reserve if "
        f"something else fills this disk. Free space there (df -B1 {path}; ls -l {path}) or point the directory at "
        "a larger disk, then run the same command again."
    )


def lock_dir(path: str) -> int:
    """Hold an exclusive flock on the directory ``path`` while it is written; returns the fd to close.
    The kernel drops it when the writer dies, so a partial directory with no holder is a dead one."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def clean_partial(backup_dir: str) -> list[str]:
    """Remove snapshot directories left without their manifest by a killed run (no live writer holds
    them). A complete one (with its manifest) is never touched. Returns the removed paths."""
    removed = []
    for path in incomplete_snapshots(backup_dir):
        try:
            fd = lock_dir(path)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue  # a run still writes it
            if exc.errno == errno.ENOENT:
                continue
            raise
        try:
            if os.path.exists(os.path.join(path, MANIFEST)):  # completed meanwhile
                continue
            shutil.rmtree(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class Database:
    """The PayCraft database as its container's own tools see it (docker exec)."""

    def __init__(self, container: str | None, user: str = "postgres", database: str = "postgres",
                 docker: str = "docker", timeout: int = 3600, env: dict | None = None):
        # container None: the PostgreSQL client tools of this machine, with ``env`` (PGHOST, PGPORT...)
        self.container = container
        self.env = env
        self.user = user
        self.database = database
        self.docker = docker
        self.timeout = timeout

    def _exec(self, argv: list[str], interactive: bool = False) -> list[str]:
        if not self.container:
            return argv
        return [self.docker, "exec"] + (["-i"] if interactive else []) + [self.container] + argv

    def run(self, argv: list[str], stdin=None, stdout=None, what: str = "") -> subprocess.CompletedProcess:
        try:
            res = subprocess.run(
                self._exec(argv, interactive=stdin is not None),
                stdin=stdin,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=self.timeout,
                env=dict(os.environ, **self.env) if self.env else None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SnapshotError(f"{what or argv[0]} in container {self.container} did not complete: {exc}") from exc
        return res

    def psql(self, sql: str, database: str | None = None) -> str:
        res = self.run(["psql", "-U", self.user, "-d", database or self.database, "-v", "ON_ERROR_STOP=1",
                        "-tAX", "-c", sql], what="psql")
        if res.returncode != 0:
            raise SnapshotError(
                f"psql in {self.container} failed: {res.stderr.decode(errors='replace').strip()[:400]}"
            )
        return res.stdout.decode(errors="replace").strip()

    def size(self) -> int:
        return int(self.psql(f"SELECT pg_database_size({_literal(self.database)})") or 0)

    def ledger_head(self, ledger: str = "public._paycraft_migrations") -> str | None:
        exists = self.psql(f"SELECT to_regclass({_literal(ledger)}) IS NOT NULL")
        if exists != "t":
            return None
        return self.psql(f"SELECT max(version) FROM {ledger}") or None

    def dump(self, dump_path: str, globals_path: str) -> None:
        for path, argv, what in (
            (dump_path, ["pg_dump", "-U", self.user, "-Fc", "-d", self.database], "pg_dump -Fc"),
            (globals_path, ["pg_dumpall", "-U", self.user, "--globals-only"], "pg_dumpall --globals-only"),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                res = self.run(argv, stdout=fh, what=what)
                fh.flush()
                os.fsync(fh.fileno())
            if res.returncode != 0:
                raise SnapshotError(
                    f"{what} in container {self.container} failed (exit {res.returncode}): "
                    f"{res.stderr.decode(errors='replace').strip()[:400]}"
                )

    def _listing(self, dump_path: str) -> str:
        """What pg_restore --list reads from the dump (fails on an unreadable one)."""
        with open(dump_path, "rb") as fh:
            res = self.run(["pg_restore", "--list"], stdin=fh, what="pg_restore --list")
        if res.returncode != 0:
            raise SnapshotError(
                f"pg_restore --list cannot read {dump_path}: {res.stderr.decode(errors='replace').strip()[:400]}"
            )
        return res.stdout.decode(errors="replace")

    def list_dump(self, dump_path: str) -> int:
        """Entries pg_restore --list reads from the dump (fails on an unreadable one)."""
        lines = [ln for ln in self._listing(dump_path).splitlines() if ln and not ln.startswith(";")]
        if not lines:
            raise SnapshotError(f"pg_restore --list found no entry in {dump_path}")
        return len(lines)

    def tables_of(self, dump_path: str) -> list[str]:
        """``schema.table`` of every table the dump creates (its TABLE entries)."""
        return table_entries(self._listing(dump_path))

    def tables(self) -> list[str]:
        """``schema.table`` of every table (plain or partitioned) in the database."""
        out = self.psql("SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') ORDER BY 1")
        return [line for line in out.splitlines() if line]

    def missing_tables(self, dump_path: str) -> list[str]:
        """The tables of the dump that the database lacks (a restore that did not finish)."""
        have = set(self.tables())
        return [t for t in self.tables_of(dump_path) if t not in have]

    def restore(self, dump_path: str, globals_path: str, jobs: int = 1, container_dump: str | None = None) -> dict:
        """Replace the database with the dump: globals first, then
        ``pg_restore --clean --if-exists --create`` from the maintenance database
        (the database is dropped and made again, so nothing written after the
        snapshot survives). The caller stops every other client first.
        ``container_dump``: the dump's path as the container sees it (a mount): pg_restore reads the file
        itself, which ``jobs`` > 1 (``pg_restore -j``) needs; else the dump is streamed on stdin."""
        if jobs > 1 and not container_dump:
            raise SnapshotError("pg_restore -j reads the dump from a file: give the dump's path in the container")
        with open(globals_path, "rb") as fh:
            # CREATE ROLE of roles the image already made fails harmlessly; ALTER ROLE sets the passwords.
            g = self.run(["psql", "-U", self.user, "-d", "postgres", "-q", "-X"], stdin=fh, what="psql (globals)")
        self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = {_literal(self.database)} AND pid <> pg_backend_pid()",
            database="template1",
        )
        argv = ["pg_restore", "-U", self.user, "--clean", "--if-exists", "--create", "-d", "template1"]
        if container_dump:
            res = self.run(argv + (["-j", str(jobs)] if jobs > 1 else []) + [container_dump],
                           what=f"pg_restore -j {jobs}")
        else:
            with open(dump_path, "rb") as fh:
                res = self.run(argv, stdin=fh, what="pg_restore")
        errors = res.stderr.decode(errors="replace").strip()
        if res.returncode != 0:
            raise SnapshotError(f"pg_restore into {self.database} failed (exit {res.returncode}): {errors[-800:]}")
        return {"globals_warnings": g.stderr.decode(errors="replace").count("ERROR:"), "restore_stderr": errors[-800:]}


def table_entries(listing: str) -> list[str]:
    """``schema.table`` of the TABLE entries of a ``pg_restore --list`` listing
    (``215; 1259 16390 TABLE public tenants postgres``)."""
    tables = []
    for line in listing.splitlines():
        if not line or line.startswith(";") or ";" not in line:
            continue
        parts = line.split(";", 1)[1].split()
        if len(parts) >= 5 and parts[2] == "TABLE" and parts[3] != "DATA":
            tables.append(f"{parts[3]}.{parts[4]}")
    return tables


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def take(backup_dir: str, db: Database, version: str, collection_version: str, keep: int,
         now: datetime.datetime | None = None, kind: str = DEFAULT_KIND, protect: tuple[str, ...] = (),
         reserve: int | None = None, factor: float = 1.0, free_of=free_bytes) -> dict:
    """Clean partial directories, check the free space (when ``reserve`` is given), dump, verify, write the
    manifest, prune the snapshots of ``kind`` (never ``protect``). Returns the manifest (with ``path``,
    ``removed`` and ``cleaned``)."""
    if kind not in KINDS:
        raise SnapshotError(f"unknown snapshot kind {kind!r}: use one of {', '.join(KINDS)}")
    ensure_private_dir(backup_dir)
    cleaned = clean_partial(backup_dir)
    if reserve is not None:
        require_space(backup_dir, db.size(), factor, reserve, what=f"the {kind} snapshot", free_of=free_of)
    name = f"{utc_stamp(now)}-{safe_version(version)}"
    snap_dir = os.path.join(backup_dir, name)
    if os.path.exists(snap_dir):
        raise SnapshotError(f"{snap_dir} already exists; wait a second and re-run")
    what = f"the {kind} snapshot"
    try:
        os.mkdir(snap_dir, 0o700)
    except OSError as exc:
        if disk_full(exc):
            raise disk_full_error(backup_dir, what, 0, exc, free_of) from exc
        raise
    held = lock_dir(snap_dir)
    try:
        dump_path = os.path.join(snap_dir, DUMP)
        globals_path = os.path.join(snap_dir, GLOBALS)
        head = db.ledger_head()
        db.dump(dump_path, globals_path)
        entries = db.list_dump(dump_path)
        manifest = make_manifest(version, dump_path, globals_path, head, collection_version,
                                 db.database, entries, now, kind=kind)
        write_json_atomic(os.path.join(snap_dir, MANIFEST), manifest)
    except BaseException as exc:
        written = bytes_in(snap_dir)
        shutil.rmtree(snap_dir, ignore_errors=True)
        if isinstance(exc, Exception) and disk_full(exc):
            raise disk_full_error(backup_dir, what, written, exc, free_of) from exc
        raise
    finally:
        os.close(held)
    manifest["path"] = snap_dir
    manifest["name"] = name
    manifest["cleaned"] = cleaned
    manifest["removed"] = prune(backup_dir, keep, protect=(snap_dir, *protect), kind=kind)
    return manifest
