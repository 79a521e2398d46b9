# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The write hold: while an operation may still restore a snapshot, the gateway refuses writes.

The hold is two things on the host:

* its record, ``paycraft_write_hold_file`` (``/etc/paycraft/write-hold.json``, 0600): the operation
  that holds, since when, the pass token its own smoke test
  sends, the read functions left open. It is the record: a killed run leaves it, every later run
  (``recover.yml``) and the doctor see it, and ``paycraft_gateway_config`` keeps the hold in every
  Kong file it writes while it exists.
* the hold in the Kong file itself (:func:`gateway.text_with_hold`), written in place (same inode: the
  gateway's bind mount sees it) before the gateway is reloaded.

Taking the hold waits until no request of the application roles is still running in Postgres
(a write the gateway let through just before must be committed before the snapshot starts).
Pure Python; the runner (``_cli``) and the clock are injected.
"""

from __future__ import annotations

import json
import os
import secrets
import time

from ansible_collections.paycraft.selfhost.plugins.module_utils import gateway, snapshot

# PostgREST runs a STABLE or IMMUTABLE function in a READ ONLY transaction: such a function stays
# callable with POST /rest/v1/rpc/<name> during the hold (the config function reads that way).
# A name with any VOLATILE overload is not a read.
READ_FUNCTIONS_SQL = (
    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'public' GROUP BY p.proname HAVING bool_and(p.provolatile IN ('s', 'i')) "
    "ORDER BY 1"
)
APP_ROLES = ("authenticator", "supabase_auth_admin")
BUSY_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE usename IN ({roles}) AND pid <> pg_backend_pid() "
    "AND (state = 'active' OR state LIKE 'idle in transaction%')"
)


class HoldError(RuntimeError):
    """The hold cannot be taken or released; the message says what to do."""


class DatabaseUnreachable(HoldError):
    """psql in the database container did not answer (the container is stopped or gone)."""


def read_hold(hold_file: str):
    """The record of the hold in force, else None."""
    try:
        with open(hold_file, encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HoldError(f"{hold_file} cannot be read ({exc}): remove it, then run the "
                        "playbook again (the gateway keeps refusing writes until it is gone)") from exc
    return record if isinstance(record, dict) else None


def new_pass() -> str:
    return secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-]


def psql(runner, container: str, sql: str, timeout: float = 30):
    rc, out, err = runner(["docker", "exec", container, "psql", "-U", "postgres", "-d", "postgres",
                           "-v", "ON_ERROR_STOP=1", "-tAXc", sql], timeout=timeout)
    if rc != 0:
        raise DatabaseUnreachable(f"psql in {container} failed (rc {rc}): {(err or out).strip()[:300]}")
    return out.strip()


def read_functions(runner, container: str) -> list:
    """The read-only functions; none when the database does not answer (every POST is then held)."""
    try:
        out = psql(runner, container, READ_FUNCTIONS_SQL)
    except DatabaseUnreachable:
        return []
    return [line for line in out.splitlines() if line.strip()]


def wait_idle(runner, container: str, timeout: float, clock=time.monotonic, sleep=time.sleep) -> int:
    """Wait until no session of the application roles runs a statement or holds a transaction open;
    returns the seconds waited; raises HoldError after ``timeout``."""
    sql = BUSY_SQL.format(roles=", ".join(f"'{r}'" for r in APP_ROLES))
    start = clock()
    while True:
        try:
            busy = int(psql(runner, container, sql) or 0)
        except DatabaseUnreachable:
            return int(clock() - start)  # a database that does not run has no request running
        if busy == 0:
            return int(clock() - start)
        if clock() - start >= timeout:
            raise HoldError(f"{busy} request(s) of {', '.join(APP_ROLES)} still run in Postgres after {timeout:g}s "
                            "of the hold")
        sleep(0.2)


def gateway_file_of(runner, container: str):
    """The host file the gateway container reads as its declarative config (its bind mount at
    KONG_DECLARATIVE_CONFIG), else None (no such container, or the release's own file in the image)."""
    rc, out, _ = runner(["docker", "inspect", "--format", "{{json .}}", container], timeout=30)
    if rc != 0:
        return None
    try:
        info = json.loads(out)
    except ValueError:
        return None
    env = dict(e.split("=", 1) for e in (info.get("Config") or {}).get("Env") or [] if "=" in e)
    target = env.get("KONG_DECLARATIVE_CONFIG")
    for mount in info.get("Mounts") or []:
        if target and mount.get("Type") == "bind" and mount.get("Destination") == target:
            return mount.get("Source")
    return None


def write_in_place(path: str, text: str) -> None:
    """Rewrite ``path`` in place (same inode: a single-file bind mount sees the new content)."""
    with open(path, "r+", encoding="utf-8") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


def apply_to_kong_file(path: str, spec) -> bool:
    """Put the hold ``spec`` (None: no hold) into the Kong file ``path``; True when the file changed."""
    try:
        with open(path, encoding="utf-8") as fh:
            before = fh.read()
    except FileNotFoundError as exc:
        raise HoldError(f"{path} does not exist: the gateway does not read the collection's Kong file "
                        "(paycraft_stack_key_check=false and no gap filled), so writes cannot be held "
                        "there") from exc
    after = gateway.text_with_hold(before, spec) if spec else gateway.text_without_hold(before)
    if after == before:
        return False
    write_in_place(path, after)
    return True


def take(hold_file: str, kong_file, operation: str, read_names, retry_after: int, now_iso: str) -> tuple:
    """Write the record (keeping the pass of a hold already in force) and the Kong file.
    Returns (record, kong file changed)."""
    record = read_hold(hold_file) or {}
    spec = gateway.hold_spec(record.get("pass") or new_pass(), read_names, retry_after)
    record = {"operation": operation or record.get("operation", ""), "since": record.get("since") or now_iso,
              **spec}
    snapshot.write_json_atomic(hold_file, record)
    return record, apply_to_kong_file(kong_file, spec) if kong_file else False


def release(hold_file: str, kong_file) -> tuple:
    """Take the hold out of the Kong file, then remove the record. Returns (record or None, changed)."""
    record = read_hold(hold_file)
    changed = False
    if kong_file and os.path.exists(kong_file):
        changed = apply_to_kong_file(kong_file, None)
    if record is not None:
        os.unlink(hold_file)
        changed = True
    return record, changed


def public(record) -> dict:
    """The record without its pass token (for results and messages)."""
    if not record:
        return {}
    return {k: v for k, v in record.items() if k != "pass"}
