#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_preflight
short_description: Check a host against the PayCraft runbook's prerequisites before anything changes
version_added: "0.1.0"
description:
  - Runs every check of the PayCraft self-hosting runbook section 1 ("Prerequisites") on the target and
    returns all findings in one report.
  - "Checks: Docker Engine version, Docker Compose v2, free RAM (C(MemAvailable)), free disk at each path
    (measured on the nearest existing parent), TCP ports free or already published by this stack's compose
    project, required tools on C(PATH), the target's Python (3.9 or later, which the collection's modules
    need) and the Python modules the collection's modules import."
  - A port in use is traced from C(/proc/net/tcp) and C(/proc/net/tcp6) socket inodes to the process holding
    it (pid, process name, command line). When the holder is Docker's port publisher and a container of
    O(compose_project) publishes the port, the port counts as held by this stack (an C(info) finding).
  - When O(fail_on_findings=true), the module fails once, listing every C(error) finding on its own line
    with its fix.
  - The module never changes anything on the host.
author:
  - paycraft.selfhost maintainers (@paycraft)
attributes:
  check_mode:
    support: full
    description: All checks are read-only and run the same way in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  host:
    description:
      - Name of the host used in messages (the role passes C(inventory_hostname)).
      - Defaults to the target's host name.
    type: str
  docker_min_version:
    description:
      - Minimum Docker Engine (server) version. The runbook asks for 24.
    type: str
    default: "24.0"
  compose_min_version:
    description: Minimum Docker Compose version (C(docker compose version --short)).
    type: str
    default: "2.0"
  docker_managed:
    description:
      - V(true) when the docker role will install the engine, the Compose plugin and the Python modules.
        Their absence is then an C(info) finding, not an error. A Docker that is present but too old is
        always an error.
    type: bool
    default: true
  min_memory_mb:
    description: Minimum available memory in MB (C(MemAvailable) of C(/proc/meminfo)).
    type: int
    default: 4096
  min_disk_gb:
    description: Minimum free disk in GB at each of O(disk_paths).
    type: float
    default: 5
  disk_paths:
    description:
      - Paths that must have O(min_disk_gb) free. A path that does not exist yet is measured at its
        nearest existing parent.
    type: list
    elements: path
    default: [/opt/paycraft, /var/lib/docker]
  ports:
    description: TCP ports that must be free, or already published by this stack.
    type: list
    elements: int
    default: [54321, 54322, 54323, 54324, 3000]
  compose_project:
    description: Compose project name of this stack (label C(com.docker.compose.project)).
    type: str
    default: selfhost
  required_tools:
    description: Executables that must be on the target's C(PATH).
    type: list
    elements: str
    default: [openssl, curl]
  python_modules:
    description:
      - Python modules that the target's Python must import (C(psycopg2) for paycraft_migrate,
        C(requests) for community.docker).
    type: list
    elements: str
    default: [psycopg2, requests]
  fail_on_findings:
    description: Fail once, listing every C(error) finding, when there is at least one.
    type: bool
    default: true
notes:
  - The port holder is found through C(/proc/<pid>/fd); run as root to see every process.
seealso:
  - name: PayCraft self-hosting runbook, section 1 (Prerequisites) and section 7 (Troubleshooting)
    description: The checks and the fixes printed here come from it.
    link: https://github.com/MobileByteLabs/paycraft
"""

EXAMPLES = r"""
- name: Check the host against the runbook's prerequisites
  paycraft.selfhost.paycraft_preflight:
    host: "{{ inventory_hostname }}"

- name: Local machine with Debian's Docker 20.10, report only
  paycraft.selfhost.paycraft_preflight:
    docker_min_version: "20.10"
    ports: [54321, 54322, 3000]
    fail_on_findings: false
  register: preflight

- name: Show what was found
  ansible.builtin.debug:
    msg: "{{ preflight.report }}"
"""

RETURN = r"""
facts:
  description: What was measured.
  returned: always
  type: dict
  contains:
    docker_server_version:
      description: Docker Engine version, or null when Docker does not answer.
      type: str
      sample: "20.10.24"
    compose_version:
      description: Docker Compose version, or null.
      type: str
      sample: "2.40.3"
    memory_available_mb:
      description: MemAvailable in MB.
      type: int
      sample: 23592
    disk:
      description: Per configured path, where it was measured and the free space in GB.
      type: dict
      sample: {"/var/lib/docker": {"measured_at": "/var/lib/docker", "free_gb": 78.1}}
    ports:
      description: Per port, whether it is free, the listening addresses, the processes holding it and
        the containers of the compose project publishing it.
      type: dict
      sample: {"54321": {"free": false, "listening": ["0.0.0.0"], "containers": ["paycraft_kong"],
               "holders": [{"pid": 812, "comm": "docker-proxy", "cmdline": "/usr/bin/docker-proxy ..."}]}}
    tools:
      description: Path of each required tool, or null.
      type: dict
    python:
      description: Version and path of the Python that ran the module (the target's interpreter).
      type: dict
      sample: {"version": "3.11.2", "interpreter": "/usr/bin/python3"}
    python_modules:
      description: Whether each Python module imports.
      type: dict
  sample: {}
findings:
  description: Every finding, in check order.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: Check name (docker_version, compose_version, memory, disk, ports, tools, python, python_modules).
      type: str
    severity:
      description: error, warning or info.
      type: str
    message:
      description: What was found, naming the host.
      type: str
    fix:
      description: What to do about it (empty for info).
      type: str
  sample: [{"check": "memory", "severity": "info", "message": "23592 MB of RAM available on web1.", "fix": ""}]
errors:
  description: Number of error findings.
  returned: always
  type: int
  sample: 0
report:
  description: Every finding as one readable line.
  returned: always
  type: list
  elements: str
  sample: ["[INFO] memory: 23592 MB of RAM available on web1 (minimum 4096 MB)."]
failure_message:
  description:
    - "The failure text: C(Preflight failed on HOST: N problem(s)), then one line per error with its fix."
    - Empty when there is no error.
  returned: always
  type: str
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli, preflight


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str"},
            "docker_min_version": {"type": "str", "default": "24.0"},
            "compose_min_version": {"type": "str", "default": "2.0"},
            "docker_managed": {"type": "bool", "default": True},
            "min_memory_mb": {"type": "int", "default": 4096},
            "min_disk_gb": {"type": "float", "default": 5},
            "disk_paths": {"type": "list", "elements": "path", "default": ["/opt/paycraft", "/var/lib/docker"]},
            "ports": {"type": "list", "elements": "int", "default": [54321, 54322, 54323, 54324, 3000]},
            "compose_project": {"type": "str", "default": "selfhost"},
            "required_tools": {"type": "list", "elements": "str", "default": ["openssl", "curl"]},
            "python_modules": {"type": "list", "elements": "str", "default": ["psycopg2", "requests"]},
            "fail_on_findings": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    host = p["host"] or socket.gethostname()

    problems = []
    for name in ("docker_min_version", "compose_min_version"):
        if preflight.parse_version(p[name]) is None:
            problems.append(f"{name}={p[name]!r} is not a version like 24.0")
    if p["min_memory_mb"] < 0:
        problems.append("min_memory_mb must be 0 or more")
    if p["min_disk_gb"] < 0:
        problems.append("min_disk_gb must be 0 or more")
    bad_ports = [port for port in p["ports"] if not 0 < port < 65536]
    if bad_ports:
        problems.append(f"ports {bad_ports} are not TCP ports (1-65535)")
    if not p["compose_project"]:
        problems.append("compose_project must not be empty")
    if problems:
        module.fail_json(msg=f"paycraft_preflight on {host}: invalid arguments: " + "; ".join(problems))

    facts, findings = preflight.run_all(
        host,
        docker_min_version=p["docker_min_version"],
        compose_min_version=p["compose_min_version"],
        docker_managed=p["docker_managed"],
        min_memory_mb=p["min_memory_mb"],
        min_disk_gb=p["min_disk_gb"],
        disk_paths=p["disk_paths"],
        ports=p["ports"],
        compose_project=p["compose_project"],
        required_tools=p["required_tools"],
        python_modules=p["python_modules"],
        runner=_cli.module_runner(module),
    )
    errors = preflight.errors(findings)
    result = {
        "changed": False,
        "facts": facts,
        "findings": findings,
        "errors": len(errors),
        "report": preflight.report_lines(findings),
        "failure_message": preflight.failure_message(host, findings) if errors else "",
    }
    if errors and p["fail_on_findings"]:
        module.fail_json(msg=result["failure_message"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
