#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_volume_swap
short_description: Exchange the data of two local Docker volumes in constant time, resumable after a kill
version_added: "0.1.0"
description:
  - O(state=exchanged) exchanges the data of the volumes O(live) and O(other) by three renames of their
    C(_data) directories (C(live/_data) -> C(live/_data.swap), C(other/_data) -> C(live/_data),
    C(live/_data.swap) -> C(other/_data)), with a journal O(journal) written before the first. A run killed at
    any point is finished by the next call with the same two volumes; a finished exchange is never done again.
  - O(state=check) only says whether the exchange is possible (RV(refused) empty) and changes nothing; it does
    not count running containers (they are stopped before the exchange). Without O(other) it checks O(live) against
    a new local volume (made in the same Docker volume root).
  - Refused (the task fails with the reason, nothing moved) when a driver is not C(local), a volume has
    driver options (a bind or network mount), the two are not on one filesystem, or a container runs with one
    of them.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: O(state=exchanged) reports what it would do.
  diff_mode:
    support: none
    description: Nothing is shown as a diff.
options:
  state:
    description: What to do.
    type: str
    choices: [exchanged, check]
    default: exchanged
  live:
    description: The volume whose name the stack mounts (afterwards it has the other's data).
    type: str
    required: true
  other:
    description: The other volume (afterwards it has the live volume's data). Required with O(state=exchanged).
    type: str
  journal:
    description: The exchange's journal (0600, kept marked done). Required with O(state=exchanged).
    type: path
requirements:
  - the docker CLI on the managed host, local volumes
"""

EXAMPLES = r"""
- name: Put the restored data under the live volume's name
  paycraft.selfhost.paycraft_volume_swap:
    live: selfhost_paycraft-db
    other: selfhost_paycraft-db-before-rollback-20261207T120000Z
    journal: /etc/paycraft/volume-swap.json
"""

RETURN = r"""
refused:
  description: Why the exchange is not possible (empty when it is).
  returned: always
  type: str
live_mountpoint:
  description: The live volume's C(_data) directory.
  returned: always
  type: str
other_mountpoint:
  description: The other volume's C(_data) directory.
  returned: always
  type: str
resumed:
  description: The call finished an exchange a killed run had begun.
  returned: state exchanged
  type: bool
steps:
  description: The renames this call made.
  returned: state exchanged
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import volume_swap as lib


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["exchanged", "check"], default="exchanged"),
            live=dict(type="str", required=True),
            other=dict(type="str"),
            journal=dict(type="path"),
        ),
        required_if=[("state", "exchanged", ("other", "journal"))],
        supports_check_mode=True,
    )
    p = module.params
    docker = module.get_bin_path("docker", required=True)
    host = os.uname()[1]
    try:
        live = lib.inspect(p["live"], docker=docker)
        other = lib.inspect(p["other"], docker=docker) if p["other"] else live
        running = ({} if p["state"] == "check"
                   else {name: lib.running_users(name, docker=docker) for name in (p["live"], p["other"])})
        refused = lib.refusal(live, other, running=running) or ""
        out = dict(refused=refused, live_mountpoint=live["mountpoint"], other_mountpoint=other["mountpoint"])
        if p["state"] == "check":
            module.exit_json(changed=False, **out)
        if refused:
            module.fail_json(msg=(f"{host}: the data of the volumes {p['live']} and {p['other']} cannot be exchanged: "
                                  f"{refused}. Nothing was moved."), **out)
        if module.check_mode:
            module.exit_json(changed=True, resumed=False, steps=[], **out)
        res = lib.exchange(live["mountpoint"], other["mountpoint"], p["journal"])
        module.exit_json(changed=res["changed"], resumed=res["resumed"], steps=res["steps"], **out)
    except lib.SwapError as exc:
        module.fail_json(msg=f"{host}: {exc}")


if __name__ == "__main__":
    main()
