#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, PayCraft self-hosting contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_smoke_tenant
short_description: Find the smoke user's tenant key through the release's own tenancy contract
version_added: "0.1.0"
description:
  - Signs up the smoke user through C(/auth/v1/signup) (an existing user is kept), signs in through
    C(/auth/v1/token), then finds its tenant's C(pk_test_) key under the user's JWT, through the first
    contract the release has, in this order.
  - C(existing) - the user already administers a tenant (C(tenant_admins) then C(tenants.api_key_test)); a re-run
    creates nothing.
  - C(provision_app) - C(POST /rest/v1/rpc/provision_app) (a new tenant for the user).
  - C(provision_tenant) - C(POST /rest/v1/rpc/provision_tenant) (idempotent per user).
  - C(api_keys) - the older reference shape, a signup trigger that fills C(public.api_keys).
  - A contract is absent when PostgREST answers 404 (C(PGRST202) for a function, C(PGRST205)/C(42P01) for a table);
    the release's version is never consulted. Any other refusal fails with what was wrong, the host and the next
    command.
  - Changes the database (a user, a tenant) only when nothing is there yet; in check mode nothing is sent.
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  api_url:
    description: The gateway URL.
    type: str
    default: http://127.0.0.1:54321
  anon_key:
    description: The anon key (C(PAYCRAFT_ANON_KEY)), sent as C(apikey).
    type: str
    required: true
  email:
    description: The smoke user.
    type: str
    required: true
  password:
    description: The smoke user's password.
    type: str
    required: true
  app_name:
    description: The name of a tenant created for the smoke user.
    type: str
    default: paycraft-selfhost smoke
  tenant_id:
    description: The tenant an earlier run used; preferred when the user administers several.
    type: str
  host:
    description: The inventory name, for the messages.
    type: str
    default: localhost
  credentials_file:
    description: Where the smoke user's password is kept, for the messages.
    type: str
    default: ""
  ledger:
    description: The migration ledger table, for the messages.
    type: str
    default: _paycraft_migrations
  timeout:
    description: Seconds each request may be asked again while the gateway or PostgREST is not ready.
    type: float
    default: 60
  ca_file:
    description: PEM file with the only roots to trust for https.
    type: path
attributes:
  check_mode:
    description: In check mode nothing is sent (a sign-up or a new tenant would change the database).
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
"""

EXAMPLES = r"""
- name: Find the smoke tenant's key
  paycraft.selfhost.paycraft_smoke_tenant:
    api_url: http://127.0.0.1:54321
    anon_key: "{{ paycraft_env.PAYCRAFT_ANON_KEY }}"
    email: smoke@paycraft-selfhost.invalid
    password: "{{ smoke_password }}"
  register: smoke_tenant
  no_log: true
"""

RETURN = r"""
api_key:
  description: The tenant's C(pk_test_) key.
  returned: success
  type: str
contract:
  description: How it was found, C(existing), C(provision_app), C(provision_tenant) or C(api_keys).
  returned: success
  type: str
tenant_id:
  description: The tenant's id (null for the C(api_keys) contract).
  returned: success
  type: str
webhook_pattern:
  description: The per-tenant webhook path the release hands out, C(/functions/v1/<name>/<tenant_id>), or null.
  returned: success
  type: str
signed_up:
  description: The user was signed up by this run.
  returned: success
  type: bool
message:
  description: Which tenant and contract the smoke test uses.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke, smoke_tenant


def main():
    module = AnsibleModule(argument_spec={
        "api_url": {"type": "str", "default": "http://127.0.0.1:54321"},
        "anon_key": {"type": "str", "required": True, "no_log": True},
        "email": {"type": "str", "required": True},
        "password": {"type": "str", "required": True, "no_log": True},
        "app_name": {"type": "str", "default": smoke_tenant.DEFAULT_APP_NAME},
        "tenant_id": {"type": "str"},
        "host": {"type": "str", "default": "localhost"},
        "credentials_file": {"type": "str", "default": ""},
        "ledger": {"type": "str", "default": smoke_tenant.DEFAULT_LEDGER},
        "timeout": {"type": "float", "default": 60.0},
        "ca_file": {"type": "path"},
    }, supports_check_mode=True)
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False, skipped=True, msg="check mode: no request sent")
    base = p["api_url"].rstrip("/")

    def request(method, path, headers, body):
        try:
            answer = smoke.http_request(base + path, method, headers, 10.0, True,
                                        data=None if body is None else body.encode(), ca_file=p["ca_file"])
        except smoke.NoAnswer as exc:
            raise smoke_tenant.Unreachable(exc.detail) from exc
        return answer.status, answer.text()

    finder = smoke_tenant.SmokeTenant(
        request, anon_key=p["anon_key"], email=p["email"], password=p["password"], host=p["host"],
        app_name=p["app_name"], tenant_id=p["tenant_id"], credentials_file=p["credentials_file"],
        ledger=p["ledger"], timeout=p["timeout"])
    try:
        found = finder.find()
    except smoke_tenant.TenantError as exc:
        module.fail_json(msg=exc.message, changed=False, tried=finder.tried)
    module.exit_json(changed=found["signed_up"] or found["created"], tried=finder.tried, **found)


if __name__ == "__main__":
    main()
