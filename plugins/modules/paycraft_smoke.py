#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, PayCraft self-hosting contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: paycraft_smoke
short_description: Smoke-test a self-hosted PayCraft stack (runbook section 6)
version_added: "0.1.0"
description:
  - Runs the smoke probes of the PayCraft self-hosting runbook (section 6 and its "other quick probes")
    in parallel against a running stack, each retrying until it passes or a shared deadline expires.
  - C(suite_config) fetches the SuiteConfig the SDK fetches, C(GET {api_url}{config_path}?apiKey={api_key}),
    through the gateway, and checks its shape (C(tenant_id), C(products), C(providers), C(paywall),
    C(cache_ttl_seconds)).
  - C(gateway) requests C(GET {api_url}/) and passes only on Kong's own answer there, 404
    C({"message":"no Route matched with those values"}) (or a non-error answer that Kong signs in its C(Server) header).
    Any 5xx fails it (C(gateway_error)); another answer means something else holds the port (C(not_kong)).
  - C(auth) requests GoTrue's C(GET {api_url}{auth_path}) (C(/auth/v1/health)) through the gateway and passes
    on 200 with GoTrue's health document (C(version), C(name)).
  - C(postgres) first speaks the PostgreSQL wire protocol like C(pg_isready) (C(accepting), C(rejecting) or
    C(no response)), then logs in as O(db_user) with the password and runs C(SELECT 1). A refused password
    fails it at once with the runbook's "Postgres container exits during boot".
  - C(dashboard) sends C(HEAD {dashboard_url}) (C(GET) when HEAD is refused with 405), follows redirects and
    expects a 200 at the end, like C(curl -fsSIL).
  - >-
    One more probe per name in O(webhook_functions) (the release's C(supabase/functions/*-webhook) directories,
    which the smoke role finds on the host). An unsigned C(POST {api_url}/functions/v1/<name>) (with
    O(webhook_tenant_id), the per-tenant path C(/functions/v1/<name>/<tenant_id>)) whose body is not JSON, with
    no C(apikey) or C(Authorization) header (providers send neither), must come back with the function's own
    refusal, a 400/422 JSON C({"error": ...}) or a plain-text 400/422/401/403 (C(Missing stripe-signature),
    C(Invalid JSON), C(Invalid signature)), which proves the gateway routes the URL the provider calls to the
    function. 404 C({"message":"Function not found"}) (C(webhook_not_found)), Kong's
    C(no Route matched) (C(webhook_no_route)), a 401/403 JSON C(message) (C(webhook_gateway_auth)), 502/503/504
    (C(webhook_upstream_down)), another 5xx (C(webhook_function_error)) or any other answer, a 200 included
    (C(webhook_unsigned_accepted)), fail it. These probes are counted after the five, named by the function.
  - Every failed probe names its likely cause, the runbook section that cause comes from (most are
    in Troubleshooting, section 7) and the next commands to run. The probes are read-only; the module
    never reports a change.
author:
  - paycraft.selfhost maintainers (@paycraft)
options:
  api_url:
    description:
      - The gateway URL (C(PAYCRAFT_API_URL), the SDK's C(supabaseUrl)).
    type: str
    default: http://127.0.0.1:54321
  config_path:
    description:
      - Path of the SuiteConfig function under O(api_url), the SDK's third C(configPath) argument.
      - Change it when the gateway is reverse-proxied under a sub-path.
    type: str
    default: /functions/v1/config
  api_key:
    description:
      - The tenant API key to probe with (C(pk_test_...) or C(pk_live_...)), sent as C(?apiKey=).
      - Required when O(probes) contains C(suite_config). Not a server secret, but kept out of logs.
    type: str
  api_key_file:
    description:
      - A JSON file on the managed host whose C(api_key) field is the key to probe with; read when
        O(api_key) is empty. The smoke role keeps its smoke tenant's key there.
    type: path
  anon_key:
    description:
      - The anon key (C(PAYCRAFT_ANON_KEY)). When given it is sent as C(apikey) and
        C(Authorization) (C(Bearer <anon_key>)) headers, as the SDK does.
      - When empty, C(PAYCRAFT_ANON_KEY) of O(env_file) on the managed host (the gateway's key check answers 401
        to a request without one).
    type: str
  auth_path:
    description:
      - Path of GoTrue's health endpoint under O(api_url).
    type: str
    default: /auth/v1/health
  key_check:
    description:
      - The gateway checks API keys (the stack's C(paycraft_stack_key_check)). The C(auth) probe then first
        sends its request with no C(apikey) header and needs Kong's 401 C(No API key found in request); a
        gateway that answers anything else fails the probe at once with the cause C(gateway_open), since
        C(/rest/v1/) and C(/auth/v1/) are open to anyone who can reach it.
      - V(false) (default) sends the keyed request only, for a gateway without the check.
    type: bool
    default: false
  dashboard_url:
    description:
      - The dashboard URL (C(PAYCRAFT_DASHBOARD_URL)).
    type: str
    default: http://127.0.0.1:3000
  db_host:
    description:
      - Host on which Postgres is published.
    type: str
    default: 127.0.0.1
  db_port:
    description:
      - Port on which Postgres is published (runbook C(54322)).
    type: int
    default: 54322
  db_user:
    description:
      - Role the C(postgres) probe logs in as.
    type: str
    default: postgres
  db_name:
    description:
      - Database the C(postgres) probe logs in to.
    type: str
    default: postgres
  db_password:
    description:
      - Password of O(db_user). When empty, C(PAYCRAFT_DB_PASSWORD) of O(env_file) on the managed host.
      - Required (directly or through O(env_file)) when O(probes) contains C(postgres). Never logged.
    type: str
  env_file:
    description:
      - The env file on the managed host (C(/etc/paycraft/paycraft.env)); its C(PAYCRAFT_DB_PASSWORD) is the
        password of the C(postgres) probe when O(db_password) is empty, its C(PAYCRAFT_ANON_KEY) the O(anon_key)
        when that is empty. The secret stays on the host.
    type: path
  probes:
    description:
      - The probes to run, in parallel.
    type: list
    elements: str
    choices: [suite_config, gateway, auth, postgres, dashboard]
    default: [suite_config, gateway, auth, postgres, dashboard]
  webhook_functions:
    description:
      - Names of the release's webhook functions (directories under C(supabase/functions), for example
        C(stripe-webhook), C(razorpay-webhook)); each gets a probe of its own, named like the function.
      - The path is O(config_path)'s directory plus the name (C(/functions/v1/stripe-webhook)), plus
        C(/<tenant_id>) with O(webhook_tenant_id).
      - Empty (the default, and a release without webhook functions) adds no probe, so the count in the
        summary stays that of O(probes).
    type: list
    elements: str
    default: []
  webhook_per_tenant:
    description:
      - The release hands out per-tenant webhook paths (PayCraft's C(provision_app) returns
        C(webhook_url) C(/functions/v1/stripe-webhook/<tenant_id>)), so the probes post to
        C(/functions/v1/<name>/<tenant_id>).
      - The tenant is O(webhook_tenant_id), else the C(tenant_id) field of O(api_key_file), else the nil UUID
        (the function refuses the unsigned POST before it looks the tenant up; the route is what is proven).
    type: bool
    default: false
  webhook_tenant_id:
    description: The tenant id of the per-tenant webhook paths (see O(webhook_per_tenant)).
    type: str
  timeout:
    description:
      - Seconds all probes together may take. Each probe retries until it passes or this deadline expires;
        answers that waiting cannot change (401, 400 missing_apiKey, a document that is not a SuiteConfig,
        a rejected certificate) stop its retries at once.
      - No attempt starts after the deadline, and each attempt may take O(request_timeout), so a run takes
        at most O(timeout) + O(request_timeout). V(0) means exactly one attempt per probe.
    type: float
    default: 120
  interval:
    description:
      - Seconds between two attempts of one probe.
    type: float
    default: 2
  request_timeout:
    description:
      - Seconds one attempt (one HTTP request, one Postgres ping) may take.
    type: float
    default: 5
  validate_certs:
    description:
      - Verify TLS certificates of https URLs. Set to V(false) only for a self-signed test certificate.
    type: bool
    default: true
  hold_file:
    description:
      - The record of a write hold (C(write-hold.json), module M(paycraft.selfhost.paycraft_write_hold)). When it
        exists, the webhook probes (the only POSTs) send its pass header, so an operation's own smoke test passes
        the hold that refuses every other write.
    type: path
  ca_file:
    description:
      - PEM file on the host with the root(s) to trust for https URLs, instead of the system's CA store
        (only these are trusted), e.g. the root of an internal ACME CA or of the proxy's internal CA.
      - Empty (default) trusts the system's CA store.
    type: path
attributes:
  check_mode:
    description: The probes are read-only, so they run in check mode too.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
notes:
  - The dashboard probe follows redirects (like C(curl -L)) and needs a 200 at the end; a 3xx alone fails.
  - The smoke role always includes C(suite_config); a subset without it (the stack role's wait for Postgres)
    proves only the components it names.
  - The api key, the anon key and the database password are never part of a result, a failure message or the
    log (a body that echoes them back is redacted). In an ad-hoc run (C(ansible -m ... -a ...)) pass them
    through variables (C(-a 'api_key={{ key }}' -e @vault.yml)), because ansible-core prints the literal C(-a)
    string of a failed ad-hoc task.
  - Proxies set in the environment (C(http_proxy), C(https_proxy), C(no_proxy)) apply, as they do for C(curl).
  - The probes and causes follow the PayCraft self-hosting runbook, section 6 (Smoke test) and section 7
    (Troubleshooting).
"""

EXAMPLES = r"""
- name: Smoke-test the stack on this host
  paycraft.selfhost.paycraft_smoke:
    api_key: pk_test_local
    api_key_file: /etc/paycraft/smoke-user.json
    env_file: /etc/paycraft/paycraft.env

- name: Wait at most 30 s for Postgres and the gateway only
  paycraft.selfhost.paycraft_smoke:
    probes: [gateway, postgres]
    env_file: /etc/paycraft/paycraft.env
    timeout: 30

- name: Probe a TLS-terminated deployment behind a sub-path
  paycraft.selfhost.paycraft_smoke:
    api_url: https://billing.acme.com
    config_path: /paycraft/functions/v1/config
    dashboard_url: https://dashboard.billing.acme.com
    api_key: "{{ paycraft_smoke_api_key }}"
    probes: [suite_config, gateway, dashboard]
  register: smoke

- name: Probe the release's webhook functions too (7 probes)
  paycraft.selfhost.paycraft_smoke:
    api_key_file: /etc/paycraft/smoke-user.json
    env_file: /etc/paycraft/paycraft.env
    webhook_functions: [stripe-webhook, razorpay-webhook]

- name: Show the result

  ansible.builtin.debug:
    msg: "{{ smoke.summary }}"
"""

RETURN = r"""
summary:
  description: One line with the count of passed probes and each probe's latency.
  returned: always
  type: str
  sample: "smoke: 5/5 probes passed (suite_config 35 ms, gateway 3 ms, auth 4 ms, postgres 9 ms, dashboard 12 ms)"
probes:
  description: One result per probe that ran, keyed by probe name (a webhook probe by its function's name).
  returned: always
  type: dict
  contains:
    ok:
      description: Whether the probe passed.
      type: bool
    attempts:
      description: How many attempts the probe made.
      type: int
    latency_ms:
      description: Duration of the last attempt in milliseconds.
      type: float
    status:
      description:
        - HTTP status of the last answer, or the Postgres state (C(logged in), C(login refused), C(query failed),
          C(rejecting), C(no response)),
          or when no HTTP answer came C(refused), C(timeout), C(closed) or C(tls).
      type: raw
    detail:
      description: What the last attempt saw, short (at most the first 200 characters of a body).
      type: str
    cause_id:
      description: Key of the cause in the collection's Troubleshooting table; null when the probe passed.
      type: str
    cause:
      description: The likely cause, one sentence.
      type: str
    explanation:
      description: What that cause means and how to fix it.
      type: str
    runbook:
      description:
        - The runbook section the cause comes from, for example C(runbook section 7, 'Port already in use');
          null for a cause the runbook does not list.
      type: str
    next:
      description: The next commands to run (paths relative to C(infra/selfhost), as in the runbook).
      type: list
      elements: str
  sample:
    postgres:
      ok: true
      attempts: 1
      latency_ms: 2.1
      status: logged in
      detail: logged in as postgres, SELECT 1 returned 1
      cause_id: null
      cause: null
      explanation: null
      runbook: null
      next: []
suite_config:
  description: The SuiteConfig document when the suite_config probe passed (it is not secret), else null.
  returned: always
  type: dict
  sample:
    tenant_id: tenant-3f2a
    products: []
    providers: []
    paywall: {}
    cache_ttl_seconds: 3600
msg:
  description:
    - On failure, the summary then one line per failed probe, in the form
      C(<probe>) C(<what was seen>) — likely cause C(<heading>), the runbook section in parentheses when the
      cause comes from one, then C(Next) and the commands.
  returned: failure
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres, smoke
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile, EnvFileError

ARGUMENT_SPEC = {
    "api_url": {"type": "str", "default": smoke.DEFAULTS["api_url"]},
    "config_path": {"type": "str", "default": smoke.DEFAULTS["config_path"]},
    "api_key": {"type": "str", "no_log": True},
    "api_key_file": {"type": "path"},
    "anon_key": {"type": "str", "no_log": True},
    "auth_path": {"type": "str", "default": smoke.DEFAULTS["auth_path"]},
    "key_check": {"type": "bool", "default": smoke.DEFAULTS["key_check"]},
    "dashboard_url": {"type": "str", "default": smoke.DEFAULTS["dashboard_url"]},
    "db_host": {"type": "str", "default": smoke.DEFAULTS["db_host"]},
    "db_port": {"type": "int", "default": smoke.DEFAULTS["db_port"]},
    "db_user": {"type": "str", "default": smoke.DEFAULTS["db_user"]},
    "db_name": {"type": "str", "default": smoke.DEFAULTS["db_name"]},
    "db_password": {"type": "str", "no_log": True},
    "env_file": {"type": "path"},
    "probes": {"type": "list", "elements": "str", "choices": list(smoke.PROBES), "default": list(smoke.PROBES)},
    "webhook_functions": {"type": "list", "elements": "str", "default": []},
    "webhook_per_tenant": {"type": "bool", "default": False},
    "webhook_tenant_id": {"type": "str"},
    "timeout": {"type": "float", "default": smoke.DEFAULTS["timeout"]},
    "interval": {"type": "float", "default": smoke.DEFAULTS["interval"]},
    "request_timeout": {"type": "float", "default": smoke.DEFAULTS["request_timeout"]},
    "validate_certs": {"type": "bool", "default": True},
    "ca_file": {"type": "path"},
    "hold_file": {"type": "path"},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = dict(module.params)
    key_file = params.pop("api_key_file")
    if params.pop("webhook_per_tenant"):
        if not params.get("webhook_tenant_id") and key_file:
            params["webhook_tenant_id"] = smoke.read_tenant_id_file(key_file)
        params["webhook_tenant_id"] = params.get("webhook_tenant_id") or smoke.NIL_TENANT
    else:
        params["webhook_tenant_id"] = None
    if not params.get("api_key") and key_file:
        try:
            params["api_key"] = smoke.read_api_key_file(key_file)
        except (OSError, ValueError) as exc:
            module.fail_json(msg=f"paycraft_smoke: cannot read an api_key from {key_file}: {exc}", changed=False)
    hold_file = params.pop("hold_file")
    params["hold_pass"] = smoke.read_hold_pass(hold_file) if hold_file else ""
    env_file = params.pop("env_file")
    if not params.get("anon_key") and env_file and os.path.isfile(env_file):
        # the role's paycraft_env is not set on every path (a resumed upgrade or rollback): the host's own file
        try:
            params["anon_key"] = EnvFile.read(env_file).get("PAYCRAFT_ANON_KEY") or None
        except (OSError, EnvFileError) as exc:
            module.fail_json(msg=f"paycraft_smoke: cannot read PAYCRAFT_ANON_KEY from {env_file}: {exc}", changed=False)
    if not params.get("db_password") and env_file and "postgres" in params["probes"]:
        try:
            params["db_password"] = _postgres.password_from_env_file(env_file)
        except _postgres.PostgresError as exc:
            module.fail_json(msg=f"paycraft_smoke: {exc.message}", changed=False)
    errors = smoke.validate(params)
    if errors:
        module.fail_json(msg="paycraft_smoke: invalid parameters: " + "; ".join(errors), changed=False)

    outcome = smoke.run_probes(params)
    result = {
        "changed": False,
        "probes": outcome["probes"],
        "suite_config": outcome["suite_config"],
        "summary": outcome["summary"],
    }
    if not outcome["ok"]:
        module.fail_json(msg=outcome["message"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
