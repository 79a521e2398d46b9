#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_operation
short_description: Record an upgrade or rollback step by step on the host, under the host lock
version_added: 0.1.0
description:
  - Keeps the state file of the host's current or last upgrade/rollback (written atomically, 0600) with
    the operation, the versions, the snapshot, who runs it, and every step begun and done. A run that dies leaves it
    C(running), so the next run sees the unfinished operation instead of starting over.
  - O(state=check) reads it, and whether the lock is held and by whom. Nothing changes.
  - O(state=begin) starts a new record under the host lock (M(paycraft.selfhost.paycraft_lock), a lease its
    holder renews while the run lives). The playbooks take that lock first (roles/common tasks/lock.yml),
    and begin finds it held by the same run (O(holder) (its C(run_id))); a role used without it has begin take the
    lock itself, and finish give it back. It refuses when another run holds the lock (naming the holder
    and what it does) or when the last operation is unfinished, unless O(adopt=true), which takes over
    the unfinished record (to complete its rollback or resume it).
  - O(state=step) records a step V(begun), V(done) or V(failed), with O(details).
  - O(state=finish) records the final O(status) and O(message), and releases the lock when begin took it.
  - O(state=step) and O(state=finish) refuse, changing nothing, when the lock is not held by the run
    O(run_id) (default, the run recorded by begin), that is when another run holds it or it was lost.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: Only O(state=check) reads; the others report what they would write.
  diff_mode:
    support: none
    description: The record is a state file, not a managed document, so no diff is shown.
options:
  state:
    description: What to do.
    type: str
    choices: [check, begin, step, finish]
    default: check
  path:
    description: The state file.
    type: path
    default: /etc/paycraft/operation.json
  operation:
    description: V(upgrade) or V(rollback) (O(state=begin)).
    type: str
    choices: [upgrade, rollback]
  from_version:
    description: The version installed when the operation starts.
    type: str
    default: ""
  to_version:
    description: The version the operation moves to.
    type: str
    default: ""
  holder:
    description:
      - Who runs the operation (run_id, controller, user, pid of ansible-playbook, playbook); shown to a second run.
    type: dict
    default: {}
  break_lock:
    description: Stop the holder process of a lock held by another run (only when that run is gone), then take it.
    type: bool
    default: false
  adopt:
    description: With O(state=begin), take over an unfinished record instead of refusing.
    type: bool
    default: false
  step:
    description: Step name (O(state=step)).
    type: str
  step_status:
    description: V(begun), V(done) or V(failed).
    type: str
    choices: [begun, done, failed]
    default: done
  details:
    description:
      - Extra values recorded with the step, or top-level values of the record
        (O(state=begin), O(state=finish)).
    type: dict
    default: {}
  status:
    description:
      - Final status (O(state=finish)).
      - V(refused) is accepted only while the record shows nothing that changed the live database (steps
        snapshot, stop, move_aside, keep, and no keep done, so the copy of the live volume did not complete);
        otherwise the module fails and the record stays unfinished.
    type: str
    choices: [done, rolled_back, failed, abandoned, refused]
    default: done
  message:
    description: Final message (O(state=finish)).
    type: str
    default: ""
  run_id:
    description: The run that records a step or the end (O(state=step), O(state=finish)); empty, the run begin recorded.
    type: str
    default: ""
  lock_heartbeat_seconds:
    description: When begin takes the lock itself, how often its holder renews the lease.
    type: float
    default: 5
  lock_lease_seconds:
    description: When begin takes the lock itself, the lease (a run that records no step for this long loses it).
    type: float
    default: 300
  lock_max_seconds:
    description: Ignored (the lock used to expire after this many seconds; it is a renewed lease now).
    type: int
"""

EXAMPLES = r"""
- name: Is an upgrade or rollback unfinished?
  paycraft.selfhost.paycraft_operation:
    state: check
  register: op

- name: Lock the host and start the record
  paycraft.selfhost.paycraft_operation:
    state: begin
    operation: upgrade
    from_version: v1.0.0
    to_version: v1.1.0
    holder: "{{ paycraft_lock_holder }}"

- name: Record a step
  paycraft.selfhost.paycraft_operation:
    state: step
    run_id: "{{ paycraft_lock_holder.run_id }}"
    step: snapshot
    step_status: done
    details: {path: /var/backups/paycraft/20261128T230000Z-v1.0.0}

- name: Done; release the lock
  paycraft.selfhost.paycraft_operation:
    state: finish
    status: done
"""

RETURN = r"""
operation:
  description: The record (after the change).
  returned: always
  type: dict
unfinished:
  description: True when the record says an operation is still running (a run died).
  returned: always
  type: bool
restored:
  description:
    - True when the record's restore of its snapshot finished (a C(restore) step done after the last C(keep) done).
    - A run completing the operation must not restore it again; writes may have been acknowledged since.
  returned: always
  type: bool
description:
  description: One line about the record, for messages.
  returned: always
  type: str
lock_held:
  description: Whether the lock is held by a process (before the change).
  returned: always
  type: bool
lock_state:
  description: C(free), C(held) or C(stale) (its holder stopped renewing), before the change.
  returned: always
  type: str
lock_holder:
  description:
    - What the holder recorded (run_id, controller, user, pid, playbook, operation, step, since, renewed_at,
      holder_pid).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import lease
from ansible_collections.paycraft.selfhost.plugins.module_utils import operation as lib
from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import ensure_private_dir


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["check", "begin", "step", "finish"], default="check"),
            path=dict(type="path", default="/etc/paycraft/operation.json"),
            operation=dict(type="str", choices=["upgrade", "rollback"]),
            from_version=dict(type="str", default=""),
            to_version=dict(type="str", default=""),
            holder=dict(type="dict", default={}),
            run_id=dict(type="str", default=""),
            break_lock=dict(type="bool", default=False),
            adopt=dict(type="bool", default=False),
            step=dict(type="str"),
            step_status=dict(type="str", choices=["begun", "done", "failed"], default="done"),
            details=dict(type="dict", default={}),
            status=dict(type="str", choices=["done", "rolled_back", "failed", "abandoned", "refused"], default="done"),
            message=dict(type="str", default=""),
            lock_heartbeat_seconds=dict(type="float", default=5),
            lock_lease_seconds=dict(type="float", default=300),
            lock_max_seconds=dict(type="int"),
        ),
        required_if=[("state", "begin", ("operation",)), ("state", "step", ("step",))],
        supports_check_mode=True,
    )
    p = module.params
    host = os.uname()[1]
    path = p["path"]
    lock = lib.lock_path(path)
    try:
        record = lib.read_state(path)
    except lib.OperationError as exc:
        module.fail_json(msg=f"{host}: {exc}")
    lock_state, holder = lease.status(lock)
    out = dict(lock_held=lock_state != "free", lock_state=lock_state,
               lock_holder=holder if lock_state != "free" else {})

    def done(changed, rec):
        module.exit_json(changed=changed, operation=rec or {}, unfinished=lib.is_unfinished(rec),
                         restored=bool(rec) and lib.restored(rec),
                         description=lib.describe(rec) if rec else "", **out)

    if p["state"] == "check":
        done(False, record)

    if module.check_mode:
        done(True, record)

    if p["state"] == "begin":
        run_id = p["holder"].get("run_id") or ""
        mine = lock_state != "free" and run_id and holder.get("run_id") == run_id
        if lock_state == "held" and not mine and not p["break_lock"]:
            module.fail_json(
                msg=(f"{host}: another operation holds the lock of this host: {lease.describe(holder)}. "
                     "Nothing was changed. Wait for it to finish; if that run is gone (its controller was "
                     "killed), re-run with -e paycraft_lock_break=true."), **out)
        if lib.is_unfinished(record) and not p["adopt"]:
            module.fail_json(
                msg=(f"{host}: the last operation did not finish: {lib.describe(record)}. Nothing was changed. "
                     "Re-run upgrade.yml, rollback.yml or site.yml without extra variables to complete its "
                     "rollback, or with -e paycraft_operation_resume=true to resume it."), **out)
        if not os.path.isdir(os.path.dirname(path)):
            ensure_private_dir(os.path.dirname(path))
        doing = f"{p['operation']} {p['from_version'] or '?'} -> {p['to_version'] or '?'}"
        if mine:
            info = lease.renew(lock, run_id, step="begin", operation=doing)
        else:
            # a run that did not take the host lock first (the role used without common/tasks/lock.yml):
            # begin takes it, and finish gives it back
            holder_in = dict(p["holder"], run_id=run_id or f"{host}:operation:{os.getpid()}", acquired_by="operation")
            try:
                info = lease.acquire(lock, holder_in, doing, heartbeat=p["lock_heartbeat_seconds"],
                                     lease=p["lock_lease_seconds"], step="begin", break_lock=p["break_lock"])
            except lease.LockError as exc:
                module.fail_json(msg=f"{host}: another operation holds the lock of this host: {exc}. "
                                     "Nothing was changed.", **out)
        info = {k: v for k, v in info.items() if k not in ("reused", "broke")}
        if lib.is_unfinished(record) and p["adopt"]:
            record["holder"] = info
            record.setdefault("adopted", []).append({"at": lib.now_iso(), "by": info, "as": p["operation"]})
        else:
            record = lib.new_state(p["operation"], p["from_version"], p["to_version"], info, p["details"])
        lib.write_state(path, record)
        done(True, record)

    if record is None:
        module.fail_json(msg=f"{host}: no operation recorded in {path}; begin one first.", **out)

    # step and finish: only the run that holds the lock writes the record
    run_id = p["run_id"] or (record.get("holder") or {}).get("run_id") or ""
    try:
        owner = lease.check_owner(lock, run_id)
    except lease.LockError as exc:
        module.fail_json(
            msg=(f"{host}: refused to record {'step ' + p['step'] if p['state'] == 'step' else 'the end'} of "
                 f"{record.get('operation', 'the operation')} {record.get('from_version', '?')} -> "
                 f"{record.get('to_version', '?')}: {exc}. The record ({path}) was not changed; this run must "
                 "stop here. Look at what the host runs now (cat " + lease.info_path(lock) + ") before re-running."),
            **out)

    if p["state"] == "step":
        lib.mark_step(record, p["step"], p["step_status"], p["details"])
        if p["step"] == "snapshot" and p["step_status"] == "done" and p["details"].get("path"):
            record["snapshot"] = p["details"]["path"]
        lib.write_state(path, record)
        lease.renew(lock, run_id, step=f"{p['step']} {p['step_status']}")
        done(True, record)

    # finish
    record.update(p["details"])
    try:
        lib.finish(record, p["status"], p["message"])
    except lib.OperationError as exc:
        module.fail_json(msg=f"{host}: {exc}. The record ({path}) was not changed.", **out)
    lib.write_state(path, record)
    if owner.get("acquired_by") == "operation":
        lease.release(lock, run_id)
    else:
        lease.renew(lock, run_id, step=f"{record.get('operation')} {p['status']}")
    done(True, record)


if __name__ == "__main__":
    main()
