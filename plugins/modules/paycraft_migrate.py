#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_migrate
short_description: Apply PayCraft's SQL migrations with a ledger, one transaction per file and a lock
version_added: "0.1.0"
description:
  - The applier of runbook section 4 (C(infra/selfhost/migrations-bootstrap.sh)), done safely.
  - Uses the runbook's ledger C(_paycraft_migrations(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ)) and
    extends it in place with nullable columns C(checksum), C(execution_ms) and C(applied_by). A database
    bootstrapped by the bash script is adopted (its rows get their checksum filled in, nothing is
    re-applied), and the bash script keeps working on a ledger written by this module.
  - Every C(*.sql) file of O(migrations_dir) is considered in lexical order; the version is the file
    name without C(.sql) (for example C(042_add_coupons_v2)).
  - Each migration and its ledger row commit in one transaction, so a crash or C(kill -9) leaves a
    migration either fully applied with its ledger row or not at all.
  - A file wrapped in its own C(BEGIN;) ... C(COMMIT;) (as real PayCraft migrations are) is unwrapped and
    runs inside the module's transaction, so it stays atomic with its ledger row. Transaction control
    anywhere else in a file (a C(COMMIT;) in the middle, C(ROLLBACK;), ...) is refused with the file and
    line, because the bash applier would silently commit half of such a file.
  - "Opt-out: a file whose first line is exactly C(-- paycraft:no-transaction) runs statement by statement
    in autocommit mode, for statements that cannot run in a transaction (C(CREATE INDEX CONCURRENTLY),
    C(REINDEX CONCURRENTLY), C(VACUUM)). Its ledger row is written only after
    its last statement succeeded. If such a file fails half-way, the statements before the failing one
    stay committed and no ledger row exists. Before its first statement the module writes a started mark in
    C(<ledger_table>_started) (a table of its own, so the ledger keeps the runbook's shape); the next run
    reports such a file as interrupted, names every C(INVALID) index left behind and applies nothing until
    O(rerun_interrupted) names the file. Write these files idempotently (C(IF NOT EXISTS)) and drop any
    C(INVALID) index that a failed C(CREATE INDEX CONCURRENTLY) left behind before re-running."
  - A statement that cannot run inside a transaction block (C(CREATE INDEX CONCURRENTLY), C(DROP INDEX
    CONCURRENTLY), C(REINDEX CONCURRENTLY), C(VACUUM), ...) in a file without the marker is refused with the
    file and line, naming the marker, before anything is applied.
  - The sha256 of each file is recorded; an applied file that changed on disk is refused, naming the file
    and both checksums (runbook - never edit a migration that has already been applied), unless
    O(allow_changed) accepts it.
  - A PostgreSQL session advisory lock (a fixed key derived from the ledger name) serialises concurrent
    runs; after O(lock_timeout) the module fails naming the session that holds the lock (pid,
    application name, client address, since when). The module's own connection is named
    C(paycraft_migrate) in C(pg_stat_activity). The bash applier does not take this lock.
  - A missing, empty or dangling (symlink to nowhere) O(migrations_dir) is an error naming the path and
    what it points to, never C(0 applied).
  - On failure the message names the file, the line within the file, the SQLSTATE and PostgreSQL's
    message, and how many migrations this run applied before it; nothing of the failing file is
    committed (unless it opted out) and earlier files stay applied.
author:
  - paycraft.selfhost maintainers (@paycraft)
extends_documentation_fragment:
  - paycraft.selfhost.postgres
options:
  migrations_dir:
    description:
      - Directory holding the migration files (PayCraft's C(server/migrations)).
    type: path
    required: true
  target:
    description:
      - Apply pending migrations up to and including this version (file name without C(.sql)); later
        ones stay pending and are listed in RV(remaining).
      - Must name a file of O(migrations_dir) or an applied version.
    type: str
  out_of_order:
    description:
      - What to do with pending files that sort before the last applied version (typically a file added
        to an older release after a newer one was applied).
      - V(fail) stops before applying anything; V(warn) leaves them unapplied with a warning and applies the
        rest; V(apply) applies them in lexical order with the rest.
      - They are listed in RV(out_of_order) in every case.
    type: str
    choices: [fail, warn, apply]
    default: fail
  allow_changed:
    description:
      - Versions of applied migrations whose changed checksum is accepted (the new checksum is recorded).
      - V(true) accepts every changed file. Leave empty in production.
    type: raw
    default: []
  lock_timeout:
    description:
      - Seconds to wait for another run's migration lock before failing; V(0) waits forever.
    type: float
    default: 120
  rerun_interrupted:
    description:
      - Versions of C(-- paycraft:no-transaction) files that were interrupted half-way (see RV(interrupted)) to
        run again from their first statement. V(true) re-runs every interrupted file.
    type: raw
    default: []
  ledger_table:
    description:
      - The ledger table, C(table) or C(schema.table) (C(public) by default).
    type: str
    default: _paycraft_migrations
attributes:
  check_mode:
    support: full
    description: Lists exactly the versions that would be applied in RV(pending); takes no lock, writes nothing.
  diff_mode:
    support: none
    description: The result lists the applied and pending versions; there is no diff.
notes:
  - Requires psycopg2 on the managed host. The password goes to the driver as a keyword argument, never
    into a process list or a result.
  - Files are plain SQL; psql meta-commands (C(\i), C(\set)) and C(COPY ... FROM STDIN) data blocks (with
    or without a column list, as C(pg_dump) writes them) are refused with the file and line.
"""

EXAMPLES = r"""
- name: Apply PayCraft migrations
  paycraft.selfhost.paycraft_migrate:
    migrations_dir: /opt/paycraft/src/server/migrations
    login_host: 127.0.0.1
    login_port: 54322
    env_file: /etc/paycraft/paycraft.env  # PAYCRAFT_DB_PASSWORD, read on the host
  register: migrations

- name: Show the runbook's summary line
  ansible.builtin.debug:
    msg: "{{ migrations.summary }}"

- name: What would run (check mode)
  paycraft.selfhost.paycraft_migrate:
    migrations_dir: /opt/paycraft/src/server/migrations
    env_file: /etc/paycraft/paycraft.env
  check_mode: true
  register: plan

- name: Apply up to a version over the Unix socket, waiting at most 30 s for another run
  paycraft.selfhost.paycraft_migrate:
    migrations_dir: /opt/paycraft/src/server/migrations
    login_unix_socket: /var/run/postgresql
    target: 043_widen_subscription_status
    lock_timeout: 30
"""

RETURN = r"""
applied:
  description: Migrations applied by this run, in order, with their execution time in milliseconds.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "042_add_coupons_v2", "ms": 37}, {"version": "043_widen_subscription_status", "ms": 4}]
skipped:
  description: Number of files already in the ledger (the runbook's "M skipped").
  returned: always
  type: int
  sample: 41
pending:
  description: Versions this run applies (or, in check mode, would apply), in order.
  returned: always
  type: list
  elements: str
  sample: ["042_add_coupons_v2", "043_widen_subscription_status"]
remaining:
  description: Versions still not applied after this run (beyond O(target), left out by O(out_of_order=warn)).
  returned: success
  type: list
  elements: str
out_of_order:
  description: Pending versions that sort before the last applied version.
  returned: always
  type: list
  elements: str
adopted:
  description: Ledger rows (for example written by the bash applier) whose checksum was filled in by this run.
  returned: always
  type: list
  elements: str
accepted_changes:
  description: Applied migrations whose changed checksum was accepted through O(allow_changed).
  returned: always
  type: list
  elements: dict
interrupted:
  description:
    - C(-- paycraft:no-transaction) files that started and never finished (killed, or a statement failed), with
      when and by whom they started and the C(INVALID) indexes of the database.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "044_idx", "file": "/opt/paycraft/src/server/migrations/044_idx.sql",
            "started_at": "2026-11-28T23:01:02+00:00", "started_by": "paycraft_migrate root@host",
            "invalid_indexes": ["public.subs_status_idx ON public.subs"]}]
missing_files:
  description: Ledger versions with no file in O(migrations_dir) (reported, not an error).
  returned: always
  type: list
  elements: str
ledger_created:
  description: Whether this run created the ledger table.
  returned: always
  type: bool
ledger_altered:
  description: Columns this run added to the ledger table.
  returned: always
  type: list
  elements: str
summary:
  description: The runbook's summary line.
  returned: always
  type: str
  sample: "✅ migrations: 2 applied, 39 skipped"
output:
  description: The lines the bash applier would print (C(apply <version>) ..., then the summary).
  returned: always
  type: list
  elements: str
error:
  description:
    - On a failing migration, where and why it failed (version, file, line, sqlstate, message, applied_before).
    - On refused changed files, C(changed) lists each version with its recorded and current checksum.
  returned: failed
  type: dict
  sample: {"version": "042_add_coupons_v2", "file": "/opt/paycraft/src/server/migrations/042_add_coupons_v2.sql",
           "line": 17, "sqlstate": "42P01", "message": "relation \"coupons\" does not exist", "applied_before": 0}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.validation import check_type_bool

try:
    import psycopg2  # noqa: F401  (used by module_utils.migrate)

    HAS_PSYCOPG2 = True
except ImportError:
    HAS_PSYCOPG2 = False

from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres, migrate


def _versions_or_bool(module, name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return check_type_bool(value)
        except TypeError:
            return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    module.fail_json(msg=f"{name} must be a list of versions (file names without .sql) or a boolean.")


def main():
    argument_spec = _postgres.postgres_common_argument_spec()
    argument_spec.update(
        migrations_dir=dict(type="path", required=True),
        target=dict(type="str"),
        out_of_order=dict(type="str", default="fail", choices=list(migrate.OUT_OF_ORDER_POLICIES)),
        allow_changed=dict(type="raw", default=[]),
        rerun_interrupted=dict(type="raw", default=[]),
        lock_timeout=dict(type="float", default=120),
        ledger_table=dict(type="str", default=migrate.DEFAULT_LEDGER),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"))
    p = module.params
    if p["lock_timeout"] < 0:
        module.fail_json(msg="lock_timeout must be >= 0 seconds (0 waits forever).")
    try:
        conn_params = _postgres.connection_params(p)
    except _postgres.PostgresError as exc:
        module.fail_json(msg=exc.message)
    engine = migrate.Engine(
        conn_params,
        p["migrations_dir"],
        target=p["target"],
        out_of_order=p["out_of_order"],
        allow_changed=_versions_or_bool(module, "allow_changed", p["allow_changed"]),
        rerun_interrupted=_versions_or_bool(module, "rerun_interrupted", p["rerun_interrupted"]),
        lock_timeout=p["lock_timeout"],
        ledger_table=p["ledger_table"],
        connect_timeout=p["connect_timeout"],
        check_mode=module.check_mode,
    )
    try:
        res = engine.run()
    except migrate.MigrateError as exc:
        result = (exc.result or engine.result).to_dict()
        changed = bool((exc.result or engine.result).changed)
        if exc.details:
            result["error"] = exc.details
        module.fail_json(msg=exc.message, changed=changed, **result)
    for warning in res.warnings:
        module.warn(warning)
    module.exit_json(changed=res.changed, **res.to_dict())


if __name__ == "__main__":
    main()
