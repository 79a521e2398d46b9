#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)



DOCUMENTATION = r"""
---
module: paycraft_converged
short_description: Tell whether a PayCraft host is exactly as the last successful site.yml run left it
version_added: 0.1.0
description:
  - Reads in one pass what a full C(site.yml) run converges - the checkout (at O(version), no changed
    tracked files), the files the roles manage outside git's view (O(env_file), O(override_file) and
    O(license_file) by content, mode and owner; O(env_link) must be a link to O(env_file)), every container
    of the compose project (the configuration hash compose wants against the one it was created with, its
    id, a digest of its environment, its image, running and healthy), and the migration ledger's content
    (versions, checksums, when each was applied, the database's system identifier) against the migration
    files (the same files the migration engine applies; hidden C(.*.sql) files are not migrations).
  - With O(state=check) it compares that with the record written by the last successful full run and
    with O(inputs), a digest of the run's inputs. C(converged) is true only when everything is
    unchanged and nothing is wrong; otherwise C(reasons) says why a full run is needed.
  - With O(state=present) it writes the record (0600), after a successful full run.
  - Never changes the stack; only O(state=present) writes O(path).
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: O(state=check) runs in check mode; O(state=present) reports what it would write.
  diff_mode:
    support: none
    description: The result lists the reasons a full run is needed; there is no diff.
options:
  state:
    description: V(check) compares, V(present) records.
    type: str
    choices: [check, present]
    default: check
  path:
    description: The record.
    type: path
    default: /etc/paycraft/converged.json
  inputs:
    description: Digest of the run's inputs (inventory variables, collection code); a change forces a full run.
    type: str
    required: true
  version:
    description: The release tag the checkout must be at.
    type: str
    required: true
  checkout:
    description: The PayCraft checkout.
    type: path
    required: true
  project_dir:
    description: The compose project directory (C(infra/selfhost)).
    type: path
    required: true
  compose_project:
    description: Compose project name.
    type: str
    default: selfhost
  compose_files:
    description: Compose files, as the stack role passes them.
    type: list
    elements: str
    required: true
  env_file:
    description:
      - The env file compose reads. Its C(PAYCRAFT_DB_PASSWORD) is the password for the ledger when
        O(login_password) is empty, read on the host, so that no secret has to pass through the play.
    type: path
    required: true
  override_file:
    description: The compose override the stack role writes.
    type: path
    required: true
  env_link:
    description:
      - The C(.env) link in the compose project directory, which must point at O(env_file).
        Empty when the link is not managed.
    type: path
  license_file:
    description: The Enterprise licence file, when one is installed. Empty when none is managed.
    type: path
  fill_dir:
    description:
      - The directory of the collection's own files for the release's gaps (its kong file and router
        function). Every file under it is compared by content, mode and owner. Empty, or a directory
        that does not exist, when nothing is filled.
    type: path
  migrations_dir:
    description: The release's migrations.
    type: path
    required: true
  ledger_table:
    description:
      - The migration ledger, C(table) or C(schema.table), as P(paycraft.selfhost.paycraft_migrate#module) uses it.
    type: str
    default: _paycraft_migrations
extends_documentation_fragment:
  - paycraft.selfhost.postgres
requirements:
  - psycopg2 on the managed host
  - the docker CLI with Compose v2 and git on the managed host
"""

EXAMPLES = r"""
- name: Is the host still converged?
  paycraft.selfhost.paycraft_converged:
    inputs: "{{ paycraft_run_inputs }}"
    version: v1.0.0
    checkout: /opt/paycraft/src
    project_dir: /opt/paycraft/src/infra/selfhost
    compose_files: [docker-compose.yaml, /etc/paycraft/compose.override.yml]
    env_file: /etc/paycraft/paycraft.env
    override_file: /etc/paycraft/compose.override.yml
    migrations_dir: /opt/paycraft/src/server/migrations
  register: converged

- name: Record the converged state after a successful run
  paycraft.selfhost.paycraft_converged:
    state: present
    inputs: "{{ paycraft_run_inputs }}"
    version: v1.0.0
    checkout: /opt/paycraft/src
    project_dir: /opt/paycraft/src/infra/selfhost
    compose_files: [docker-compose.yaml, /etc/paycraft/compose.override.yml]
    env_file: /etc/paycraft/paycraft.env
    override_file: /etc/paycraft/compose.override.yml
    migrations_dir: /opt/paycraft/src/server/migrations
"""

RETURN = r"""
converged:
  description: True when nothing a full run does would change anything (O(state=check)).
  returned: always
  type: bool
reasons:
  description: Why a full run is needed; empty when converged.
  returned: always
  type: list
  elements: str
  sample: ["service dashboard is not running"]
public_env:
  description:
    - The public values of the env file (C(PAYCRAFT_ANON_KEY), C(PAYCRAFT_API_URL), C(PAYCRAFT_DASHBOARD_URL)),
      which the runbook says are safe to embed in the dashboard and the SDK; the smoke test sends the anon key.
  returned: when converged
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli, _postgres, keys
from ansible_collections.paycraft.selfhost.plugins.module_utils import converged as lib
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile, EnvFileError

# what the runbook calls safe to embed in the dashboard and the SDK: the one shape of paycraft_env
PUBLIC_KEYS = keys.ENV_FACT_KEYS


def main():
    argument_spec = _postgres.postgres_common_argument_spec()
    argument_spec.update(
        dict(
            state=dict(type="str", choices=["check", "present"], default="check"),
            path=dict(type="path", default="/etc/paycraft/converged.json"),
            inputs=dict(type="str", required=True),
            version=dict(type="str", required=True),
            checkout=dict(type="path", required=True),
            project_dir=dict(type="path", required=True),
            compose_project=dict(type="str", default="selfhost"),
            compose_files=dict(type="list", elements="str", required=True),
            env_file=dict(type="path", required=True),
            override_file=dict(type="path", required=True),
            env_link=dict(type="path"),
            license_file=dict(type="path"),
            fill_dir=dict(type="path"),
            migrations_dir=dict(type="path", required=True),
            ledger_table=dict(type="str", default="_paycraft_migrations"),
        )
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        env = EnvFile.read(p["env_file"]).as_dict()
    except (OSError, EnvFileError):
        env = {}
    params = dict(p)
    params["docker_cli"] = module.get_bin_path("docker")
    try:
        params["db"] = _postgres.connection_params(p)
    except _postgres.PostgresError:  # no readable env file: the ledger read names the failed login
        params["db"] = _postgres.connection_params({**p, "env_file": None})
    state = lib.read_state(p["path"])
    probe = lib.Probe(docker=params["docker_cli"] or "docker", runner=_cli.module_runner(module))
    result = lib.check(params, state, probe)

    if p["state"] == "check":
        public = {k: env[k] for k in PUBLIC_KEYS if k in env} if result["converged"] else {}
        module.exit_json(changed=False, converged=result["converged"], reasons=result["reasons"], public_env=public)

    if result["problems"]:
        module.fail_json(msg="Not recording a converged state on this host: " + "; ".join(result["problems"]),
                         converged=False, reasons=result["reasons"])
    content = lib.render_state(p["inputs"], result["live"])
    if module.check_mode:
        module.exit_json(changed=lib.read_text(p["path"]) != content, converged=True, reasons=[])
    changed = lib.write_state(p["path"], content)
    module.exit_json(changed=changed, converged=True, reasons=[])


if __name__ == "__main__":
    main()
