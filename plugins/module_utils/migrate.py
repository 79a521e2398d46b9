# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration engine behind ``paycraft.selfhost.paycraft_migrate``.

Runbook section 4 (``migrations-bootstrap.sh``), done right:

* the same ledger ``_paycraft_migrations(version TEXT PRIMARY KEY, applied_at ...)``,
  extended in place with nullable columns (``checksum``, ``execution_ms``,
  ``applied_by``), so a database bootstrapped by the bash script is adopted
  and the bash script keeps working on a ledger written here;
* each migration and its ledger row commit in ONE transaction;
* a file wrapped in its own ``BEGIN;`` ... ``COMMIT;`` is unwrapped and runs
  inside the engine's transaction; any other top-level transaction control is
  refused unless the file opts out with ``-- paycraft:no-transaction`` on its
  first line (then its statements run one by one in autocommit mode and the
  ledger row is written only after the last one succeeded);
* a sha256 checksum per file; an applied file that changed is refused;
* a session advisory lock so concurrent runs serialise;
* errors name the file, the line within the file, SQLSTATE and message.

Pure Python + psycopg2; no Ansible import (unit-testable on its own).
"""

from __future__ import annotations

import bisect
import getpass
import hashlib
import os
import re
import socket
import time
from dataclasses import dataclass, field

from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres

NO_TRANSACTION_MARKER = "-- paycraft:no-transaction"
APPLICATION_NAME = "paycraft_migrate"
DEFAULT_LEDGER = "_paycraft_migrations"
# "Started" marks of files that opted out of the transaction: <ledger>_started(version, started_at, checksum,
# started_by). A row is written (committed) before the file's first statement and removed in the transaction
# that writes its ledger row, so a row without a ledger row is a file that died half-way. A separate table
# keeps the ledger's shape: the runbook's bash applier reads every ledger row as "applied".
STARTED_SUFFIX = "_started"
OUT_OF_ORDER_POLICIES = ("fail", "warn", "apply")

# Columns added in place to the runbook's ledger (all nullable: the bash
# script's "INSERT INTO _paycraft_migrations(version) VALUES (...)" still works).
LEDGER_EXTRA_COLUMNS = (
    ("checksum", "TEXT"),
    ("execution_ms", "INTEGER"),
    ("applied_by", "TEXT"),
)

# Run after every file: the session state a file leaves behind (settings, role, temporary tables,
# prepared plans) is dropped; the session advisory lock is not (DISCARD ALL would release it).
SESSION_RESET = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; DISCARD PLANS; DISCARD SEQUENCES"

CONNECT_HINT = (
    "The database is not accepting connections yet (runbook 7: the bootstrap ran before Postgres "
    "finished its first-boot initdb). Wait 30 seconds and retry; if it persists run "
    "'docker exec paycraft_db pg_isready -U postgres' (expect \"accepting connections\") and "
    "'docker logs paycraft_db --tail 50'."
)


class MigrateError(Exception):
    """A failure an operator must act on; ``result`` holds what was done before it."""

    def __init__(self, message: str, result: MigrationResult | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.result = result
        self.details = details or {}


# --------------------------------------------------------------------------- SQL scanner


@dataclass
class Statement:
    start: int  # offset of the first significant character
    end: int  # offset just past the terminating ';' (or end of text)
    text: str
    meta: bool = False  # a psql backslash meta-command (\i, \set, ...)

    def keywords(self, n: int = 3) -> list[str]:
        """The first ``n`` bare words of the statement, upper-cased (comments skipped)."""
        words: list[str] = []
        for tok in _significant_words(self.text):
            words.append(tok.upper())
            if len(words) >= n:
                break
        return words


_IDENT_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_WS = " \t\n\r\f\v"


def _skip_block_comment(sql: str, i: int) -> int:
    """``sql[i:i+2] == '/*'``; return the offset after the matching (nested) ``*/``."""
    depth, n = 0, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """``sql[i] == quote``; return the offset after the closing quote (doubled quotes escape)."""
    n = len(sql)
    i += 1
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _tokens(sql: str):
    """Yield ``(kind, start, end)`` for the significant tokens of ``sql``.

    kinds: ``word`` (bare identifier/keyword), ``string``, ``qident``, ``dollar``,
    ``(``, ``)``, ``;``, ``meta`` (a psql backslash command up to end of line), ``other``.
    Comments and whitespace are skipped. Understands ``'...'`` with doubled quotes,
    ``E'...'`` with backslash escapes, ``"..."`` identifiers, ``$$``/``$tag$`` bodies,
    ``--`` and nested ``/* */`` comments.
    """
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in _WS:
            i += 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c == "'":
            j = _skip_quoted(sql, i, "'", backslash=False)
            yield "string", i, j
            i = j
        elif c == '"':
            j = _skip_quoted(sql, i, '"', backslash=False)
            yield "qident", i, j
            i = j
        elif c == "$":
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                tag = m.group(0)
                j = sql.find(tag, m.end())
                j = n if j < 0 else j + len(tag)
                yield "dollar", i, j
                i = j
            else:  # $1 positional parameter or stray '$'
                j = i + 1
                while j < n and sql[j].isdigit():
                    j += 1
                yield "other", i, j
                i = j
        elif c in "();":
            yield c, i, i + 1
            i += 1
        elif c == "\\":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield "meta", i, j
            i = j
        elif _IDENT_START.match(c):
            j = _IDENT_CHAR.match(sql, i + 1).end()
            word = sql[i:j]
            if j < n and sql[j] == "'" and word in ("E", "e"):
                k = _skip_quoted(sql, j, "'", backslash=True)
                yield "string", i, k
                i = k
            elif j < n and sql[j] == "'" and word.upper() in ("B", "X", "N"):
                k = _skip_quoted(sql, j, "'", backslash=False)
                yield "string", i, k
                i = k
            elif j + 1 < n and sql[j] == "&" and sql[j + 1] in "'\"" and word in ("U", "u"):
                k = _skip_quoted(sql, j + 1, sql[j + 1], backslash=False)
                yield ("string" if sql[j + 1] == "'" else "qident"), i, k
                i = k
            else:
                yield "word", i, j
                i = j
        else:
            yield "other", i, i + 1
            i += 1


def _significant_words(text: str):
    for kind, s, e in _tokens(text):
        if kind != "word":
            return
        yield text[s:e]


def _all_words(text: str):
    """Every bare word of ``text`` (strings, quoted identifiers, bodies and comments skipped)."""
    for kind, s, e in _tokens(text):
        if kind == "word":
            yield text[s:e].upper()


# Statements PostgreSQL refuses inside a transaction block (SQLSTATE 25001), by their first words.
def _needs_autocommit(stmt: Statement) -> str | None:
    """The command's name when ``stmt`` cannot run inside a transaction block, else None."""
    kw = stmt.keywords(5)
    if kw[:3] == ["CREATE", "INDEX", "CONCURRENTLY"] or kw[:4] == ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"]:
        return "CREATE INDEX CONCURRENTLY"
    if kw[:3] == ["DROP", "INDEX", "CONCURRENTLY"]:
        return "DROP INDEX CONCURRENTLY"
    if kw[:1] == ["REINDEX"] and "CONCURRENTLY" in kw:
        return "REINDEX CONCURRENTLY"
    if kw[:1] == ["VACUUM"]:
        return "VACUUM"
    if kw[:2] in (["CREATE", "DATABASE"], ["DROP", "DATABASE"], ["CREATE", "TABLESPACE"], ["DROP", "TABLESPACE"]):
        return " ".join(kw[:2])
    if kw[:2] == ["ALTER", "SYSTEM"]:
        return "ALTER SYSTEM"
    return None


def split_statements(sql: str) -> list[Statement]:
    """Split ``sql`` into top-level statements the way psql does.

    Semicolons inside strings, identifiers, dollar-quoted bodies, comments and
    parentheses do not split; nor do those inside a ``CREATE [OR REPLACE]
    FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END`` body (psql's own heuristic).
    """
    stmts: list[Statement] = []
    start = None
    paren = 0
    begin_depth = 0
    head: list[str] = []  # first words of the current statement, lower-cased
    for kind, s, e in _tokens(sql):
        if kind == "meta" and start is None:
            stmts.append(Statement(s, e, sql[s:e], meta=True))
            continue
        if start is None:
            start = s
            paren = begin_depth = 0
            head = []
        if kind == "(":
            paren += 1
        elif kind == ")":
            paren = max(0, paren - 1)
        elif kind == "word":
            w = sql[s:e].lower()
            if len(head) < 4:
                head.append(w)
            is_routine = head[:1] == ["create"] and (
                head[1:2] in (["function"], ["procedure"])
                or (head[1:3] == ["or", "replace"] and head[3:4] in (["function"], ["procedure"]))
            )
            if is_routine and paren == 0:
                if w == "begin":
                    begin_depth += 1
                elif w == "case" and begin_depth >= 1:
                    begin_depth += 1
                elif w == "end" and begin_depth > 0:
                    begin_depth -= 1
        elif kind == ";" and paren == 0 and begin_depth == 0:
            stmts.append(Statement(start, e, sql[start:e]))
            start = None
    if start is not None:
        stmts.append(Statement(start, len(sql), sql[start:].rstrip()))
    return stmts


class LineMap:
    """Offsets (0-based, characters) to 1-based line numbers."""

    def __init__(self, text: str):
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, max(0, offset))


def _tx_kind(stmt: Statement) -> str | None:
    """'begin', 'commit', 'rollback' or 'other' for top-level transaction control; None otherwise."""
    kw = stmt.keywords(3)
    if not kw:
        return None
    first = kw[0]
    if first == "BEGIN" or (first == "START" and kw[1:2] == ["TRANSACTION"]):
        return "begin"
    if first in ("COMMIT", "END"):
        return "other" if kw[1:2] == ["PREPARED"] else "commit"
    if first in ("ROLLBACK", "ABORT"):
        if kw[1:2] == ["TO"] or kw[1:3] == ["WORK", "TO"] or kw[1:3] == ["TRANSACTION", "TO"]:
            return None  # ROLLBACK TO SAVEPOINT is fine inside a transaction
        return "other" if kw[1:2] == ["PREPARED"] else "rollback"
    if first == "PREPARE" and kw[1:2] == ["TRANSACTION"]:
        return "other"
    return None


def _begin_modes(stmt: Statement) -> str:
    """Transaction modes of ``BEGIN [WORK|TRANSACTION] modes`` / ``START TRANSACTION modes`` ('' if none)."""
    text = stmt.text.rstrip().rstrip(";")
    m = re.match(r"\s*(?:BEGIN(?:\s+(?:WORK|TRANSACTION))?|START\s+TRANSACTION)\b(.*)\Z", text, re.I | re.S)
    return m.group(1).strip() if m else ""


# --------------------------------------------------------------------------- migrations on disk


@dataclass
class Migration:
    version: str
    path: str
    checksum: str
    sql: str
    no_transaction: bool

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)


@dataclass
class Plan:
    """How one migration file is executed."""

    sql: str  # text to execute (same length/lines as the file: unwrapped BEGIN/COMMIT are blanked)
    set_transaction: str = ""  # modes of an unwrapped BEGIN, applied with SET TRANSACTION
    statements: list[Statement] = field(default_factory=list)
    wrapped: bool = False


def describe_path(path: str) -> str:
    """A human description of what ``path`` is, for error messages."""
    if os.path.islink(path):
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        where = f"'{path}' is a symlink to '{target}'"
        if target != resolved:
            where += f" (resolves to '{resolved}')"
        return where
    return f"'{path}'"


def migration_file_names(names) -> list[str]:
    """The migration files among directory entries ``names``, in the order they apply.

    ``*.sql`` files, hidden ones (``.x.sql``, editor and sync leftovers) excluded, sorted by their
    bytes. The one definition of "the release's migrations": the engine applies these, and
    ``paycraft_converged`` compares these with the ledger.
    """
    return sorted(
        (n for n in names if n.endswith(".sql") and not n.startswith(".")),
        key=lambda n: n.encode("utf-8", "surrogateescape"),
    )


def migration_version(name: str) -> str:
    """The ledger version of a migration file name (the name without ``.sql``)."""
    return name[: -len(".sql")]


def load_migrations(migrations_dir: str) -> list[Migration]:
    """Every ``*.sql`` file of ``migrations_dir`` in lexical (byte) order, with its checksum.

    A missing, dangling or empty directory is an error, never "0 applied".
    """
    if not os.path.exists(migrations_dir):
        if os.path.islink(migrations_dir):
            raise MigrateError(
                f"migrations directory {describe_path(migrations_dir)}, which does not exist (a dangling "
                "symlink: this release does not ship its migrations). Point migrations_dir at the real "
                "directory or fix the checkout; refusing to report '0 applied'."
            )
        raise MigrateError(f"migrations directory '{migrations_dir}' does not exist; refusing to report '0 applied'.")
    if not os.path.isdir(migrations_dir):
        raise MigrateError(f"migrations directory {describe_path(migrations_dir)} is not a directory.")
    names = migration_file_names(os.listdir(migrations_dir))
    if not names:
        raise MigrateError(
            f"migrations directory {describe_path(migrations_dir)} contains no *.sql files; "
            "refusing to report '0 applied'. Is the checkout complete?"
        )
    out = []
    for name in names:
        path = os.path.join(migrations_dir, name)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise MigrateError(f"cannot read migration {describe_path(path)}: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrateError(f"migration '{path}' is not valid UTF-8 (byte {exc.start}).") from exc
        if text.startswith("\ufeff"):
            text = text[1:]
        first = text.split("\n", 1)[0].strip()
        out.append(
            Migration(
                version=migration_version(name),
                path=path,
                checksum=hashlib.sha256(raw).hexdigest(),
                sql=text,
                no_transaction=first.lower() == NO_TRANSACTION_MARKER,
            )
        )
    return out


def plan_migration(mig: Migration) -> Plan:
    """Decide how to run ``mig``; refuse transaction control the engine cannot honour."""
    stmts = split_statements(mig.sql)
    lines = LineMap(mig.sql)
    for st in stmts:
        if st.meta:
            raise MigrateError(
                f"{mig.filename} line {lines.line(st.start)}: psql meta-command '{st.text.strip()[:40]}' is not "
                "SQL; paycraft_migrate runs plain SQL only. Inline what it does."
            )
        kw = st.keywords(4)
        # COPY t FROM stdin and COPY t (a, b) FROM stdin (pg_dump's form): the words after the column list count
        if kw[:1] == ["COPY"] and "STDIN" in _all_words(st.text):
            raise MigrateError(
                f"{mig.filename} line {lines.line(st.start)}: COPY ... FROM STDIN needs psql's inline data; "
                "use INSERT statements instead."
            )
    if mig.no_transaction:
        for st in stmts:
            if _tx_kind(st) is not None:
                raise MigrateError(
                    f"{mig.filename} line {lines.line(st.start)}: '{st.text.strip()[:40]}' in a file marked "
                    f"'{NO_TRANSACTION_MARKER}': such files run statement by statement in autocommit mode; "
                    "remove the transaction control."
                )
        return Plan(sql=mig.sql, statements=stmts)
    for st in stmts:
        command = _needs_autocommit(st)
        if command:
            raise MigrateError(
                f"{mig.filename} line {lines.line(st.start)}: {command} cannot run inside a transaction block, "
                f"and each migration runs in one transaction with its ledger row. Put '{NO_TRANSACTION_MARKER}' "
                "alone on the first line of the file (it then runs statement by statement in autocommit mode; "
                "write it idempotently, with IF NOT EXISTS), or move the statement into a file of its own "
                "that has that marker."
            )
    tx = [(i, st, _tx_kind(st)) for i, st in enumerate(stmts)]
    tx = [t for t in tx if t[2] is not None]
    if not tx:
        return Plan(sql=mig.sql, statements=stmts)
    last = len(stmts) - 1
    if len(tx) == 2 and tx[0][0] == 0 and tx[0][2] == "begin" and tx[1][0] == last and tx[1][2] == "commit":
        begin, commit = stmts[0], stmts[last]
        sql = mig.sql
        for st in (commit, begin):  # blank out, keeping offsets and line numbers
            blank = "".join(ch if ch == "\n" else " " for ch in sql[st.start : st.end])
            sql = sql[: st.start] + blank + sql[st.end :]
        return Plan(sql=sql, set_transaction=_begin_modes(begin), statements=stmts[1:last], wrapped=True)
    # name the first statement that breaks the whole-file wrap (a lone leading BEGIN names itself)
    st = next((t[1] for t in tx if not (t[0] == 0 and t[2] == "begin")), tx[0][1])
    raise MigrateError(
        f"{mig.filename} line {lines.line(st.start)}: transaction control '{st.text.strip()[:40]}' is refused: "
        "each migration runs in one transaction with its ledger row. Only a whole-file BEGIN; ... COMMIT; "
        f"wrap is accepted. For statements that cannot run in a transaction put '{NO_TRANSACTION_MARKER}' "
        "on the first line of the file."
    )


# --------------------------------------------------------------------------- result


@dataclass
class MigrationResult:
    applied: list[dict] = field(default_factory=list)
    skipped: int = 0
    pending: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    accepted_changes: list[dict] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    interrupted: list[dict] = field(default_factory=list)
    ledger_created: bool = False
    ledger_altered: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    check_mode: bool = False

    @property
    def changed(self) -> bool:
        """Anything applied or the ledger altered (in check mode: would be)."""
        return bool(
            self.applied
            or self.adopted
            or self.accepted_changes
            or self.ledger_created
            or self.ledger_altered
            or (self.check_mode and self.pending)
        )

    @property
    def summary(self) -> str:
        return f"✅ migrations: {len(self.applied)} applied, {self.skipped} skipped"

    def to_dict(self) -> dict:
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "pending": self.pending,
            "remaining": self.remaining,
            "out_of_order": self.out_of_order,
            "adopted": self.adopted,
            "accepted_changes": self.accepted_changes,
            "missing_files": self.missing_files,
            "interrupted": self.interrupted,
            "ledger_created": self.ledger_created,
            "ledger_altered": self.ledger_altered,
            "summary": self.summary,
            "output": [*self.lines, self.summary],
        }


# --------------------------------------------------------------------------- database side


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_ledger_name(name: str) -> tuple[str, str]:
    """``table`` or ``schema.table`` (plain identifiers) -> (schema, table)."""
    parts = name.split(".")
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", p) for p in parts):
        raise MigrateError(f"ledger_table '{name}' must be 'table' or 'schema.table' with plain identifiers.")
    return parts[0], parts[1]


def lock_key(schema: str, table: str) -> int:
    """The advisory lock key (signed bigint) for a ledger."""
    digest = hashlib.sha256(f"paycraft_migrate:{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def connect(params: dict, connect_timeout: int = 10):
    """Open an autocommit psycopg2 connection (module_utils/_postgres.py), failing with the runbook's hint."""
    try:
        return _postgres.connect(params, APPLICATION_NAME, connect_timeout)
    except _postgres.PostgresError as exc:
        raise MigrateError(f"{exc.message}. {CONNECT_HINT}") from None


def _applied_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{APPLICATION_NAME} {user}@{socket.gethostname()}"


class Engine:
    """Apply ``migrations_dir`` to the database reached by ``conn_params``."""

    def __init__(
        self,
        conn_params: dict,
        migrations_dir: str,
        *,
        target: str | None = None,
        out_of_order: str = "fail",
        allow_changed: bool | list[str] | tuple[str, ...] = (),
        lock_timeout: float = 120,
        ledger_table: str = DEFAULT_LEDGER,
        connect_timeout: int = 10,
        check_mode: bool = False,
        progress=None,
        rerun_interrupted: bool | list[str] | tuple[str, ...] = (),
    ):
        if out_of_order not in OUT_OF_ORDER_POLICIES:
            raise MigrateError(f"out_of_order must be one of {', '.join(OUT_OF_ORDER_POLICIES)}, not '{out_of_order}'.")
        self.conn_params = conn_params
        self.migrations_dir = migrations_dir
        self.target = target or None
        self.out_of_order = out_of_order
        self.allow_changed = allow_changed
        self.lock_timeout = float(lock_timeout)
        self.schema, self.table = parse_ledger_name(ledger_table)
        self.ledger = f"{_quote_ident(self.schema)}.{_quote_ident(self.table)}"
        self.started = f"{_quote_ident(self.schema)}.{_quote_ident(self.table + STARTED_SUFFIX)}"
        self.rerun_interrupted = rerun_interrupted
        self.connect_timeout = connect_timeout
        self.check_mode = check_mode
        self.progress = progress
        self.result = MigrationResult()

    # -- helpers
    def _say(self, line: str) -> None:
        self.result.lines.append(line)
        if self.progress:
            self.progress(line)

    def _rerun_allowed(self, version: str) -> bool:
        if isinstance(self.rerun_interrupted, bool):
            return self.rerun_interrupted
        return version in set(self.rerun_interrupted or ())

    def _change_allowed(self, version: str) -> bool:
        if isinstance(self.allow_changed, bool):
            return self.allow_changed
        return version in set(self.allow_changed or ())

    # -- lock
    def _lock(self, cur) -> None:
        key = lock_key(self.schema, self.table)
        ms = int(self.lock_timeout * 1000)
        cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{ms}ms" if ms > 0 else "0",))
        import psycopg2

        try:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg2.errors.LockNotAvailable:
            holder = self._lock_holder(cur, key)
            raise MigrateError(
                f"another migration run holds the lock on {self.schema}.{self.table} (waited "
                f"{self.lock_timeout:g}s): {holder}. Wait for it to finish, or if it is stuck, end it with "
                "SELECT pg_terminate_backend(<pid>) and re-run.",
                self.result,
            ) from None
        finally:
            cur.execute("RESET lock_timeout")

    def _lock_holder(self, cur, key: int) -> str:
        cur.execute(
            "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start, a.usename, a.state "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        )
        rows = cur.fetchall()
        if not rows:
            return "the holder has just released it (re-run)"
        return "; ".join(
            f"pid {pid}, application '{app or '-'}', client {addr or 'local socket'}, user {user}, "
            f"connected since {start:%Y-%m-%d %H:%M:%S %Z}, state {state}"
            for pid, app, addr, start, user, state in rows
        )

    # -- ledger
    def _ensure_ledger(self, cur) -> dict[str, str | None]:
        cur.execute("SELECT to_regclass(%s)", (self.ledger,))
        exists = cur.fetchone()[0] is not None
        if not exists:
            if self.check_mode:
                self.result.ledger_created = True  # would be created
                self.result.ledger_altered = [c for c, _ in LEDGER_EXTRA_COLUMNS]
                return {}
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.ledger}"
                "(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            self.result.ledger_created = True
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (self.ledger,),
        )
        have = {r[0] for r in cur.fetchall()}
        missing = [(c, t) for c, t in LEDGER_EXTRA_COLUMNS if c not in have]
        if missing and not self.check_mode:
            cur.execute(
                f"ALTER TABLE {self.ledger} " + ", ".join(f"ADD COLUMN IF NOT EXISTS {c} {t}" for c, t in missing)
            )
            self.result.ledger_altered = [c for c, _ in missing]
        if missing and self.check_mode:
            self.result.ledger_altered = [c for c, _ in missing]
            cur.execute(f"SELECT version, NULL FROM {self.ledger}")
        else:
            cur.execute(f"SELECT version, checksum FROM {self.ledger}")
        return dict(cur.fetchall())

    # -- started marks of no-transaction files
    def _read_started(self, cur, ledger) -> dict[str, tuple]:
        cur.execute("SELECT to_regclass(%s)", (self.started,))
        if cur.fetchone()[0] is None:
            return {}
        cur.execute(f"SELECT version, started_at, checksum, started_by FROM {self.started}")
        rows = {r[0]: r[1:] for r in cur.fetchall()}
        finished = [v for v in rows if v in ledger]  # applied since (by the bash applier): not interrupted
        if finished and not self.check_mode:
            cur.execute(f"DELETE FROM {self.started} WHERE version = ANY(%s)", (finished,))
        return {v: r for v, r in rows.items() if v not in ledger}

    def _invalid_indexes(self, cur) -> list[str]:
        cur.execute(
            "SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
            "WHERE NOT i.indisvalid ORDER BY 1"
        )
        return [f"{idx} ON {table}" for idx, table in cur.fetchall()]

    def _check_interrupted(self, cur, started, todo, migrations) -> None:
        """Report files that died half-way; refuse to re-run them unless rerun_interrupted names them."""
        if not started:
            return
        res = self.result
        invalid = self._invalid_indexes(cur)
        paths = {m.version: m.path for m in migrations}
        for version, (started_at, _checksum, started_by) in sorted(started.items()):
            res.interrupted.append({
                "version": version,
                "file": paths.get(version),
                "started_at": started_at.isoformat() if started_at else None,
                "started_by": started_by,
                "invalid_indexes": invalid,
            })
        pending = {m.version for m in todo}
        refused = [i for i in res.interrupted if i["version"] in pending and not self._rerun_allowed(i["version"])]
        for item in res.interrupted:
            if item not in refused and item["version"] in pending:
                self._say(f"re-run interrupted {item['version']} (rerun_interrupted)")
        if not refused:
            return
        names = ", ".join(i["version"] for i in refused)
        lines = "; ".join(
            f"{i['file'] or i['version']} started at {i['started_at']} by {i['started_by'] or '?'} and never finished"
            for i in refused
        )
        if invalid:
            left = (f" INVALID index(es) left behind: {', '.join(invalid)} - drop them first "
                    "(DROP INDEX CONCURRENTLY IF EXISTS <name>), or the file's CREATE INDEX CONCURRENTLY "
                    "IF NOT EXISTS would keep the broken index.")
        else:
            left = " No INVALID index is left behind."
        raise MigrateError(
            f"{len(refused)} migration(s) marked '{NO_TRANSACTION_MARKER}' were interrupted half-way (killed, or a "
            f"statement failed): {lines}. The statements before the interruption stay committed and no ledger "
            f"row exists.{left} Nothing was applied. Check what the file already did, then re-run it with "
            f"rerun_interrupted={names} (role: paycraft_migrations_rerun_interrupted).",
            res,
            {"interrupted": refused},
        )

    def _mark_started(self, cur, m: Migration) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.started}(version TEXT PRIMARY KEY, "
            "started_at TIMESTAMPTZ NOT NULL DEFAULT now(), checksum TEXT, started_by TEXT)"
        )
        cur.execute(
            f"INSERT INTO {self.started}(version, checksum, started_by) VALUES (%s, %s, %s) "
            "ON CONFLICT (version) DO UPDATE SET started_at = now(), checksum = EXCLUDED.checksum, "
            "started_by = EXCLUDED.started_by",
            (m.version, m.checksum, _applied_by()),
        )

    # -- main
    def run(self) -> MigrationResult:
        res = self.result
        migrations = load_migrations(self.migrations_dir)
        conn = connect(self.conn_params, self.connect_timeout)
        try:
            with conn.cursor() as cur:
                if not self.check_mode:
                    self._lock(cur)
                ledger = self._ensure_ledger(cur)
                started = self._read_started(cur, ledger)
                self._verify(cur, migrations, ledger)
                todo = self._select(migrations, ledger)
                res.pending = [m.version for m in todo]
                self._check_interrupted(cur, started, todo, migrations)
                # refuse unsupported files (transaction control, psql meta-commands) before applying anything
                plans = [plan_migration(m) for m in todo]
                if self.check_mode:
                    res.check_mode = True
                    res.adopted = [m.version for m in migrations if m.version in ledger and ledger[m.version] is None]
                    for m in todo:
                        self._say(f"would apply {m.version}")
                    return res
                self._adopt(cur, migrations, ledger)
                for idx, m in enumerate(todo):
                    self._apply(conn, cur, m, plans[idx], idx, todo)
                done = {a["version"] for a in res.applied}
                res.remaining = [m.version for m in migrations if m.version not in ledger and m.version not in done]
                return res
        finally:
            conn.close()  # closing the session releases the advisory lock

    def _verify(self, cur, migrations, ledger) -> None:
        res = self.result
        refused = []
        for m in migrations:
            if m.version not in ledger:
                continue
            res.skipped += 1
            recorded = ledger[m.version]
            if recorded is None or recorded == m.checksum:
                continue
            if self._change_allowed(m.version):
                res.accepted_changes.append({"version": m.version, "recorded": recorded, "current": m.checksum})
            else:
                refused.append((m, recorded))
        if refused:
            lines = "; ".join(f"{m.filename}: recorded sha256 {rec}, file now {m.checksum}" for m, rec in refused)
            raise MigrateError(
                f"{len(refused)} applied migration(s) changed on disk since they were applied: {lines}. "
                "Never edit a migration that has already been applied (runbook section 4): restore the file "
                "and add a follow-up NNN_fix_....sql instead, or, if the change is known to be harmless, accept "
                "it with allow_changed.",
                res,
                {"changed": [{"version": m.version, "recorded": rec, "current": m.checksum} for m, rec in refused]},
            )
        files = {m.version for m in migrations}
        res.missing_files = sorted(v for v in ledger if v not in files)

    def _select(self, migrations, ledger) -> list[Migration]:
        res = self.result
        pending = [m for m in migrations if m.version not in ledger]
        if self.target:
            if self.target not in ledger and self.target not in {m.version for m in migrations}:
                raise MigrateError(
                    f"target '{self.target}' is neither a file in {self.migrations_dir} nor an applied version.",
                    res,
                )
            pending = [m for m in pending if m.version <= self.target]
        last = max(ledger) if ledger else None
        ooo = [m for m in pending if last is not None and m.version < last]
        res.out_of_order = [m.version for m in ooo]
        if ooo:
            names = ", ".join(m.version for m in ooo)
            if self.out_of_order == "fail":
                raise MigrateError(
                    f"{len(ooo)} migration(s) sort before the last applied version {last} and were never applied: "
                    f"{names}. Nothing was applied. Set out_of_order=apply to apply them, or out_of_order=warn to "
                    "leave them out.",
                    res,
                )
            if self.out_of_order == "warn":
                res.warnings.append(
                    f"not applying {len(ooo)} out-of-order migration(s) (they sort before {last}): {names}"
                )
                pending = [m for m in pending if m not in ooo]
        return pending

    def _adopt(self, cur, migrations, ledger) -> None:
        res = self.result
        updates = []
        for m in migrations:
            if m.version in ledger and ledger[m.version] is None:
                updates.append((m.checksum, m.version))
                res.adopted.append(m.version)
        for change in res.accepted_changes:
            updates.append((change["current"], change["version"]))
        if updates:
            cur.executemany(f"UPDATE {self.ledger} SET checksum = %s WHERE version = %s", updates)

    def _record(self, cur, m: Migration, ms: int) -> None:
        cur.execute(
            f"INSERT INTO {self.ledger}(version, checksum, execution_ms, applied_by) VALUES (%s, %s, %s, %s)",
            (m.version, m.checksum, ms, _applied_by()),
        )

    def _apply(self, conn, cur, m: Migration, plan: Plan, idx: int, todo: list[Migration]) -> None:
        import psycopg2

        res = self.result
        self._say(f"apply {m.version}")
        t0 = time.perf_counter()
        failed_stmt: Statement | None = None
        try:
            if m.no_transaction:
                self._mark_started(cur, m)  # committed now: a kill -9 from here on stays visible
                for st in plan.statements:
                    failed_stmt = st
                    cur.execute(st.text)
                failed_stmt = None
                ms = int((time.perf_counter() - t0) * 1000)
                conn.autocommit = False
                try:  # the ledger row and the end of the started mark in one transaction
                    self._record(cur, m, ms)
                    cur.execute(f"DELETE FROM {self.started} WHERE version = %s", (m.version,))
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                finally:
                    conn.autocommit = True
            else:
                conn.autocommit = False
                try:
                    if plan.set_transaction:
                        cur.execute("SET TRANSACTION " + plan.set_transaction)
                    if plan.statements:  # a comment-only file is an empty query to the server
                        cur.execute(plan.sql)
                    ms = int((time.perf_counter() - t0) * 1000)
                    self._record(cur, m, ms)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                finally:
                    conn.autocommit = True
        except psycopg2.Error as exc:
            raise self._failure(conn, m, plan, exc, failed_stmt, todo[:idx]) from None
        res.applied.append({"version": m.version, "ms": ms})
        # psql gives every file a fresh session; here the next file must not inherit this one's
        # SET search_path / set_config(..., false) / SET ROLE / temp tables (the lock is kept).
        cur.execute(SESSION_RESET)

    def _failure(self, conn, m, plan, exc, failed_stmt, before) -> MigrateError:
        res = self.result
        diag = exc.diag
        sqlstate = exc.pgcode or "?????"
        message = (diag.message_primary or str(exc)).strip()
        lines = LineMap(m.sql)
        line = None
        pos = diag.statement_position
        if failed_stmt is not None:
            line = lines.line(failed_stmt.start)
            if pos and pos.isdigit():
                line = lines.line(failed_stmt.start + int(pos) - 1)
        elif pos and pos.isdigit():
            line = lines.line(int(pos) - 1)
        elif not m.no_transaction:
            line = self._locate(conn, m, plan, sqlstate)
        where = f"{m.path} line {line}" if line else f"{m.path} (line unknown)"
        ctx = (diag.context or "").strip().splitlines()
        detail = (diag.message_detail or "").strip()
        msg = f"migration {m.version} failed at {where}: SQLSTATE {sqlstate}: {message}"
        if detail:
            msg += f" (DETAIL: {detail})"
        if ctx:
            msg += f" (CONTEXT: {ctx[0]})"
        if m.no_transaction:
            msg += (
                f". The file opted out of the transaction ('{NO_TRANSACTION_MARKER}'): statements before the "
                "failing one stay committed and no ledger row was written; it stays marked as started, so the "
                "next run reports it as interrupted and re-runs the whole file only with "
                f"rerun_interrupted={m.version} - make it idempotent (IF NOT EXISTS) and DROP any INVALID index "
                "a failed CREATE INDEX CONCURRENTLY left behind"
            )
        else:
            msg += f". Nothing of {m.version} was committed"
            if sqlstate == "25001":
                msg += (f" (this statement cannot run inside a transaction block: put '{NO_TRANSACTION_MARKER}' "
                        "alone on the first line of the file)")
        names = ", ".join(b.version for b in before)
        msg += f"; {len(before)} migration(s) applied before it in this run" + (f" ({names})" if names else "")
        msg += ". Fix the SQL and re-run; the ledger retries from this file."
        return MigrateError(
            msg,
            res,
            {
                "version": m.version,
                "file": m.path,
                "line": line,
                "sqlstate": sqlstate,
                "message": message,
                "applied_before": len(before),
            },
        )

    def _locate(self, conn, m: Migration, plan: Plan, sqlstate: str) -> int | None:
        """Find the failing statement of a transactional file by replaying it statement by
        statement in a transaction that is rolled back (only on failure, only without a position)."""
        import psycopg2

        lines = LineMap(m.sql)
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                if plan.set_transaction:
                    cur.execute("SET TRANSACTION " + plan.set_transaction)
                for st in plan.statements:
                    try:
                        cur.execute(st.text)
                    except psycopg2.Error as exc:
                        pos = exc.diag.statement_position
                        off = st.start + (int(pos) - 1 if pos and pos.isdigit() else 0)
                        return lines.line(off)
        except psycopg2.Error:
            return None
        finally:
            conn.rollback()
            conn.autocommit = True
        return None


def run(conn_params: dict, migrations_dir: str, **kw) -> MigrationResult:
    """Convenience wrapper: ``Engine(conn_params, migrations_dir, **kw).run()``."""
    return Engine(conn_params, migrations_dir, **kw).run()
