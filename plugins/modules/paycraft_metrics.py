#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_metrics
short_description: Write a PayCraft host's own metrics for node_exporter, or record a run's result for them
version_added: "0.10.0"
description:
  - O(state=written) reads what the host records and writes it in Prometheus's text format to O(out), for
    node_exporter's textfile collector. It reads the operation record O(operation_file), the host lock
    O(lock_file), the backups in O(backup_dir), the results file O(results_file), and the PayCraft
    containers as the Docker engine reports them. The file is replaced atomically, so node_exporter never
    reads half of it.
  - O(state=result) records the result of a run of kind O(kind) in O(results_file). The kinds are a backup
    run, a restore drill and a smoke run. The alert rules C(PayCraftBackupFailed), C(PayCraftDrillFailed) and
    C(PayCraftSmokeFailed) read them.
  - The metrics' names are those the alert rules of the monitoring role read
    (C(roles/monitoring/files/rules/paycraft.rules.yml)).
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  state:
    description: What to do.
    type: str
    choices: [written, result]
    default: written
  out:
    description: The C(.prom) file node_exporter's textfile collector reads (O(state=written)).
    type: path
  operation_file:
    description: The operation record.
    type: path
    default: /etc/paycraft/operation.json
  lock_file:
    description: The host lock (its C(.json) beside it says who holds it).
    type: path
    default: /etc/paycraft/operation.json.lock
  backup_dir:
    description: The backup directory (complete backups have a manifest of kind C(backup)). Empty leaves backups out.
    type: path
    default: ""
  results_file:
    description: The results file of backup runs, drills and smoke runs.
    type: path
    default: /etc/paycraft/results.json
  containers:
    description: Read the PayCraft containers from the Docker engine (C(paycraft_container_*)).
    type: bool
    default: true
  kind:
    description: The kind of run whose result O(state=result) records.
    type: str
    choices: [backup, drill, smoke]
  ok:
    description: Whether that run succeeded.
    type: bool
  detail:
    description: One line about the run (the backup's name, or why it failed); kept to 500 characters.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

EXAMPLES = r"""
- name: Write the host's metrics for node_exporter
  paycraft.selfhost.paycraft_metrics:
    out: /var/lib/prometheus/node-exporter/paycraft.prom
    backup_dir: /var/backups/paycraft

- name: Record that the smoke test passed
  paycraft.selfhost.paycraft_metrics:
    state: result
    kind: smoke
    ok: true
"""

RETURN = r"""
metrics:
  description: The text written (O(state=written)); it holds no secret.
  returned: state written
  type: str
result:
  description: The result recorded (O(state=result)).
  returned: state result
  type: dict
  sample: {ok: true, at: "2026-12-07T03:15:02Z", detail: 20261207T031500Z-v1.1.0}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli, lease, metrics, snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["written", "result"], default="written"),
            out=dict(type="path"),
            operation_file=dict(type="path", default="/etc/paycraft/operation.json"),
            lock_file=dict(type="path", default="/etc/paycraft/operation.json.lock"),
            backup_dir=dict(type="path", default=""),
            results_file=dict(type="path", default="/etc/paycraft/results.json"),
            containers=dict(type="bool", default=True),
            kind=dict(type="str", choices=list(metrics.RESULT_KINDS)),
            ok=dict(type="bool"),
            detail=dict(type="str", default=""),
        ),
        required_if=[("state", "written", ["out"]), ("state", "result", ["kind", "ok"])],
        supports_check_mode=True,
    )
    p = module.params
    host = os.uname()[1]
    try:
        if p["state"] == "result":
            entry = {"ok": p["ok"], "at": snapshot.utc_iso(), "detail": p["detail"][:500]}
            if not module.check_mode:
                results = metrics.record_result(p["results_file"], p["kind"], p["ok"], entry["at"], p["detail"])
                entry = results[p["kind"]]
            module.exit_json(changed=True, result=entry)
        cfg = {"operation_file": p["operation_file"], "lock_file": p["lock_file"], "backup_dir": p["backup_dir"],
               "results_file": p["results_file"], "containers": p["containers"]}
        text = metrics.render(metrics.collect(cfg, runner=_cli.module_runner(module), lock_status=lease.status))
        changed = metrics.differs(p["out"], text) if module.check_mode else metrics.write(p["out"], text)
        module.exit_json(changed=changed, metrics=text)
    except (metrics.MetricsError, OSError, ValueError) as exc:
        module.fail_json(msg=(f"{host}: the PayCraft metrics ({p['state']}) could not be written: {exc}. Nothing of "
                              f"the stack changed; run the same task again with -vvv to see the paths it read."))


if __name__ == "__main__":
    main()
