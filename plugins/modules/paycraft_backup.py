#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_backup
short_description: Take, retain, copy off-site, verify and drill backups of the PayCraft database
version_added: 0.1.0
description:
  - A backup is an upgrade snapshot (M(paycraft.selfhost.paycraft_snapshot)) with more in its manifest -
    C(pg_dump -Fc) plus C(pg_dumpall --globals-only) in a C(<UTC time>-<version>) directory (0700, files 0600)
    under O(backup_dir), the manifest holding sizes and sha256, so C(rollback.yml) restores a backup too.
  - The manifest also holds the row count and a checksum of every table, read in the same snapshot the dump
    is taken from (C(pg_dump --snapshot) of a REPEATABLE READ transaction), so a drill compares like with like.
  - O(state=present) takes a backup, encrypts it to O(age_recipients) when given (the host only holds public
    keys), removes exactly the backups past both retention limits (O(keep_count) and O(keep_days)) and copies
    it to the O(offsite) target, verified by the sha256 of every file read back at the far end. A failed copy
    fails the task, is recorded in C(offsite.json) beside the backups, reported by the next run, which copies
    what is still missing.
  - O(state=verified) checks the files of a backup (O(name), or the newest) against the manifest and names
    each file that does not match. Nothing changes.
  - O(state=drilled) verifies a backup, restores it into a throw-away database of the same PostgreSQL
    (C(paycraft_drill_*)), compares the rows and checksum of every table with the manifest, drops the
    database and reports per table. Globals are not applied; nothing live is touched. An encrypted backup
    needs O(plain_dir), its files decrypted on the controller (O(state=decrypted)).
  - O(state=decrypted) decrypts the backup at O(path) with the age O(identity) into O(dest). Run it on the
    controller (C(delegate_to) C(localhost)); the identity never goes to the PayCraft host.
  - O(state=fetched) brings the off-site copy of a backup (O(name)) back into O(dest) to be drilled or
    restored.
  - O(state=listed) lists the backups and the off-site status. Nothing changes.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description:
      - O(state=present) reports the backups retention would remove; O(state=drilled) only verifies the checksums.
  diff_mode:
    support: none
    description: Backups are files written whole, so no diff is shown.
options:
  state:
    description: What to do.
    type: str
    choices: [present, verified, drilled, decrypted, fetched, listed]
    default: present
  backup_dir:
    description: Where backups live (outside the Docker volume), 0700.
    type: path
    default: /var/backups/paycraft-backups
  version:
    description: The PayCraft version the database is at, in the backup's name and manifest (O(state=present)).
    type: str
    default: unknown
  name:
    description: The backup (directory name or path) to verify, drill or fetch; the newest when omitted.
    type: str
  keep_count:
    description: The newest backups always kept by count.
    type: int
    default: 7
  keep_days:
    description:
      - Backups younger than this many days are always kept. A backup is removed only when it is past both
        limits - not among the newest O(keep_count) and older than O(keep_days).
    type: float
    default: 7
  age_recipients:
    description: age public keys (C(age1...)) to encrypt to; empty stores the backups unencrypted.
    type: list
    elements: str
    default: []
  offsite:
    description: The one off-site target.
    type: dict
    default: {}
    suboptions:
      kind:
        description: C(none), C(path) (a mounted directory), C(rsync) (over SSH) or C(restic) (a repository).
        type: str
        choices: [none, path, rsync, restic]
        default: none
      dest:
        description:
          - The directory (C(path)), C(user@host:/dir) (C(rsync)) or the repository (C(restic)).
          - A password in a URL (C(rest:https://user:password@host/repo)) is masked in every output.
        type: str
        default: ""
      ssh_key:
        description: The private key on the PayCraft host that logs in to the backup host (C(rsync)).
        type: path
      ssh_port:
        description: The SSH port of the backup host.
        type: int
        default: 22
      ssh_options:
        description: C(ssh -o) options, for example C(UserKnownHostsFile=/etc/paycraft/backup_known_hosts).
        type: list
        elements: str
        default: []
      password_file:
        description: The file on the PayCraft host holding the restic repository's password.
        type: path
      env:
        description: Environment for restic (for example the credentials of an S3 repository).
        type: dict
        default: {}
  plain_dir:
    description: The decrypted files of an encrypted backup, for O(state=drilled).
    type: path
  path:
    description: The backup directory to decrypt (O(state=decrypted)).
    type: path
  identity:
    description: The age identity file (O(state=decrypted)), on the machine the task runs on.
    type: path
  dest:
    description: Where O(state=decrypted) and O(state=fetched) write (a directory, 0700).
    type: path
  collection_version:
    description: Recorded in the manifest.
    type: str
    default: ""
  container:
    description: The database container whose tools dump and restore.
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
  timeout:
    description: Seconds any one dump, restore or copy command may take.
    type: int
    default: 3600
  operation_file:
    description: The operation record; a backup it names (the one a rollback restored) is never removed by retention.
    type: path
    default: /etc/paycraft/operation.json
  reserve_mb:
    description:
      - O(state=present) refuses before writing anything when the free space of O(backup_dir) is below
        C(pg_database_size) plus this many MiB (the message names the free and needed bytes, the path, the host).
    type: int
    default: 256
requirements:
  - the docker CLI on the managed host and a running database container
  - age to encrypt or decrypt, rsync and ssh or restic for the off-site copy
"""

EXAMPLES = r"""
- name: Take a backup, keep 7 and a week, copy it over SSH
  paycraft.selfhost.paycraft_backup:
    version: v1.0.0
    offsite:
      kind: rsync
      dest: paycraft@backup.example.org:/srv/backups/paycraft
      ssh_key: /etc/paycraft/backup_ssh_key
      ssh_options: [UserKnownHostsFile=/etc/paycraft/backup_known_hosts]

- name: Drill the newest backup
  paycraft.selfhost.paycraft_backup:
    state: drilled
  register: drill

- name: Decrypt an encrypted backup on the controller
  paycraft.selfhost.paycraft_backup:
    state: decrypted
    path: /tmp/fetched/20261129T031500Z-v1.0.0
    identity: ~/.config/paycraft/backup-identity.txt
    dest: /tmp/plain/20261129T031500Z-v1.0.0
  delegate_to: localhost
"""

RETURN = r"""
backup:
  description: The manifest of the backup taken, verified or drilled (with C(path) and C(name)).
  returned: states present, verified, drilled, decrypted
  type: dict
removed:
  description: The backups retention removed (C(name), C(path), C(created_at)); in check mode, those it would.
  returned: state present
  type: list
  elements: dict
offsite:
  description: The copies made and verified (C(copied)) and the off-site copies retention removed.
  returned: state present
  type: dict
previous_failure:
  description: What the last run's failed off-site copy was, or null.
  returned: states present, listed
  type: str
drill:
  description: The drill's report (C(passed), C(tables) with rows and checksums expected and restored, C(timings)).
  returned: state drilled
  type: dict
lines:
  description: The run or the drill as an operator reads it, one line each.
  returned: states present, drilled
  type: list
  elements: str
fetched:
  description: The local directory the off-site copy was brought back to.
  returned: state fetched
  type: str
backups:
  description: Every complete backup in backup_dir, oldest first (name, version, created_at, encrypted, path).
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import backup as lib
from ansible_collections.paycraft.selfhost.plugins.module_utils import redact


def _short(backups):
    return [{"name": m["name"], "version": m.get("version"), "created_at": m.get("created_at"),
             "encrypted": bool(m.get("encryption")), "path": m["path"]} for m in backups]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present",
                       choices=["present", "verified", "drilled", "decrypted", "fetched", "listed"]),
            backup_dir=dict(type="path", default="/var/backups/paycraft-backups"),
            version=dict(type="str", default="unknown"),
            name=dict(type="str"),
            keep_count=dict(type="int", default=7),
            keep_days=dict(type="float", default=7),
            age_recipients=dict(type="list", elements="str", default=[]),
            offsite=dict(type="dict", default={}, options=dict(
                kind=dict(type="str", default="none", choices=list(lib.TARGET_KINDS)),
                dest=dict(type="str", default=""),
                ssh_key=dict(type="path", no_log=False),
                ssh_port=dict(type="int", default=22),
                ssh_options=dict(type="list", elements="str", default=[]),
                password_file=dict(type="path", no_log=False),
                env=dict(type="dict", default={}, no_log=True),
            )),
            plain_dir=dict(type="path"),
            path=dict(type="path"),
            identity=dict(type="path"),
            dest=dict(type="path"),
            collection_version=dict(type="str", default=""),
            container=dict(type="str", default="paycraft_db"),
            db_user=dict(type="str", default="postgres"),
            db_name=dict(type="str", default="postgres"),
            timeout=dict(type="int", default=3600),
            reserve_mb=dict(type="int", default=256),
            operation_file=dict(type="path", default="/etc/paycraft/operation.json"),
        ),
        required_if=[("state", "decrypted", ("path", "identity", "dest")), ("state", "fetched", ("dest",))],
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    backup_dir = p["backup_dir"]
    host = os.uname()[1]
    off = p["offsite"] or {}
    # a password in the off-site URL (restic's rest:https://user:password@...) is kept out of every output
    for secret in redact.url_passwords(off.get("dest") or ""):
        module.no_log_values.add(secret)
    try:
        if state == "decrypted":
            if module.check_mode:
                module.exit_json(changed=True, backups=[])
            manifest = lib.decrypt(p["path"], p["identity"], p["dest"], age=module.get_bin_path("age", required=True))
            module.exit_json(changed=True, backup=manifest, backups=[])

        target = lib.Target(off.get("kind") or "none", dest=off.get("dest") or "", ssh_key=off.get("ssh_key"),
                            ssh_port=off.get("ssh_port") or 22, ssh_options=off.get("ssh_options") or [],
                            password_file=off.get("password_file"), env=off.get("env") or {}, timeout=p["timeout"])
        docker = module.get_bin_path("docker", required=state in ("present", "drilled")) or "docker"
        db = lib.Database(p["container"], user=p["db_user"], database=p["db_name"], docker=docker,
                          timeout=p["timeout"])

        if state == "listed":
            status = lib.read_status(backup_dir)
            module.exit_json(changed=False, backups=_short(lib.list_backups(backup_dir)), offsite_status=status,
                             previous_failure=lib.previous_failure_line(status))

        if state == "present":
            if module.check_mode:
                removed = lib.prune(backup_dir, p["keep_count"], p["keep_days"], dry_run=True) \
                    if os.path.isdir(backup_dir) else []
                module.exit_json(changed=True, backup={}, removed=removed, offsite=None,
                                 previous_failure=lib.previous_failure_line(lib.read_status(backup_dir)),
                                 backups=_short(lib.list_backups(backup_dir)))
            if p["age_recipients"]:
                module.get_bin_path("age", required=True)
            try:
                result = lib.run(backup_dir, db, p["version"], p["keep_count"], p["keep_days"], target=target,
                                 recipients=p["age_recipients"], collection_version=p["collection_version"],
                                 reserve=p["reserve_mb"] * 1048576,
                                 protect=tuple(filter(None, [lib.snapshot.recorded_snapshot(p["operation_file"])])))
            except lib.BackupError as exc:
                status = lib.read_status(backup_dir)
                text = str(exc)
                module.fail_json(msg=text if text.startswith(f"{host}: ") else f"{host}: {text}", offsite_status=status,
                                 backups=_short(lib.list_backups(backup_dir)))
            offsite = result["offsite"] or {}
            module.exit_json(changed=True, backup=result["backup"], removed=result["removed"],
                             offsite={"copied": offsite.get("copied", []), "removed": result["offsite_removed"]},
                             previous_failure=result["previous_failure"], lines=lib.run_lines(result),
                             backups=_short(lib.list_backups(backup_dir)))

        if state == "fetched":
            name = p["name"] or lib.find_backup(backup_dir)["name"]
            if module.check_mode:
                module.exit_json(changed=True, fetched=os.path.join(p["dest"], name), backups=[])
            fetched = target.fetch(name, p["dest"])
            module.exit_json(changed=True, fetched=fetched, backups=_short(lib.list_backups(backup_dir)))

        # verified / drilled
        chosen = lib.find_backup(backup_dir, p["name"])
        backups = _short(lib.list_backups(backup_dir))
        problems = lib.verify(chosen["path"])
        if problems:
            module.fail_json(
                msg=(f"{host}: backup {chosen['name']} is damaged, nothing was restored: " + "; ".join(problems)
                     + f". Drill another one: -e paycraft_backup_drill_name=<name> (ls -l {backup_dir})"),
                problems=problems, backup=chosen, backups=backups)
        if state == "verified" or module.check_mode:
            module.exit_json(changed=False, backup=chosen, backups=backups)
        report = lib.drill(db, chosen["path"], plain_dir=p["plain_dir"])
        lines = lib.drill_lines(report)
        if not report["passed"]:
            module.fail_json(msg=f"{host}: the drill of {chosen['name']} FAILED: "
                                 + "; ".join(ln for ln in lines if not ln.startswith("OK")),
                             drill=report, lines=lines, backup=chosen, backups=backups)
        module.exit_json(changed=False, drill=report, lines=lines, backup=chosen, backups=backups)
    except lib.SnapshotError as exc:
        text = str(exc)
        module.fail_json(msg=text if text.startswith(f"{host}: ") else f"{host}: {text}")


if __name__ == "__main__":
    main()
