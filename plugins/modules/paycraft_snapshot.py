#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_snapshot
short_description: Take, verify, find and restore snapshots of the PayCraft database
version_added: 0.1.0
description:
  - A snapshot is C(pg_dump -Fc) of the PayCraft database plus C(pg_dumpall --globals-only) (roles and
    their passwords), made by the tools inside the database container, verified with C(pg_restore --list),
    stored in a directory of its own under O(backup_dir) (0700, files 0600) with a C(manifest.json) that
    holds the version, UTC time, size, sha256 of each file, the migration ledger's head and the collection version.
  - O(state=check) estimates the snapshot from C(pg_database_size) and fails when O(backup_dir)'s file
    system would not hold it. Nothing changes.
  - O(state=present) removes snapshot directories a killed run left without their manifest, takes a snapshot
    and keeps only the newest O(keep) of its O(kind). The snapshot the operation record (O(operation_file))
    names, the one the last upgrade would roll back to, is never removed. With O(check_space), it first refuses
    (before writing anything) when the disk would not hold the snapshot.
  - O(state=verified) finds the snapshot (the newest of O(version), or O(name)) and checks its files
    against the manifest's sha256 and size, then reads it with C(pg_restore --list). Nothing changes.
  - O(state=restored) verifies, then replaces the database with the snapshot (globals, then
    C(pg_restore --clean --if-exists --create)). Stop every other client of the database first. With
    O(container_snapshot_dir) (the snapshot's directory mounted into O(container)) pg_restore reads the dump
    file itself, with O(jobs) parallel jobs (C(pg_restore -j)); with O(check_tables) every table of the dump
    must be in the restored database, or the task fails.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: O(state=check) and O(state=verified) run in check mode; the others report what they would do.
  diff_mode:
    support: none
    description: Snapshots are files written whole, so no diff is shown.
options:
  state:
    description: What to do.
    type: str
    choices: [check, present, verified, restored]
    default: present
  backup_dir:
    description: Where snapshots live (outside the Docker volume).
    type: path
    default: /var/backups/paycraft
  version:
    description:
      - The PayCraft version the database is at (O(state=present)), or the one whose newest snapshot
        to use (O(state=verified), O(state=restored)).
    type: str
  name:
    description:
      - A snapshot directory name in O(backup_dir), or the absolute path of a snapshot or of a backup taken by
        the backup role (C(/var/backups/paycraft-backups/<name>)), to use instead of the newest of O(version).
    type: str
  keep:
    description: Snapshots of O(kind) to keep (O(state=present)); older ones of that kind are removed.
    type: int
    default: 5
  kind:
    description:
      - What the snapshot is taken for (O(state=present)); each kind keeps its own O(keep). A snapshot taken
        before kinds were recorded counts as C(upgrade). Backups of the backup role are never removed here.
    type: str
    choices: [upgrade, rotation]
    default: upgrade
  operation_file:
    description: The operation record; the snapshot it names is never removed by retention.
    type: path
    default: /etc/paycraft/operation.json
  check_space:
    description:
      - With O(state=present), refuse before writing when the free space of O(backup_dir) is below
        C(pg_database_size) times O(size_factor) plus O(reserve_mb).
    type: bool
    default: false
  collection_version:
    description: Recorded in the manifest.
    type: str
    default: ""
  container:
    description: The database container.
    type: str
    default: paycraft_db
  db_user:
    description: Superuser the tools run as inside the container.
    type: str
    default: postgres
  db_name:
    description: The PayCraft database.
    type: str
    default: postgres
  size_factor:
    description:
      - The free space needed is C(pg_database_size) times this
        (pg_dump -Fc compresses, so 1 is an upper bound).
    type: float
    default: 1.0
  reserve_mb:
    description: MiB that must stay free on top of the estimate.
    type: int
    default: 256
  timeout:
    description: Seconds any one dump or restore command may take.
    type: int
    default: 3600
  jobs:
    description: Parallel jobs of C(pg_restore -j) (O(state=restored)); above 1 needs O(container_snapshot_dir).
    type: int
    default: 1
  container_snapshot_dir:
    description:
      - Where O(container) sees the snapshot's directory (a read-only mount); pg_restore then reads the dump from
        there instead of stdin.
    type: str
  check_tables:
    description:
      - After O(state=restored), fail unless every table of the dump (its C(pg_restore --list) TABLE entries) is in
        the restored database.
    type: bool
    default: false
requirements:
  - the docker CLI on the managed host, a running database container
"""

EXAMPLES = r"""
- name: Refuse when the disk would not hold a snapshot
  paycraft.selfhost.paycraft_snapshot:
    state: check

- name: Snapshot before the upgrade
  paycraft.selfhost.paycraft_snapshot:
    version: v1.0.0
    collection_version: 0.1.0
  register: snap

- name: Restore the newest snapshot of v1.0.0
  paycraft.selfhost.paycraft_snapshot:
    state: restored
    version: v1.0.0
"""

RETURN = r"""
snapshot:
  description: The manifest of the snapshot taken, verified or restored (with C(path) and C(name)).
  returned: states present, verified, restored
  type: dict
removed:
  description: Snapshot directories removed by retention.
  returned: state present
  type: list
  elements: str
cleaned:
  description: Partial snapshot directories (no manifest, no live writer) removed before the snapshot.
  returned: state present
  type: list
  elements: str
db_size:
  description: pg_database_size in bytes.
  returned: state check
  type: int
needed:
  description: Bytes the snapshot needs free.
  returned: state check
  type: int
free:
  description: Free bytes on the file system of backup_dir.
  returned: state check
  type: int
restore:
  description: What the restore said (globals warnings, pg_restore's stderr), C(seconds) it took, C(jobs), C(tables).
  returned: state restored
  type: dict
snapshots:
  description: Every complete snapshot in backup_dir, oldest first (version, created_at, path).
  returned: always
  type: list
  elements: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import snapshot as lib


def _mib(n):
    return f"{n / 1048576:.1f} MiB"


def _short(snaps):
    return [{"name": s["name"], "version": s.get("version"), "created_at": s.get("created_at"), "path": s["path"]}
            for s in snaps]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["check", "present", "verified", "restored"], default="present"),
            backup_dir=dict(type="path", default="/var/backups/paycraft"),
            version=dict(type="str"),
            name=dict(type="str"),
            keep=dict(type="int", default=5),
            kind=dict(type="str", choices=list(lib.KINDS), default=lib.DEFAULT_KIND),
            operation_file=dict(type="path", default="/etc/paycraft/operation.json"),
            check_space=dict(type="bool", default=False),
            collection_version=dict(type="str", default=""),
            container=dict(type="str", default="paycraft_db"),
            db_user=dict(type="str", default="postgres"),
            db_name=dict(type="str", default="postgres"),
            size_factor=dict(type="float", default=1.0),
            reserve_mb=dict(type="int", default=256),
            timeout=dict(type="int", default=3600),
            jobs=dict(type="int", default=1),
            container_snapshot_dir=dict(type="str"),
            check_tables=dict(type="bool", default=False),
        ),
        required_if=[("state", "present", ("version",))],
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    backup_dir = p["backup_dir"]
    db = lib.Database(p["container"], user=p["db_user"], database=p["db_name"],
                      docker=module.get_bin_path("docker", required=True), timeout=p["timeout"])
    host = os.uname()[1]
    try:
        if state == "check":
            size = db.size()
            needed = lib.needed_bytes(size, p["size_factor"], p["reserve_mb"] * 1048576)
            free = lib.free_bytes(backup_dir)
            if free < needed:
                module.fail_json(
                    msg=(f"{host}: not enough disk for the snapshot: the database is {_mib(size)} "
                         f"(pg_database_size), the snapshot needs {_mib(needed)} free in {backup_dir} "
                         f"and {_mib(free)} is free ({needed} and {free} bytes; the estimate is the database "
                         f"size x {p['size_factor']} plus {p['reserve_mb']} MiB kept free). Nothing was changed. "
                         f"Free space there (df -h {backup_dir}; old snapshots: ls -l {backup_dir}) or set "
                         "paycraft_snapshot_dir to a larger disk, then run the same command again."),
                    db_size=size, needed=needed, free=free)
            module.exit_json(changed=False, db_size=size, needed=needed, free=free,
                             snapshots=_short(lib.list_snapshots(backup_dir)))

        if state == "present":
            if module.check_mode:
                module.exit_json(changed=True, snapshot={}, removed=[], cleaned=[],
                                 snapshots=_short(lib.list_snapshots(backup_dir)))
            recorded = lib.recorded_snapshot(p["operation_file"])
            manifest = lib.take(backup_dir, db, p["version"], p["collection_version"], p["keep"], kind=p["kind"],
                                protect=(recorded,) if recorded else (),
                                reserve=p["reserve_mb"] * 1048576 if p["check_space"] else None,
                                factor=p["size_factor"])
            removed = manifest.pop("removed")
            cleaned = manifest.pop("cleaned")
            module.exit_json(changed=True, snapshot=manifest, removed=removed, cleaned=cleaned,
                             snapshots=_short(lib.list_snapshots(backup_dir)))

        # verified / restored
        snaps = lib.list_snapshots(backup_dir)
        snap = lib.find_snapshot(backup_dir, version=p["version"], name=p["name"])
        if snap is None:
            wanted = f"snapshot {p['name']}" if p["name"] else f"a snapshot of {p['version'] or 'any version'}"
            have = ", ".join(f"{s['name']} ({s.get('version')})" for s in snaps) or "none"
            module.fail_json(
                msg=(f"{host}: there is no verified {wanted} in {backup_dir} (complete snapshots: {have}). "
                     "Nothing was changed. A rollback restores the database from a snapshot taken before an "
                     "upgrade; without one it cannot bring the data back. Name one with "
                     "-e paycraft_rollback_snapshot=<name> (ls -l " + backup_dir + ")."),
                snapshots=_short(snaps))
        if snap.get("encryption"):
            module.fail_json(
                msg=(f"{host}: {snap['path']} is a backup encrypted with age; its private key is not on this host, "
                     "so it cannot be restored here. Nothing was changed. Decrypt it on the controller (age -d -i "
                     "<identity> database.dump.age > database.dump, the same for globals.sql, with manifest.json "
                     "from a drill's decrypted copy), copy the directory to the host and name that path, or name "
                     "an unencrypted snapshot or backup."),
                snapshot=snap, snapshots=_short(snaps))
        problems = lib.verify_checksums(snap["path"])
        if problems:
            module.fail_json(
                msg=(f"{host}: snapshot {snap['path']} failed its checksum check: " + "; ".join(problems)
                     + ". Nothing was changed: a damaged dump would restore a damaged database. "
                     "Choose another snapshot with -e paycraft_rollback_snapshot=<name> (ls -l "
                     + backup_dir + ")."),
                snapshot=snap, snapshots=_short(snaps))
        dump = os.path.join(snap["path"], lib.DUMP)
        entries = db.list_dump(dump)
        snap["listed_entries"] = entries
        if state == "verified" or module.check_mode:
            module.exit_json(changed=state == "restored", snapshot=snap, snapshots=_short(snaps))
        inside = p["container_snapshot_dir"]
        started = time.monotonic()
        details = db.restore(dump, os.path.join(snap["path"], lib.GLOBALS), jobs=p["jobs"],
                             container_dump=f"{inside.rstrip('/')}/{lib.DUMP}" if inside else None)
        details.update(seconds=round(time.monotonic() - started, 1), jobs=p["jobs"])
        if p["check_tables"]:
            missing = db.missing_tables(dump)
            if missing:
                module.fail_json(
                    msg=(f"{host}: the restore of {snap['path']} into {p['container']} did not bring back every table "
                         f"of the snapshot: {len(missing)} missing ({', '.join(missing[:10])})."),
                    snapshot=snap, restore=details, missing=missing, snapshots=_short(snaps))
            details["tables"] = len(db.tables())
        module.exit_json(changed=True, snapshot=snap, restore=details, snapshots=_short(snaps))
    except lib.SnapshotError as exc:
        text = str(exc)
        module.fail_json(msg=text if text.startswith(f"{host}: ") else f"{host}: {text}")


if __name__ == "__main__":
    main()
