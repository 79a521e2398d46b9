#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_gateway_config
short_description: Write the collection's Kong declarative file, with Supabase's API-key check
version_added: "0.9.0"
description:
  - Writes O(dest) from the release's Kong declarative config (O(kong), parsed on the controller; the gap-filled
    one when the collection fills C(/rest/v1/)). The stack role mounts it over the release's file.
  - With O(key_check) (the default), every service that routes C(/rest/v1/) or C(/auth/v1/) gets C(key-auth) and
    C(acl) (C(allow) C(admin), C(anon)) as Supabase's own C(kong.yml) has them, and two consumers hold this host's
    keys, read from O(env_file) on the host - C(anon) (C(PAYCRAFT_ANON_KEY), group C(anon)) and C(service_role)
    (C(PAYCRAFT_SERVICE_ROLE_KEY), group C(admin)). A request without one of them gets 401 from the gateway.
  - C(/functions/v1/) stays open (the SDK's config call carries its own PayCraft key), and so do GoTrue's
    browser-facing links (O(open_paths)).
  - The keys never leave the host - they are read from O(env_file) by the module; the diff, the result and every
    message show C(********) in their place.
  - While a write hold is in force (its record O(hold_file) exists - module M(paycraft.selfhost.paycraft_write_hold) -
    because an upgrade or a restore is under way, or was killed), the file keeps the hold, so a gateway started or
    reloaded from it keeps refusing writes.
  - O(functions_host) points the C(/functions/v1/) services at another host (same scheme, port and path) - the
    upgrade's edge runtime started beside the running one. The checksum leaves it out, as it leaves out the hold -
    switching the upstream and back reloads the gateway, it never recreates it.
  - A new file is written atomically with O(mode); an existing one is rewritten in place (same inode), so a gateway
    whose single-file bind mount holds it reads the new content at its next reload. Its directory is the caller's to
    protect (a bind mount does not need the container's user to traverse it, so a C(0700) directory keeps the keys
    from other local users).
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  kong:
    description: The release's Kong declarative config as a mapping (the gap-filled one where it applies).
    type: dict
    required: true
  key_check:
    description: Put C(key-auth) and C(acl) on C(/rest/v1/) and C(/auth/v1/). V(false) writes O(kong) as it is.
    type: bool
    default: true
  env_file:
    description: The env file holding C(PAYCRAFT_ANON_KEY) and C(PAYCRAFT_SERVICE_ROLE_KEY) (O(key_check) only).
    type: path
  open_paths:
    description: Paths under C(/auth/v1/) that stay open with O(key_check) (Supabase's C(auth-v1-open) routes).
    type: list
    elements: str
    default: [/auth/v1/verify, /auth/v1/callback, /auth/v1/authorize]
  dest:
    description: Where to write the file.
    type: path
    required: true
  mode:
    description: Mode of O(dest). The gateway's container user must be able to read it.
    type: raw
    default: "0644"
  header:
    description: Comment lines at the top of the file.
    type: str
    default: ""
  hold_file:
    description: The record of the write hold (C(paycraft_write_hold_file)); empty, no hold is looked for.
    type: path
  functions_host:
    description:
      - The host the C(/functions/v1/) services proxy to instead of the release's (its edge runtime's compose service).
        Empty - the release's.
    type: str
    default: ""
  host_name:
    description: The inventory name of the host, for messages (default the host's own name).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying target.
    details: >-
      Reports whether the file would change; on a host whose env file does not exist yet, with placeholders for
      the keys.
  diff_mode:
    support: full
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    details: The keys are masked in the diff.
"""

EXAMPLES = r"""
- name: Write the gateway's declarative file with the API-key check
  paycraft.selfhost.paycraft_gateway_config:
    kong: "{{ release_kong }}"
    env_file: /etc/paycraft/paycraft.env
    dest: /opt/paycraft/fill/gateway/kong.yml

- name: The release's routes only (the check switched off), /rest/v1/ still gap-filled
  paycraft.selfhost.paycraft_gateway_config:
    kong: "{{ release_check.kong_filled }}"
    key_check: false
    dest: /opt/paycraft/fill/gateway/kong.yml
"""

RETURN = r"""
checksum:
  description: >-
    SHA-256 of the file's content without a write hold (the stack role labels the gateway container with it: a hold
    does not recreate the gateway).
  returned: always
  type: str
checked_routes:
  description: Route paths that ask for an API key.
  returned: always
  type: list
  sample: [/auth/v1/, /rest/v1/]
open_routes:
  description: Route paths that do not.
  returned: always
  type: list
  sample: [/functions/v1/, /auth/v1/verify]
consumers:
  description: Consumer names (never their keys).
  returned: always
  type: list
  sample: [anon, service_role]
functions_upstream:
  description: The base URLs the C(/functions/v1/) services proxy to, as written.
  returned: always
  type: list
  sample: [http://edge-runtime:9000]
write_hold:
  description: The write hold kept in the file (its record without the pass token); empty when none.
  returned: always
  type: dict
path:
  description: O(dest).
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as envmod
from ansible_collections.paycraft.selfhost.plugins.module_utils import gateway, write_hold

KEY_VARS = ("PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY")


def read_keys(module, env_file):
    host = module.params["host_name"] or os.uname()[1]
    if not env_file or not os.path.isfile(env_file):
        return None, f"{env_file or 'env_file'} does not exist on {host}"
    try:
        env = envmod.EnvFile.read(env_file).as_dict()
    except (OSError, envmod.EnvFileError) as exc:
        module.fail_json(msg=f"{env_file} on {host} cannot be read: {exc}. Check: ls -l {env_file}")
    missing = [name for name in KEY_VARS if not env.get(name)]
    if missing:
        module.fail_json(msg=(
            f"{' and '.join(missing)} missing from {env_file} on {host}: the gateway's key check needs both keys. "
            "Run: ansible-playbook playbooks/site.yml --tags config (it generates them from PAYCRAFT_JWT_SECRET), "
            "or switch the check off with paycraft_stack_key_check=false."))
    return (env[KEY_VARS[0]], env[KEY_VARS[1]]), None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kong=dict(type="dict", required=True),
            key_check=dict(type="bool", default=True),
            env_file=dict(type="path"),
            open_paths=dict(type="list", elements="str",
                            default=list(gateway.OPEN_AUTH_PATHS)),
            dest=dict(type="path", required=True),
            mode=dict(type="raw", default="0644"),
            header=dict(type="str", default=""),
            host_name=dict(type="str", default=""),
            hold_file=dict(type="path"),
            functions_host=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    config = p["kong"]
    note = None
    if p["key_check"]:
        keys, note = read_keys(module, p["env_file"])
        # check mode on a host not set up yet: describe the file with placeholder keys
        anon, service = keys if keys else ("<PAYCRAFT_ANON_KEY>", "<PAYCRAFT_SERVICE_ROLE_KEY>")
        try:
            config = gateway.with_key_check(config, anon, service, p["open_paths"])
        except gateway.GatewayError as exc:
            module.fail_json(msg=(
                f"The gateway's key check cannot be added to the release's Kong file: {exc}. Switch it off with "
                "paycraft_stack_key_check=false, or pin paycraft_version to a release whose kong.yml routes "
                "/rest/v1/ and /auth/v1/."))
        if keys is None and not module.check_mode:
            module.fail_json(msg=f"{note}: the gateway's key check reads the keys from it. Run: ansible-playbook "
                                 "playbooks/site.yml --tags config")
    # the checksum labels the gateway container: a hold or an upstream switch (written in place, then
    # reloaded) does not recreate it
    text_checksum = gateway.checksum(gateway.render(config, p["header"]))
    try:
        config = gateway.with_functions_upstream(config, p["functions_host"])
    except gateway.GatewayError as exc:
        module.fail_json(msg=f"The gateway's /functions/v1/ upstream cannot be pointed at "
                             f"{p['functions_host']!r}: {exc}")
    text = gateway.render(config, p["header"])
    dest = p["dest"]
    try:
        hold = write_hold.read_hold(p["hold_file"]) if p["hold_file"] else None
        if hold:
            text = gateway.text_with_hold(text, gateway.hold_spec(hold.get("pass", ""), hold.get("read_functions"),
                                                                  hold.get("retry_after", 30)))
    except (write_hold.HoldError, gateway.GatewayError) as exc:
        module.fail_json(msg=f"The write hold in force cannot be kept in the gateway's file: {exc}")
    before = None
    if os.path.isfile(dest):
        with open(dest, encoding="utf-8") as fh:
            before = fh.read()
    changed = before != text
    result = {"changed": changed, "path": dest, "checksum": text_checksum, **gateway.describe(config),
              "write_hold": write_hold.public(hold), "functions_upstream": gateway.functions_upstream(config)}
    if note:
        result["notes"] = [note + "; check mode shows the file with placeholders for the keys"]
    if module._diff:
        result["diff"] = {"before_header": dest, "after_header": dest,
                          "before": gateway.mask_text(before) if before is not None else "",
                          "after": gateway.mask_text(text)}
    if changed and not module.check_mode and before is None:
        mode = p["mode"]
        mode = int(mode, 8) if isinstance(mode, str) else int(mode)
        envmod.write_atomic(dest, text, mode=mode)
    elif changed and not module.check_mode:
        # in place: the running gateway's single-file bind mount sees it at its next reload
        write_hold.write_in_place(dest, text)
        module.set_mode_if_different(dest, p["mode"], True)
    elif not module.check_mode:
        result["changed"] = module.set_mode_if_different(dest, p["mode"], False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
