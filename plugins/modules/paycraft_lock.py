#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_lock
short_description: The host lock every PayCraft operation takes, a lease renewed while its run lives
version_added: 0.2.0
description:
  - One lock per host for every play that changes it (site, upgrade, rollback, rotate, backup, drill,
    restore) and for the scheduled backup's runner. A holder process on the host keeps an C(flock) and
    renews a lease every O(heartbeat_seconds) while its run lives. The run proves it lives with
    O(state=renew) (the controller's keeper sends one every few seconds while C(ansible-playbook) runs).
    No renew for O(lease_seconds) and the holder gives the lock up by itself; there is no fixed deadline.
  - O(state=check) reports the lock (free, held, stale) and its holder. Nothing changes.
  - O(state=acquire) takes the lock for the run O(holder) (its C(run_id)), or returns it as it is when this run
    holds it already. Held by another run, it fails naming the holder (controller, user, pid,
    playbook) and what it does (operation and step), after waiting up to O(wait_seconds). A stale
    lock (its holder process stopped renewing) is broken; O(break_lock=true) breaks a live one.
  - O(state=renew) is the run's sign of life (and, with O(step), what it does now). It fails when the lock
    is no longer this run's.
  - O(state=release) gives the lock back when this run holds it.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: O(state=acquire) in check mode refuses when another run holds the lock, and takes nothing.
  diff_mode:
    support: none
    description: The lock is a process and state files, not a managed document.
options:
  state:
    description: What to do.
    type: str
    choices: [check, acquire, renew, release]
    default: check
  path:
    description: The lock file (its holder's record is C(<path>.json)).
    type: path
    default: /etc/paycraft/operation.json.lock
  holder:
    description:
      - Who takes the lock, shown to a second operation (O(state=acquire)).
      - C(run_id) (required) names the run; C(controller), C(user), C(pid), C(playbook) name who runs it.
    type: dict
    default: {}
  run_id:
    description: The run that renews or releases (O(state=renew), O(state=release)).
    type: str
    default: ""
  operation:
    description: What the run does (site, upgrade, rollback, rotate, backup, drill, ...).
    type: str
    default: ""
  step:
    description: The run's current step (shown to a second operation); O(state=acquire) without it records V(start).
    type: str
  heartbeat_seconds:
    description: How often the holder renews the lease.
    type: float
    default: 5
  lease_seconds:
    description: The holder gives the lock up when its run sent no sign of life for this long.
    type: float
    default: 300
  wait_seconds:
    description: With O(state=acquire), how long to wait for a lock held by another run before failing.
    type: float
    default: 0
  break_lock:
    description: Stop the holder of a live lock and take it (only when you know its run is gone).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Take the host lock for this run
  paycraft.selfhost.paycraft_lock:
    state: acquire
    operation: rotate
    holder: {run_id: "ctl:1234:5678", controller: ctl, user: ops, pid: 1234, playbook: rotate.yml}

- name: A sign of life, and the step this run is at
  paycraft.selfhost.paycraft_lock:
    state: renew
    run_id: "ctl:1234:5678"
    step: snapshot

- name: Give it back
  paycraft.selfhost.paycraft_lock:
    state: release
    run_id: "ctl:1234:5678"
"""

RETURN = r"""
lock:
  description: C(free), C(held) or C(stale), before the change.
  returned: always
  type: str
holder:
  description:
    - The holder's record (run_id, controller, user, pid, playbook, operation, step, since, renewed_at, holder_pid).
  returned: always
  type: dict
description:
  description: One line naming the holder and what it does.
  returned: always
  type: str
reused:
  description: O(state=acquire) found the lock already held by this run.
  returned: when state is acquire
  type: bool
broke:
  description: The record of a holder this call broke (stale, or O(break_lock=true)).
  returned: when a lock was broken
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import lease


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["check", "acquire", "renew", "release"], default="check"),
            path=dict(type="path", default="/etc/paycraft/operation.json.lock"),
            holder=dict(type="dict", default={}),
            run_id=dict(type="str", default=""),
            operation=dict(type="str", default=""),
            step=dict(type="str"),
            heartbeat_seconds=dict(type="float", default=5),
            lease_seconds=dict(type="float", default=300),
            wait_seconds=dict(type="float", default=0),
            break_lock=dict(type="bool", default=False),
        ),
        required_if=[("state", "renew", ("run_id",)), ("state", "release", ("run_id",))],
        supports_check_mode=True,
    )
    p = module.params
    host = os.uname()[1]
    lock = p["path"]
    state, info = lease.status(lock)
    out = dict(lock=state, holder=info, description=lease.describe(info) if state != "free" else "")

    if p["state"] == "check":
        module.exit_json(changed=False, **out)

    if p["state"] == "acquire":
        run_id = (p["holder"] or {}).get("run_id") or ""
        if not run_id:
            module.fail_json(msg=f"{host}: holder.run_id is required to take the host lock", **out)
        if p["heartbeat_seconds"] <= 0 or p["lease_seconds"] < 2 * p["heartbeat_seconds"]:
            module.fail_json(msg=f"{host}: the lease ({p['lease_seconds']} s) must be at least twice the heartbeat "
                                 f"({p['heartbeat_seconds']} s), and the heartbeat above 0", **out)
        mine = state != "free" and info.get("run_id") == run_id
        if module.check_mode:
            if state == "held" and not mine and not p["break_lock"]:
                module.fail_json(msg=refusal(host, info, p), **out)
            module.exit_json(changed=not mine, reused=mine, **out)
        try:
            got = lease.acquire(lock, dict(p["holder"]), p["operation"], heartbeat=p["heartbeat_seconds"],
                                lease=p["lease_seconds"], step=p["step"] or "start", break_lock=p["break_lock"],
                                wait=p["wait_seconds"])
        except lease.LockError as exc:
            out.update(holder=exc.info, lock=exc.status or state, description=lease.describe(exc.info))
            module.fail_json(msg=refusal(host, exc.info, p), **out)
        extra = {"broke": got.pop("broke")} if "broke" in got else {}
        reused = got.pop("reused", False)
        module.exit_json(changed=not reused, reused=reused, **dict(out, holder=got), **extra)

    if module.check_mode:
        module.exit_json(changed=False, **out)

    if p["state"] == "renew":
        try:
            lease.renew(lock, p["run_id"], step=p["step"], operation=p["operation"] or None)
        except lease.LockError as exc:
            module.fail_json(msg=f"{host}: {exc}", **out)
        module.exit_json(changed=False, **out)

    # release
    module.exit_json(changed=lease.release(lock, p["run_id"]), **out)


def refusal(host: str, info: dict, p: dict) -> str:
    waited = f" (waited {int(p['wait_seconds'])} s)" if p["wait_seconds"] else ""
    return (f"{host}: another operation holds the lock of this host{waited}: {lease.describe(info)}. "
            f"Nothing was changed. Wait for it to finish, then re-run this playbook. If that run is gone "
            f"(its controller died), its lock frees itself once its lease "
            f"({int(float(info.get('lease_seconds') or 0))} s) "
            f"passes without a sign of life; to take it now re-run with -e paycraft_lock_break=true.")


if __name__ == "__main__":
    main()
