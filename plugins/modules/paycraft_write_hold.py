#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_write_hold
short_description: Hold back (or let through again) every write at the gateway while an operation may restore
version_added: "0.9.0"
description:
  - O(state=present) writes the hold's record O(hold_file) (0600) and puts the hold into the collection's Kong
    file O(kong_file), in place (the gateway's bind mount sees the same file). Once the gateway is reloaded it
    answers every request but
    C(GET), C(HEAD), C(OPTIONS) and C(POST /rest/v1/rpc/<a STABLE or IMMUTABLE function of public>) with
    C(503) and C(Retry-After), unless the request carries the hold's pass header (the operation's own smoke test).
  - A hold already in force keeps its pass token; the read functions are read again from the database.
  - O(state=drained) waits until no statement or transaction of C(authenticator) or C(supabase_auth_admin) runs
    any more (run it after the gateway reload, before the snapshot).
  - O(state=absent) takes the hold out of the Kong file and removes the record; reload the gateway after it.
  - O(state=info) only reads the record.
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  state:
    description: What to do.
    type: str
    choices: [present, drained, absent, info]
    default: present
  hold_file:
    description: The hold's record (C(paycraft_write_hold_file)).
    type: path
    required: true
  kong_file:
    description:
      - The collection's Kong file. Default - the file O(gateway_container) reads (its bind mount at
        C(KONG_DECLARATIVE_CONFIG)). With no such container or mount only the record is written; a gateway
        started later by the stack role keeps the hold (M(paycraft.selfhost.paycraft_gateway_config) reads the
        record).
    type: path
  gateway_container:
    description: The gateway container whose Kong file is held (when O(kong_file) is not given).
    type: str
    default: paycraft_kong
  container:
    description: The database container (read functions, running requests).
    type: str
    default: paycraft_db
  operation:
    description: What holds (written into the record, shown by the doctor).
    type: str
    default: ""
  retry_after:
    description: Seconds a refused client is told to wait (C(Retry-After)).
    type: int
    default: 30
  drain_timeout:
    description: Seconds O(state=drained) waits for the running requests.
    type: int
    default: 60
attributes:
  check_mode:
    support: partial
    description: Can run in check mode and return changed status prediction without modifying target.
    details: O(state=info) and O(state=drained) run; the others report what they would do.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

EXAMPLES = r"""
- name: Hold writes back
  paycraft.selfhost.paycraft_write_hold:
    state: present
    hold_file: /etc/paycraft/write-hold.json
    operation: upgrade v1.0.0 -> v1.1.0

- name: Let writes through again
  paycraft.selfhost.paycraft_write_hold:
    state: absent
    hold_file: /etc/paycraft/write-hold.json
"""

RETURN = r"""
hold:
  description: The record of the hold in force (after the task), without its pass token; empty when none.
  returned: always
  type: dict
  sample: {operation: upgrade v1.0.0 -> v1.1.0, since: "2026-12-07T03:40:00Z", read_functions: [get_suite_config],
           retry_after: 30}
released:
  description: The record of the hold that O(state=absent) ended (without its pass token).
  returned: state absent
  type: dict
kong_file:
  description: The Kong file the hold was put into or taken out of; empty when there was none.
  returned: state present or absent
  type: str
waited:
  description: Seconds O(state=drained) waited.
  returned: state drained
  type: int
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli, gateway
from ansible_collections.paycraft.selfhost.plugins.module_utils import write_hold as wh


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "drained", "absent", "info"], default="present"),
            hold_file=dict(type="path", required=True),
            kong_file=dict(type="path"),
            gateway_container=dict(type="str", default="paycraft_kong"),
            container=dict(type="str", default="paycraft_db"),
            operation=dict(type="str", default=""),
            retry_after=dict(type="int", default=30),
            drain_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    host = os.uname()[1]
    runner = _cli.module_runner(module)
    hold_file = p["hold_file"]
    kong_file = p["kong_file"] or wh.gateway_file_of(runner, p["gateway_container"])
    try:
        record = wh.read_hold(hold_file)
        if p["state"] == "info":
            module.exit_json(changed=False, hold=wh.public(record))
        if p["state"] == "drained":
            waited = wh.wait_idle(runner, p["container"], p["drain_timeout"])
            module.exit_json(changed=False, hold=wh.public(record), waited=waited)
        if p["state"] == "absent":
            if module.check_mode:
                module.exit_json(changed=record is not None, hold={}, released=wh.public(record))
            released, changed = wh.release(hold_file, kong_file)
            module.exit_json(changed=changed, hold={}, released=wh.public(released), kong_file=kong_file or "")
        if module.check_mode:
            module.exit_json(changed=True, hold=wh.public(record))
        names = wh.read_functions(runner, p["container"])
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        record, _ = wh.take(hold_file, kong_file, p["operation"], names, p["retry_after"], now)
        module.exit_json(changed=True, hold=wh.public(record), kong_file=kong_file or "")
    except (wh.HoldError, gateway.GatewayError, OSError) as exc:
        module.fail_json(msg=(
            f"{host}: the write hold ({p['state']}) failed: {exc}. Nothing was restored or moved by this task; "
            f"the record is {hold_file}."))


if __name__ == "__main__":
    main()
