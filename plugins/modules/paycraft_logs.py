#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_logs
short_description: The last log lines of PayCraft's containers, with the secrets masked
version_added: 0.1.0
description:
  - Reads C(docker logs --tail) of each container and masks, in every line, the values of the env file's
    secret variables (names with C(SECRET), C(PASS), C(TOKEN), C(*_KEY), C(PRIVATE), C(CREDENTIAL)), every
    JWT-looking string (the anon and service role keys, users' access tokens) and every password in a URL.
  - Used by the stack role's diagnosis after a failed phase, whose message prints the lines.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
options:
  containers:
    description: The containers whose logs to read.
    type: list
    elements: str
    required: true
  tail:
    description: Lines per container.
    type: int
    default: 30
  env_file:
    description: The env file whose secret values are masked (a missing file masks only JWTs and URL passwords).
    type: path
    default: /etc/paycraft/paycraft.env
requirements:
  - the docker CLI on the managed host
"""

EXAMPLES = r"""
- name: The last lines of the failed phase's containers, secrets masked
  paycraft.selfhost.paycraft_logs:
    containers: [paycraft_db, paycraft_auth]
    env_file: /etc/paycraft/paycraft.env
  register: logs
"""

RETURN = r"""
logs:
  description: Per container, in the order given, its name, the exit code of docker logs and the masked lines
    (stdout, then stderr).
  returned: always
  type: list
  elements: dict
  sample: [{"container": "paycraft_db", "rc": 0, "lines": ["FATAL: password authentication failed for user ********"]}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import redact


def main():
    module = AnsibleModule(
        argument_spec=dict(
            containers=dict(type="list", elements="str", required=True),
            tail=dict(type="int", default=30),
            env_file=dict(type="path", default="/etc/paycraft/paycraft.env"),
        ),
        supports_check_mode=True,
    )
    docker = module.get_bin_path("docker", required=True)

    def run(argv):
        return module.run_command([docker, *argv[1:]])

    secrets = redact.env_secrets(module.params["env_file"])
    logs = redact.container_logs(module.params["containers"], module.params["tail"], secrets, run)
    module.exit_json(changed=False, logs=logs)


if __name__ == "__main__":
    main()
