#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_operation
short_description: Record an upgrade or rollback step by step on the host, under a host-level lock
version_added: 0.1.0
description:
  - Keeps the state file of the host's current or last upgrade/rollback (written atomically, 0600) with
    the operation, the versions, the snapshot, who runs it, and every step begun and done. A run that dies leaves it
    C(running), so the next run sees the unfinished operation instead of starting over.
  - O(state=check) reads it, and whether the lock is held and by whom. Nothing changes.
  - O(state=begin) takes the host-level lock (an C(flock) held by a small process on the host for the
    whole operation, at most O(lock_max_seconds)) and starts a new record; it refuses when the lock is
    held (naming the holder) or when the last operation is unfinished, unless O(adopt=true), which takes
    over the unfinished record (to complete its rollback or resume it).
  - O(state=step) records a step V(begun), V(done) or V(failed), with O(details).
  - O(state=finish) records the final O(status) and O(message) and releases the lock.
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
    description: Who runs the operation (controller, user, pid of ansible-playbook); shown to a second run.
    type: dict
    default: {}
  break_lock:
    description: Stop the holder process of a lock whose run is gone (its controller process died), then take it.
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
    description: Final status (O(state=finish)).
    type: str
    choices: [done, rolled_back, failed, abandoned]
    default: done
  message:
    description: Final message (O(state=finish)).
    type: str
    default: ""
  lock_max_seconds:
    description: The lock is given up by itself after this many seconds, even if the run never releases it.
    type: int
    default: 7200
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
    holder: {controller: "{{ lookup('pipe', 'hostname') }}", user: "{{ lookup('env', 'USER') }}"}

- name: Record a step
  paycraft.selfhost.paycraft_operation:
    state: step
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
description:
  description: One line about the record, for messages.
  returned: always
  type: str
lock_held:
  description: Whether the lock is held by a process (before the change).
  returned: always
  type: bool
lock_holder:
  description: What the holder recorded (controller, user, pid, since, holder_pid).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
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
            break_lock=dict(type="bool", default=False),
            adopt=dict(type="bool", default=False),
            step=dict(type="str"),
            step_status=dict(type="str", choices=["begun", "done", "failed"], default="done"),
            details=dict(type="dict", default={}),
            status=dict(type="str", choices=["done", "rolled_back", "failed", "abandoned"], default="done"),
            message=dict(type="str", default=""),
            lock_max_seconds=dict(type="int", default=7200),
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
    held = lib.lock_is_held(lock)
    holder = lib.read_lock_info(lock) if held else {}
    out = dict(lock_held=held, lock_holder=holder)

    def done(changed, rec):
        module.exit_json(changed=changed, operation=rec or {}, unfinished=lib.is_unfinished(rec),
                         description=lib.describe(rec) if rec else "", **out)

    if p["state"] == "check":
        done(False, record)

    if module.check_mode:
        done(True, record)

    if p["state"] == "begin":
        if held and not p["break_lock"]:
            module.fail_json(
                msg=(f"{host}: another upgrade or rollback holds the lock of this host: {lib.holder_text(holder)}. "
                     "Nothing was changed. Wait for it to finish; if that run is gone (its controller was "
                     "killed), re-run with -e paycraft_operation_break_lock=true."), **out)
        if lib.is_unfinished(record) and not p["adopt"]:
            module.fail_json(
                msg=(f"{host}: the last operation did not finish: {lib.describe(record)}. Nothing was changed. "
                     "Re-run upgrade.yml, rollback.yml or site.yml without extra variables to complete its "
                     "rollback, or with -e paycraft_operation_resume=true to resume it."), **out)
        if held:
            lib.release(lock)
        if not os.path.isdir(os.path.dirname(path)):
            ensure_private_dir(os.path.dirname(path))
        info = dict(p["holder"], operation=p["operation"], from_version=p["from_version"],
                    to_version=p["to_version"], since=lib.now_iso())
        try:
            info = lib.acquire(lock, info, max_seconds=p["lock_max_seconds"])
        except lib.OperationError as exc:
            module.fail_json(msg=f"{host}: another upgrade or rollback holds the lock of this host: {exc}. "
                                 "Nothing was changed.", **out)
        if lib.is_unfinished(record) and p["adopt"]:
            record["holder"] = info
            record.setdefault("adopted", []).append({"at": lib.now_iso(), "by": info, "as": p["operation"]})
        else:
            record = lib.new_state(p["operation"], p["from_version"], p["to_version"], info, p["details"])
        lib.write_state(path, record)
        done(True, record)

    if record is None:
        module.fail_json(msg=f"{host}: no operation recorded in {path}; begin one first.", **out)

    if p["state"] == "step":
        lib.mark_step(record, p["step"], p["step_status"], p["details"])
        if p["step"] == "snapshot" and p["step_status"] == "done" and p["details"].get("path"):
            record["snapshot"] = p["details"]["path"]
        lib.write_state(path, record)
        done(True, record)

    # finish
    record.update(p["details"])
    lib.finish(record, p["status"], p["message"])
    lib.write_state(path, record)
    lib.release(lock)
    done(True, record)


if __name__ == "__main__":
    main()
