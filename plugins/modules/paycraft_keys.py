#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: paycraft_keys
short_description: Generate, verify and write the PayCraft secret set (runbook section 3) to an env file
version_added: 0.1.0
description:
  - Produces every variable of the PayCraft self-hosting runbook section 3 and writes them to the env
    file that C(docker compose) reads, replacing the manual C(cp .env.example .env), C(openssl rand) and
    C(generate-keys.sh) steps.
  - "Precedence per variable: a non-empty value in O(values) (inventory / Ansible Vault) wins, then the
    value already in O(path) (then in O(import_from)), then a freshly generated one (cryptographic RNG,
    Python C(secrets)) or the runbook default. A second run with the same input changes nothing: keys are
    kept, never re-minted, so their C(iat)/C(exp) stay."
  - C(PAYCRAFT_DB_PASSWORD) is 24 random bytes as 32 URL-safe characters (it is placed in
    C(postgres://user:PASSWORD@db) URLs); C(PAYCRAFT_JWT_SECRET) is 32 random bytes in base64;
    C(PAYCRAFT_TOKEN_ENCRYPTION_KEY) and C(PAYCRAFT_OAUTH_STATE_SECRET) are 32 random bytes as 64 hex
    characters; C(PAYCRAFT_ANON_KEY) and C(PAYCRAFT_SERVICE_ROLE_KEY) are HS256 JWTs signed with the JWT
    secret, claims C(role) (C(anon) / C(service_role)), C(iss), C(iat), C(exp), as upstream
    C(generate-keys.sh) makes them. HS256 is implemented with the standard library, so the target host
    does not need PyJWT.
  - Kept JWTs are verified against the current JWT secret, their role and their expiry. A key that fails
    (status C(bad_signature), C(wrong_role), C(expired), C(malformed)) makes the module fail with the
    runbook's "401 Unauthorized" cause, unless O(resign=true), which re-signs it.
  - With O(db_initialized=true) (the database volume exists) the module refuses to change
    C(PAYCRAFT_DB_PASSWORD), because Postgres keeps the password it was initialised with; its message names
    the one command that changes it with the data intact, C(playbooks/rotate.yml) with
    C(-e paycraft_rotate_secret=db_password -e paycraft_rotate_confirm=db_password).
  - The anon key is mirrored into C(NEXT_PUBLIC_SUPABASE_ANON_KEY) and C(NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY);
    any C(NEXT_PUBLIC_*) value holding the service role key is an error.
  - Every problem found is reported, one line each (naming the variable and O(host)), and the module
    fails once. No message, diff or return value contains a secret (see O(return_values)).
  - The file is written atomically (temp file in the same directory, fsync, rename) with O(mode) and
    ownership set before any byte is written. Comments, blank lines, C(export) prefixes, quoting and the
    order of keys of an existing file are preserved; keys the module does not manage are left alone.
  - Producing the secrets and writing the env file are one module on purpose. The values are decided from
    the file's current content and written in the same step, so no secret ever travels through a task
    result (there is no separate env-file module).
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  path:
    description: The env file to read and write (the source of truth, for example C(/etc/paycraft/paycraft.env)).
      Its directory must exist.
    type: path
    required: true
  values:
    description:
      - Runbook section 3 values given by the operator, keyed by variable name (C(PAYCRAFT_DB_PASSWORD) ...).
        Empty values mean "keep the existing one or generate one". Surrounding whitespace (a trailing newline
        from a Vault file) is trimmed.
      - Only the ten section 3 variables are accepted here; other variables go to O(extra_env).
    type: dict
    default: {}
  labels:
    description: How the operator sets each variable of O(values) (for example
      C(PAYCRAFT_DB_PASSWORD=paycraft_db_password)); used in messages only.
    type: dict
    default: {}
  extra_env:
    description:
      - Extra variables to write. They win over the file and O(example_file).
        Section 3 variables are refused here (set them through O(values)).
      - The release's C(.env.example) secrets are set here, so the values are kept out of every output
        (C(no_log)); a value whose name does not look like a secret is shown in diffs and messages.
    type: dict
    default: {}
  extra_env_label:
    description: How the operator sets O(extra_env); used in messages only.
    type: str
    default: extra_env
  example_file:
    description:
      - The release's C(.env.example). Its variables that are not section 3 variables, not the anon-key mirrors
        and not already in O(path) are written with their example values. Variables whose name looks like a
        secret (C(SECRET), C(PASS), C(TOKEN), C(*_KEY), C(PRIVATE), C(CREDENTIAL)) are never copied (a warning
        names them).
      - A missing file is ignored.
    type: path
  import_from:
    description: Env files to adopt values from when O(path) lacks them (for example a hand-made
      C(infra/selfhost/.env) of an installation done by the runbook); their variables that O(path) lacks are
      carried over too. The first file listed wins. Missing files and files that are O(path) itself are ignored.
    type: list
    elements: path
    default: []
  db_initialized:
    description: The database volume already exists; C(PAYCRAFT_DB_PASSWORD) must then not change.
    type: bool
    default: false
  db_volume:
    description: Name of the database volume, used in messages.
    type: str
    default: selfhost_paycraft-db
  resign:
    description: Re-sign kept anon / service role keys that do not verify (wrong secret, role, expired or
      malformed) instead of failing.
    type: bool
    default: false
  resign_hint:
    description: The next command to tell the operator when a kept key does not verify.
    type: str
    default: run again with resign=true
  issuer:
    description: The C(iss) claim of generated keys.
    type: str
    default: supabase
  expiry_days:
    description: Lifetime of generated keys, in days (C(exp) = C(iat) + this).
    type: int
    default: 3650
  host:
    description: Host name used in messages (the role passes C(inventory_hostname)). Defaults to the host's name.
    type: str
  mode:
    description: Permissions of the env file.
    type: raw
    default: '0600'
  owner:
    description: Owner of the env file (name or uid). Unchanged when omitted.
    type: str
  group:
    description: Group of the env file (name or gid). Unchanged when omitted.
    type: str
  header:
    description: Comment written at the top of a new file.
    type: str
    default: "Managed by Ansible (paycraft.selfhost). PayCraft secrets, runbook section 3. Keep this file 0600."
  return_public:
    description:
      - Return RV(public_env), the values other roles read as the C(paycraft_env) fact (C(PAYCRAFT_ANON_KEY),
        C(PAYCRAFT_API_URL), C(PAYCRAFT_DASHBOARD_URL)) and no server secret. Like O(return_values) it needs
        C(no_log) on the task, because the anon key is kept out of logs.
    type: bool
    default: false
  return_values:
    description:
      - Return every value written in RV(env). As that puts secrets in the result, it is only allowed on a task
        with C(no_log) set to C(true) (the module fails otherwise).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying target.
    details: Computes and validates everything, reports what would change, writes nothing.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check mode).
    details: Every value is masked (C(KEY=********)); changed keys are marked C((old)) / C((new)).
seealso:
  - name: PayCraft self-hosting runbook, section 3 (Environment variables)
    description: The variables this module produces.
    link: https://paycraft.mobilebytesensei.com/
"""

EXAMPLES = r"""
- name: Write the PayCraft env file (generate what is missing, keep what exists)
  paycraft.selfhost.paycraft_keys:
    path: /etc/paycraft/paycraft.env
    owner: root
    group: root
    values:
      PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY: "{{ vault_stripe_secret_key }}"
      PAYCRAFT_PLATFORM_STRIPE_CLIENT_ID: ca_123
      PAYCRAFT_API_URL: https://billing.example.com
    example_file: /opt/paycraft/src/infra/selfhost/.env.example
    db_initialized: "{{ volume.exists }}"
    host: "{{ inventory_hostname }}"

- name: Rotate the JWT secret and re-sign both keys (invalidates every session and SDK token)
  paycraft.selfhost.paycraft_keys:
    path: /etc/paycraft/paycraft.env
    values:
      PAYCRAFT_JWT_SECRET: "{{ new_jwt_secret }}"
    resign: true

- name: Read the values for later tasks (secrets in the result, hence no_log)
  paycraft.selfhost.paycraft_keys:
    path: /etc/paycraft/paycraft.env
    return_values: true
  register: keys
  no_log: true
"""

RETURN = r"""
path:
  description: The env file.
  returned: always
  type: str
changed_keys:
  description: Names of the variables whose value changes (added or modified).
  returned: success
  type: list
  elements: str
generated:
  description: Names of the variables generated by this run.
  returned: success
  type: list
  elements: str
  sample: [PAYCRAFT_DB_PASSWORD, PAYCRAFT_JWT_SECRET, PAYCRAFT_ANON_KEY]
kept:
  description: Names of section 3 variables kept from the existing file(s).
  returned: success
  type: list
  elements: str
given:
  description: Names of section 3 variables taken from O(values).
  returned: success
  type: list
  elements: str
resigned:
  description: Names of the JWT keys re-signed because O(resign=true).
  returned: success
  type: list
  elements: str
from_example:
  description: Names of the variables copied from O(example_file).
  returned: success
  type: list
  elements: str
verification:
  description: Status of each JWT key before any re-signing (C(ok), C(bad_signature), C(wrong_role),
    C(expired), C(malformed)).
  returned: always
  type: dict
  sample: {PAYCRAFT_ANON_KEY: ok, PAYCRAFT_SERVICE_ROLE_KEY: bad_signature}
errors:
  description: Every problem found, one line each (on failure).
  returned: failure
  type: list
  elements: str
keys:
  description: Names of every variable in the file after the run.
  returned: success
  type: list
  elements: str
public_env:
  description: The values of C(PAYCRAFT_ANON_KEY), C(PAYCRAFT_API_URL) and C(PAYCRAFT_DASHBOARD_URL) in the file.
  returned: when O(return_public=true)
  type: dict
env:
  description: Every variable of the file with its value. Secrets.
  returned: when O(return_values=true)
  type: dict
"""

import grp
import os
import pwd
import socket
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as envmod
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as keymod


def _uid(owner):
    if owner is None:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _gid(group):
    if group is None:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def _mode(value):
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            values=dict(type="dict", default={}, no_log=True),
            labels=dict(type="dict", default={}),
            extra_env=dict(type="dict", default={}, no_log=True),
            extra_env_label=dict(type="str", default="extra_env"),
            example_file=dict(type="path"),
            import_from=dict(type="list", elements="path", default=[]),
            db_initialized=dict(type="bool", default=False),
            db_volume=dict(type="str", default="selfhost_paycraft-db"),
            resign=dict(type="bool", default=False),
            resign_hint=dict(type="str", default="run again with resign=true"),
            issuer=dict(type="str", default=keymod.DEFAULT_ISSUER),
            expiry_days=dict(type="int", default=keymod.DEFAULT_EXPIRY_DAYS),
            host=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            owner=dict(type="str"),
            group=dict(type="str"),
            header=dict(
                type="str",
                default="Managed by Ansible (paycraft.selfhost). PayCraft secrets, "
                "runbook section 3. Keep this file 0600.",
            ),
            return_values=dict(type="bool", default=False),
            return_public=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # the URLs and the Stripe client id are public: show them in diffs and messages (Ansible masks every
    # string of a no_log option, and `values` also carries the secrets)
    secret_values = {str(v) for k, v in p["values"].items() if k not in keymod.PUBLIC_KEYS and v}
    for key in keymod.PUBLIC_KEYS:
        value = p["values"].get(key)
        if value and str(value) not in secret_values:
            module.no_log_values.discard(str(value))
    # extra_env carries the .env.example's secrets (no_log above); a value whose name does not look like a
    # secret (SECRET, PASS, TOKEN, *_KEY, PRIVATE, CREDENTIAL) is shown again, unless a secret has the same value
    shown = {str(v) for k, v in p["extra_env"].items() if v and keymod.SECRET_LOOKING_RE.search(str(k))}
    for key, value in p["extra_env"].items():
        if value and not keymod.SECRET_LOOKING_RE.search(str(key)) and str(value) not in secret_values | shown:
            module.no_log_values.discard(str(value))
    path = p["path"]
    host = p["host"] or socket.gethostname()
    result = dict(changed=False, path=path, verification={})

    if p["return_values"] and not module.no_log:
        module.fail_json(msg=f"{host}: return_values=true returns secrets: set no_log: true on the task.", **result)
    if p["return_public"] and not module.no_log:
        module.fail_json(msg=f"{host}: return_public=true returns the anon key: set no_log: true on the task.",
                         **result)
    unknown = sorted(k for k in p["values"] if k not in keymod.SECTION3)
    if unknown:
        module.fail_json(
            msg=f"{host}: values only takes the runbook section 3 variables; move {', '.join(unknown)} to extra_env.",
            **result,
        )
    if p["expiry_days"] < 1:
        module.fail_json(msg=f"{host}: expiry_days must be at least 1 (got {p['expiry_days']}).", **result)
    try:
        mode = _mode(p["mode"])
        uid, gid = _uid(p["owner"]), _gid(p["group"])
    except (KeyError, ValueError) as exc:
        module.fail_json(msg=f"{host}: invalid mode/owner/group for {path}: {exc}", **result)

    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory) and not module.check_mode:
        module.fail_json(
            msg=f"{host}: the directory of {path} ({directory}) does not exist; create it first "
            "(the paycraft.selfhost.config role makes it 0700).",
            **result,
        )

    current = envmod.EnvFile.read(path)
    existing, source = {}, {}
    for other in reversed(p["import_from"]):
        if not os.path.exists(other) or os.path.realpath(other) == os.path.realpath(path):
            continue
        imported = envmod.EnvFile.read(other).as_dict()
        existing.update(imported)
        source.update({k: other for k in imported})
    file_values = current.as_dict()
    existing.update({k: v for k, v in file_values.items() if v != "" or k not in existing})
    source.update({k: path for k in file_values if file_values[k] != "" or k not in source})

    example = {}
    if p["example_file"] and os.path.exists(p["example_file"]):
        example = envmod.EnvFile.read(p["example_file"]).as_dict()

    warnings = [f"{host}: line {n} of {path} is not KEY=value; it is kept as is." for n in current.invalid]
    plan = keymod.plan(
        given={k: ("" if v is None else str(v)) for k, v in p["values"].items()},
        existing=existing,
        existing_source=source,
        extra_env=p["extra_env"],
        example=example,
        db_initialized=p["db_initialized"],
        volume_name=p["db_volume"],
        resign=p["resign"],
        issuer=p["issuer"],
        expiry_days=p["expiry_days"],
        host=host,
        labels=p["labels"],
        extra_env_label=p["extra_env_label"],
        example_label=p["example_file"] or ".env.example",
        resign_hint=p["resign_hint"],
    )
    warnings.extend(plan.warnings)
    for w in warnings:
        module.warn(w)
    result.update(verification=plan.verification)
    if plan.errors:
        result["errors"] = plan.errors
        module.fail_json(msg="\n".join(plan.errors), **result)

    new = current.copy()
    if not file_values and not current.keys() and p["header"]:
        new.add_comment(p["header"])
    changed_keys = [k for k, v in plan.values.items() if file_values.get(k) != v]
    for key, value in plan.values.items():
        new.set(key, value)
    # adopted files (import_from): carry their other variables too, so nothing of a hand-made .env is lost
    for key, value in existing.items():
        if key not in new and source.get(key) != path:
            new.set(key, value)
            changed_keys.append(key)
    text = new.render()

    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    content_changed = _read(path) != text
    meta_changed = st is not None and (
        stat.S_IMODE(st.st_mode) != mode or (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
    )
    result.update(
        changed=content_changed or meta_changed,
        changed_keys=changed_keys,
        generated=plan.generated,
        kept=plan.kept,
        given=plan.given,
        resigned=plan.resigned,
        from_example=plan.from_example,
        keys=new.keys(),
    )
    if module._diff and content_changed:
        before = current if st is not None else envmod.EnvFile()
        result["diff"] = envmod.masked_diff(before, new, path, show_values=keymod.PUBLIC_KEYS)
    if not module.check_mode:
        if content_changed:
            envmod.write_atomic(path, text, mode=mode, uid=uid, gid=gid)
        elif meta_changed:
            os.chmod(path, mode)
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid)
    if p["return_public"]:
        public = {k: v for k, v in new.as_dict().items() if k in keymod.ENV_FACT_KEYS}
        for value in public.values():  # the task is no_log (checked above): the real values, not masks
            module.no_log_values.discard(str(value))
        result["public_env"] = public
    if p["return_values"]:
        # the task is no_log (checked above): the caller wants the real values, not the masked ones
        module.no_log_values.clear()
        result["env"] = new.as_dict()
    module.exit_json(**result)


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    main()
