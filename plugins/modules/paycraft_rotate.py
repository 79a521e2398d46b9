#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_rotate
short_description: Rotate the PayCraft database password or JWT secret on a running host, data intact
version_added: 0.1.0
description:
  - "O(secret=db_password) changes C(PAYCRAFT_DB_PASSWORD) without a database reset. C(POSTGRES_PASSWORD) is only
    read when the volume is initialised; the passwords themselves are in C(pg_authid), so the module runs
    C(ALTER ROLE ... PASSWORD) on the running database. It changes every role the release's services connect as
    (read from O(compose): C(postgres://USER:${PAYCRAFT_DB_PASSWORD}@) URLs, C(POSTGRES_PASSWORD) with
    C(POSTGRES_USER), C(PGPASSWORD) with C(PGUSER)), plus O(extra_roles) and, with O(include_sharing_roles), every
    other role whose password is the current one. The roles change in one transaction, with statement logging
    off. Each password is sent as a SCRAM-SHA-256 (or md5) verifier computed on the host, never in clear."
  - O(secret=jwt_secret) makes a new C(PAYCRAFT_JWT_SECRET) and re-signs C(PAYCRAFT_ANON_KEY) and
    C(PAYCRAFT_SERVICE_ROLE_KEY) with it. Every env variable that held an old value changes too (the anon key's
    C(NEXT_PUBLIC_*) mirrors). The database settings that hold the secret (O(jwt_settings),
    C(app.settings.jwt_secret)) are set to the new one.
  - "O(state=rotated): the plan is checked first, and nothing changes while it has an error (an inventory value
    the rotation would make stale, a role that does not exist, a bad new value). Then: the rotation record
    O(state_file) (0600, the old and new env files, the old verifiers and settings), the change, a check (each
    role logs in with the new password and not with the old one; the new keys verify against the new secret and
    the old ones do not), and last the env file O(env_file), written atomically with its mode and owner kept.
    Any failure after the change puts the old values back before the module fails."
  - O(state=reverted) puts back what the recorded rotation changed (after a failed recreate or smoke test), then
    checks that the old password logs in again. O(state=finished) removes the record once the smoke test passed.
  - The module does not recreate services. RV(plan.services) names the services that read the changed
    variables, dependencies first. The rotate role recreates them.
  - Check mode, and O(state=planned), return the plan. Plans, diffs, messages and return values hold names only,
    never a value. Error texts are scrubbed of every value in play.
author:
  - paycraft.selfhost maintainers (@paycraft)
extends_documentation_fragment:
  - paycraft.selfhost.postgres
options:
  secret:
    description: The secret to rotate.
    type: str
    choices: [db_password, jwt_secret]
    required: true
  state:
    description:
      - V(planned) lists what would change. V(rotated) rotates. V(reverted) puts back what O(state_file) records.
        V(finished) removes O(state_file), which holds the old values.
    type: str
    choices: [planned, rotated, reverted, finished]
    default: planned
  state_file:
    description: The rotation record. Defaults to C(rotate.json) next to O(env_file).
    type: path
  compose:
    description:
      - The compose files the services run from, parsed on the controller (the release's file, then the stack
        role's override), so the managed host needs no PyYAML.
      - The roles to change and the services that read each variable are read from them.
    type: list
    elements: raw
    default: []
  value:
    description:
      - The new value. When empty, the inventory's value is used if it differs from the env file (O(given)).
        Otherwise a value is generated on the host, as the keys module generates it.
    type: str
  given:
    description:
      - The runbook section 3 values that the inventory sets (the config role's C(paycraft_*) variables).
        A value that the rotation would make stale is an error, because the next C(site.yml) would refuse it
        or put it back.
    type: dict
    default: {}
  extra_roles:
    description: Roles to change besides those the compose files name (for example C(supabase_admin)).
    type: list
    elements: str
    default: []
  include_sharing_roles:
    description: Also change every other role whose password is the current C(PAYCRAFT_DB_PASSWORD).
    type: bool
    default: true
  jwt_settings:
    description: Per-database or per-role settings that hold the JWT secret and change with it.
    type: list
    elements: str
    default: [app.settings.jwt_secret]
  issuer:
    description: The C(iss) claim of the re-signed keys.
    type: str
    default: supabase
  expiry_days:
    description: Lifetime of the re-signed keys, in days.
    type: int
    default: 3650
  host_name:
    description:
      - Host name used in messages (the role passes C(inventory_hostname)). Defaults to the host's name.
      - Not C(host), which is an alias of O(login_host).
    type: str
attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying target.
    details: Returns the plan (names only) and changes nothing.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check mode).
    details: Names each env variable, role and setting that changes, with every value masked.
seealso:
  - module: paycraft.selfhost.paycraft_keys
  - name: PayCraft self-hosting runbook, section 3 (Environment variables)
    description: Where each variable shows up.
    link: https://paycraft.mobilebytesensei.com/
"""

EXAMPLES = r"""
- name: What a database password rotation would change (names only)
  paycraft.selfhost.paycraft_rotate:
    secret: db_password
    state: planned
    env_file: /etc/paycraft/paycraft.env
    compose:
      - "{{ release_compose_text | from_yaml }}"

- name: Rotate the database password (the services still have to be recreated)
  paycraft.selfhost.paycraft_rotate:
    secret: db_password
    state: rotated
    env_file: /etc/paycraft/paycraft.env
    compose: "{{ compose_docs }}"
    host_name: "{{ inventory_hostname }}"
  register: rotated

- name: Put the old password back after a failed smoke test
  paycraft.selfhost.paycraft_rotate:
    secret: db_password
    state: reverted
    env_file: /etc/paycraft/paycraft.env
"""

RETURN = r"""
plan:
  description: What the rotation changes. Names only.
  returned: always
  type: dict
  contains:
    secret:
      description: The rotated secret (db_password or jwt_secret).
      type: str
      returned: always
    roles:
      description: Roles whose password changes.
      type: list
      returned: always
      elements: str
    roles_from_compose:
      description: Each role the compose files connect as, with the services that use it.
      type: dict
      returned: always
    roles_sharing_password:
      description: Other roles that have the same password now and change with it.
      type: list
      returned: always
      elements: str
    env_keys:
      description: Env variables whose value changes.
      type: list
      returned: always
      elements: str
    settings:
      description: Database settings that change.
      type: list
      returned: always
      elements: str
    services:
      description: Services that read the changed variables (recreate them), dependencies first.
      type: list
      returned: always
      elements: str
    services_reading:
      description: Each such service with the variables it reads.
      type: dict
      returned: always
    warnings:
      description: Things to know, one line each.
      type: list
      returned: always
      elements: str
    errors:
      description: Why nothing was changed, one line each.
      type: list
      returned: always
      elements: str
  sample:
    secret: db_password
    roles: [postgres, supabase_auth_admin, authenticator]
    env_keys: [PAYCRAFT_DB_PASSWORD]
    services: [db, auth, rest, edge-runtime]
verification:
  description: Per role, whether the new and the old password log in (C(accepted), C(refused), C(not_enforced)).
    For the JWT secret, the status of each new key and of each database setting.
  returned: when O(state=rotated) or O(state=reverted)
  type: dict
  sample: {authenticator: {new: accepted, old: refused}}
reverted:
  description: The old values were put back (O(state=reverted), or after a failure).
  returned: always
  type: bool
messages:
  description: What was done and what comes next, one line each.
  returned: always
  type: list
  elements: str
state_file:
  description: The rotation record.
  returned: always
  type: str
"""

import socket

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres, rotate
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as keymod
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile

try:
    import psycopg2  # noqa: F401 - only its presence is checked here

    HAS_PSYCOPG2 = True
except ImportError:
    HAS_PSYCOPG2 = False


def _hide(module, env_file, state_file):
    """Every secret of the env file and of the record becomes a no_log value (a second guard)."""
    texts = []
    for path in (env_file, state_file):
        try:
            texts.append(EnvFile.read(path).as_dict())
        except (OSError, ValueError):
            pass
    state = None
    try:
        state = rotate.read_state(state_file)
    except rotate.RotateError:
        pass
    for key in ("old_env", "new_env"):
        if state and state.get(key):
            texts.append(EnvFile.parse(state[key]).as_dict())
    for env in texts:
        for value in rotate.secret_values(env):
            module.no_log_values.add(value)
    for value in (state or {}).get("old_verifiers", {}).values():
        if value:
            module.no_log_values.add(value)


def _diff(plan):
    names = [f"{key}=" for key in plan["env_keys"]] + [f"role {r}: password " for r in plan["roles"]]
    names += [f"{s} = " for s in plan["settings"]]
    return {
        "before_header": "before the rotation",
        "after_header": "after the rotation",
        "before": "".join(f"{n}{rotate.REDACTED} (old)\n" for n in names),
        "after": "".join(f"{n}{rotate.REDACTED} (new)\n" for n in names),
    }


def main():
    argument_spec = _postgres.postgres_common_argument_spec()
    argument_spec.update(
        secret=dict(type="str", required=True, choices=list(rotate.KINDS), no_log=False),  # a name, not a value
        state=dict(type="str", default="planned", choices=["planned", "rotated", "reverted", "finished"]),
        state_file=dict(type="path"),
        compose=dict(type="list", elements="raw", default=[]),
        value=dict(type="str", no_log=True),
        given=dict(type="dict", default={}, no_log=True),
        extra_roles=dict(type="list", elements="str", default=[]),
        include_sharing_roles=dict(type="bool", default=True),
        jwt_settings=dict(type="list", elements="str", default=list(rotate.JWT_SETTINGS)),
        issuer=dict(type="str", default=keymod.DEFAULT_ISSUER),
        expiry_days=dict(type="int", default=keymod.DEFAULT_EXPIRY_DAYS),
        host_name=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    host = p["host_name"] or socket.gethostname()
    env_file = p["env_file"]
    if not env_file:
        module.fail_json(msg=f"{host}: env_file is required (the env file whose secret is rotated, for example "
                             "/etc/paycraft/paycraft.env).")
    state_file = p["state_file"] or rotate.default_state_file(env_file)
    result = dict(changed=False, state_file=state_file, reverted=False, messages=[], verification={})
    if p["state"] == "finished":
        result["changed"] = rotate.finish(env_file, state_file=state_file, check=module.check_mode)
        result["messages"] = [f"{host}: the rotation record {state_file} was removed."] if result["changed"] else []
        module.exit_json(**result)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), **result)
    if p["expiry_days"] < 1:
        module.fail_json(msg=f"{host}: expiry_days must be at least 1 (got {p['expiry_days']}).", **result)
    bad = [i for i, doc in enumerate(p["compose"]) if not isinstance(doc, dict)]
    if bad:
        module.fail_json(msg=f"{host}: compose must be a list of parsed compose files (dicts); items {bad} are not.",
                         **result)
    _hide(module, env_file, state_file)
    try:
        params = _postgres.connection_params(p)
    except _postgres.PostgresError as exc:
        module.fail_json(msg=f"{host}: {exc.message}", **result)
    params["password"] = p["login_password"] or ""  # empty: the env file's, read by the library
    try:
        if p["state"] == "reverted":
            outcome = rotate.revert(env_file, params, state_file=state_file, host=host,
                                    timeout=p["connect_timeout"], check=module.check_mode)
        else:
            outcome = rotate.rotate(
                p["secret"], env_file, params, p["compose"], state_file=state_file, value=p["value"] or "",
                given={k: ("" if v is None else str(v)) for k, v in p["given"].items()},
                extra_roles=p["extra_roles"], include_sharing=p["include_sharing_roles"],
                jwt_settings=p["jwt_settings"], issuer=p["issuer"], expiry_days=p["expiry_days"],
                check=module.check_mode or p["state"] == "planned", host=host, timeout=p["connect_timeout"],
            )
    except rotate.RotateError as exc:
        _hide(module, env_file, state_file)
        module.fail_json(msg=str(exc), **result)
    _hide(module, env_file, state_file)
    data = outcome.as_dict()
    for warning in data["plan"]["warnings"]:
        module.warn(warning)
    result.update(data)
    if p["state"] == "planned" and not module.check_mode:
        result["changed"] = False
    if module._diff and data["changed"]:
        result["diff"] = _diff(data["plan"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
