#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, PayCraft self-hosting contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_doctor
short_description: Diagnose a live PayCraft host, one check per entry of the runbook's Troubleshooting (section 7)
version_added: "0.2.0"
description:
  - Runs on the PayCraft host and reads it; it never changes anything. Each entry of the self-hosting runbook's
    section 7 is a check, and each check gives one line per subject, C(OK), C(WARN) or C(FAIL), with what it
    found, the fix, and the runbook entry it comes from.
  - C(ports) (Port already in use) - who holds each of the runbook's ports (54321, 54322, 3000) - the expected
    container, another container (named), or a process (name, pid and command line, from C(/proc/net/tcp)).
  - C(postgres) (Postgres container exits during boot) - logs in as C(postgres) with C(PAYCRAFT_DB_PASSWORD)
    of the env file and counts C(password authentication failed) in C(docker logs paycraft_db); a refused
    password means it changed after the volume was created. A db container that does not stay up is named
    with its state and the log line that says why (a volume from another Postgres, an empty data directory).
  - C(config_function) (Edge function returns 404 for /functions/v1/config) - the config function on disk in
    the release's C(supabase/functions), the edge runtime running, and C(GET /functions/v1/config) through
    the gateway; a failure quotes the runtime's import error from its log.
  - C(migrations_connect) (migrations-bootstrap.sh aborts with "could not connect") - C(pg_isready) over the
    wire on the published port, and inside the container.
  - C(dashboard_npm) (Dashboard build hangs at npm install) - the dashboard answers on its port, or
    C(docker top) shows it still in C(npm install), and for how long (a failure past O(npm_install_limit)).
  - C(anon_key) (SDK throws "401 Unauthorized") - the anon and service role keys verify against the JWT
    secret of the env file, the running gateway, auth and dashboard use the env file's values, and the
    SDK's key (O(sdk_anon_key)) is byte-identical to C(PAYCRAFT_ANON_KEY).
  - C(tenant_trigger) (Tenant not auto-created on first signup) - the migration that creates
    C(handle_new_user_tenancy()) is in the ledger, and C(auth.users) has its trigger
    (C(docker exec paycraft_db psql -U postgres), the runbook's command).
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  checks:
    description: The checks to run, in the runbook's order whatever the order given.
    type: list
    elements: str
    choices: [ports, postgres, config_function, migrations_connect, dashboard_npm, anon_key, tenant_trigger]
    default: [ports, postgres, config_function, migrations_connect, dashboard_npm, anon_key, tenant_trigger]
  env_file:
    description: The stack's env file (C(.env) of a runbook install, C(/etc/paycraft/paycraft.env) of site.yml).
    type: path
    default: /etc/paycraft/paycraft.env
  selfhost_dir:
    description: The compose project directory, C(infra/selfhost) of the release checkout.
    type: path
    default: /opt/paycraft/src/infra/selfhost
  functions_dir:
    description: The edge functions the runtime mounts; default C(<selfhost_dir>/../../supabase/functions).
    type: path
  dashboard_dir:
    description: The dashboard sources the container mounts; default C(<selfhost_dir>/../../dashboard).
    type: path
  migrations_dir:
    description: The release's migrations; default C(<selfhost_dir>/../../server/migrations).
    type: path
  ledger:
    description: The migration ledger table, C(table) or C(schema.table).
    type: str
    default: _paycraft_migrations
  compose_project:
    description: The compose project; the database volume is C(<compose_project>_paycraft-db).
    type: str
    default: selfhost
  api_url:
    description: The gateway as seen from the host itself (not the public URL behind a TLS proxy).
    type: str
    default: http://127.0.0.1:54321
  db_port:
    description: The host port Postgres is published on.
    type: int
    default: 54322
  ports:
    description: The host ports to check and the compose service that should publish each.
    type: dict
    default: {"54321": kong, "54322": db, "3000": dashboard}
  containers:
    description: Container names by compose service, when the compose file names them otherwise.
    type: dict
    default: {}
  npm_install_limit:
    description: Seconds after which a dashboard still in C(npm install) is a failure (the runbook says 5 minutes).
    type: int
    default: 300
  sdk_anon_key:
    description: The anon key the SDK is given (C(supabaseAnonKey)), compared byte for byte with C(PAYCRAFT_ANON_KEY).
    type: str
  timeout:
    description: Seconds each HTTP request and Postgres connection may take.
    type: float
    default: 5
attributes:
  check_mode:
    description: The doctor only reads, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
notes:
  - Runs as root (or a member of the docker group that may read C(/proc/<pid>/fd)) to name the process that holds
    a port; without that it still names the container, or says that it cannot see the process.
  - Secrets of the env file (database password, JWT secret, keys) never appear in a result; log lines quoted are
    redacted.
  - The module does not fail on findings; the doctor role (C(playbooks/doctor.yml)) does, after printing them all.
seealso:
  - module: paycraft.selfhost.paycraft_smoke
"""

EXAMPLES = r"""
- name: Diagnose the host with every check of runbook section 7
  paycraft.selfhost.paycraft_doctor:
    env_file: /etc/paycraft/paycraft.env
    selfhost_dir: /opt/paycraft/src/infra/selfhost
  register: doctor

- name: Print one line per check
  ansible.builtin.debug:
    var: doctor.lines

- name: A runbook install (cd infra/selfhost), only the 401 check, with the key the app ships
  paycraft.selfhost.paycraft_doctor:
    env_file: /srv/PayCraft/infra/selfhost/.env
    selfhost_dir: /srv/PayCraft/infra/selfhost
    checks: [anon_key]
    sdk_anon_key: "{{ vault_app_anon_key }}"
"""

RETURN = r"""
results:
  description: One entry per check and subject, in the runbook's order.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: The check (C(ports), C(postgres), C(config_function), C(migrations_connect), C(dashboard_npm),
        C(anon_key), C(tenant_trigger)).
      type: str
    subject:
      description: What the line is about when a check has several (the port for C(ports)), else empty.
      type: str
    status:
      description: C(ok), C(warn), C(fail) or C(skipped).
      type: str
    message:
      description: What the check found.
      type: str
    fix:
      description: What to do about it, in the runbook's words where it has them; empty when ok.
      type: str
    runbook:
      description: The runbook entry, e.g. C(runbook section 7, 'Port already in use').
      type: str
  sample:
    - check: ports
      subject: "54321"
      status: fail
      message: "held by process python3 (pid 4242: python3 -m http.server 54321), not paycraft_kong."
      fix: "kill 4242 or stop it, or rebind PayCraft's port in docker-compose.yaml (kong.ports[0]); ..."
      runbook: "runbook section 7, 'Port already in use'"
lines:
  description:
    - The report, one line per result, for example C(OK   ports 54321 - published by paycraft_kong.) and the
      runbook entry.
  returned: always
  type: list
  elements: str
summary:
  description: Counts per status, e.g. C(8 ok, 1 fail).
  returned: always
  type: str
healthy:
  description: True when no check failed (warnings allowed).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import doctor
from ansible_collections.paycraft.selfhost.plugins.module_utils._cli import module_runner

ARGUMENT_SPEC = {
    "checks": {"type": "list", "elements": "str", "choices": list(doctor.CHECKS), "default": list(doctor.CHECKS)},
    "env_file": {"type": "path", "default": doctor.DEFAULTS["env_file"]},
    "selfhost_dir": {"type": "path", "default": doctor.DEFAULTS["selfhost_dir"]},
    "functions_dir": {"type": "path"},
    "dashboard_dir": {"type": "path"},
    "migrations_dir": {"type": "path"},
    "ledger": {"type": "str", "default": "_paycraft_migrations"},
    "compose_project": {"type": "str", "default": "selfhost"},
    "api_url": {"type": "str", "default": doctor.DEFAULTS["api_url"]},
    "db_port": {"type": "int", "default": 54322},
    "ports": {"type": "dict", "default": {str(p): s for p, s in doctor.DEFAULT_PORTS.items()}},
    "containers": {"type": "dict", "default": {}},
    "npm_install_limit": {"type": "int", "default": doctor.NPM_INSTALL_LIMIT},
    "sdk_anon_key": {"type": "str", "no_log": True},
    "timeout": {"type": "float", "default": 5.0},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = dict(module.params)
    errors = doctor.validate(params)
    try:
        params["ports"] = {int(p): str(s) for p, s in (params["ports"] or {}).items()}
    except ValueError:
        errors.append(f"ports must map port numbers to compose services, got {sorted(params['ports'])}")
    if errors:
        module.fail_json(msg="paycraft_doctor: invalid parameters: " + "; ".join(errors), changed=False)
    checks = params.pop("checks")
    docker = module.get_bin_path("docker") or "docker"
    params["docker"] = docker
    results = doctor.Doctor(params, module_runner(module)).run_checks(checks)
    module.exit_json(changed=False, results=results, lines=[doctor.line(r) for r in results],
                     summary=doctor.summary(results), healthy=not any(r["status"] == doctor.FAIL for r in results))


if __name__ == "__main__":
    main()
