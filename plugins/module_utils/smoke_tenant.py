# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The smoke tenant: sign up / sign in the smoke user, then find its tenant key through the release's own contract.

A release says which tenancy contract it has through PostgREST's answers, never through a version:

1. ``existing``: the user already administers a tenant (``tenant_admins`` -> ``tenants.api_key_test``,
   read under the user's JWT, as the dashboard reads it). Tried first: a re-run creates nothing.
2. ``provision_app``: ``POST /rest/v1/rpc/provision_app {p_app_name}`` (PayCraft's migration 048), a NEW
   tenant per call, returns ``tenant_id``, ``api_key_test``, ``webhook_url``.
3. ``provision_tenant``: ``POST /rest/v1/rpc/provision_tenant {p_user_id, p_app_name, p_email}`` (023/039),
   idempotent per user.
4. ``api_keys``: the older reference shape, a signup trigger (``handle_new_user_tenancy()``) that fills
   ``public.api_keys``, read as ``GET /rest/v1/api_keys``.

An unknown table or function is PostgREST's 404 (``PGRST202`` for a function, ``PGRST205``/``42P01`` for a
table): that contract is absent, the next one is tried. Anything else (a 401, a 500, a refusal) stops with
what was wrong, on which host, and the next command.

Pure Python, no Ansible import: HTTP goes through ``request(method, path, headers, body) -> (status, text)``
(raises :class:`Unreachable` when there is no HTTP answer), time through ``clock()``/``sleep(seconds)``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse

CONTRACTS = ("existing", "provision_app", "provision_tenant", "api_keys")
DESCRIBE = {
    "existing": "the existing tenant of the smoke user (tenant_admins -> tenants.api_key_test)",
    "provision_app": "provision_app(p_app_name), a new tenant for the smoke user",
    "provision_tenant": "provision_tenant(p_user_id, p_app_name, p_email)",
    "api_keys": "the key that the signup trigger put in public.api_keys (the older reference shape)",
}
DEFAULT_APP_NAME = "paycraft-selfhost smoke"
DEFAULT_LEDGER = "_paycraft_migrations"
RUNBOOK_TRIGGER = 'Runbook section 7, "Tenant not auto-created on first signup"'
# PostgREST is (re)loading its schema cache, or the gateway cannot reach it yet: ask again.
TRANSIENT = (502, 503, 504)


class Unreachable(Exception):
    """No HTTP answer at all (refused, timed out, TLS)."""


class TenantError(Exception):
    """Stop: ``message`` says what was wrong, on which host, and the next command."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def parse(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def absent(status, text):
    """PostgREST's answer for a table or function that this release does not have."""
    if status != 404:
        return False
    doc = parse(text)
    code = doc.get("code") if isinstance(doc, dict) else None
    # PGRST202: function not in the schema cache; PGRST205 / 42P01: table unknown; a bare 404 is PostgREST's too
    return code in (None, "PGRST202", "PGRST205", "42P01", "PGRST200")


def describe_error(status, text):
    doc = parse(text)
    if isinstance(doc, dict):
        parts = [str(doc[k]) for k in ("code", "message", "msg", "error_description", "error") if doc.get(k)]
        if parts:
            return f"HTTP {status} " + ": ".join(dict.fromkeys(parts))
    return f"HTTP {status} " + re.sub(r"\s+", " ", text or "").strip()[:160]


def webhook_pattern(webhook_url, tenant_id):
    """``/functions/v1/stripe-webhook/<uuid>`` -> ``/functions/v1/<name>/<tenant_id>``, or None when the path
    does not carry the tenant id (a release without per-tenant webhook paths)."""
    if not webhook_url or not tenant_id or not str(webhook_url).rstrip("/").endswith("/" + str(tenant_id)):
        return None
    path = urllib.parse.urlsplit(str(webhook_url)).path.rstrip("/")
    head = path[: -len(str(tenant_id)) - 1].rsplit("/", 1)[0]
    return f"{head}/<name>/<tenant_id>"


class SmokeTenant:
    """One run: ``find()`` returns the key and how it was found."""

    def __init__(self, request, *, anon_key, email, password, host="localhost", app_name=DEFAULT_APP_NAME,
                 tenant_id=None, credentials_file="", ledger=DEFAULT_LEDGER, db_container="paycraft_db",
                 timeout=60.0, interval=3.0, clock=time.monotonic, sleep=time.sleep):
        self.request, self.anon_key, self.email, self.password = request, anon_key, email, password
        self.host, self.app_name, self.hint = host, app_name, tenant_id
        self.credentials_file, self.ledger, self.db = credentials_file, ledger, db_container
        self.timeout, self.interval, self.clock, self.sleep = timeout, interval, clock, sleep
        self.tried = []

    # ------------------------------------------------------------ HTTP
    def ask(self, method, path, body=None, token=None):
        """One request, asked again while the answer is transient (no answer, 502/503/504) until the deadline."""
        headers = {"apikey": self.anon_key, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        deadline = self.clock() + self.timeout
        while True:
            try:
                status, text = self.request(method, path, headers, None if body is None else json.dumps(body))
                last = describe_error(status, text)
                if status not in TRANSIENT:
                    return status, text
            except Unreachable as exc:
                last = str(exc)
            if self.clock() >= deadline:
                raise TenantError(
                    f"The gateway on {self.host} gave no usable answer to {method} {path.split('?', 1)[0]} "
                    f"within {int(self.timeout)} s (last: {last}). Next: docker compose ps, then "
                    "docker logs paycraft_kong / paycraft_rest / paycraft_auth.")
            self.sleep(self.interval)

    # ------------------------------------------------------------ auth
    def sign_up(self):
        status, text = self.ask("POST", "/auth/v1/signup", {"email": self.email, "password": self.password})
        if status == 200:
            return True
        if status in (400, 422):  # the user exists (user_already_exists); sign in below
            return False
        raise TenantError(f"GoTrue on {self.host} refused to sign up the smoke user {self.email} "
                          f"({describe_error(status, text)} from /auth/v1/signup). Next: docker logs paycraft_auth; "
                          "sign-ups must be enabled (GOTRUE_DISABLE_SIGNUP=false), or set paycraft_smoke_api_key to "
                          "the key of an existing test tenant.")

    def sign_in(self):
        status, text = self.ask("POST", "/auth/v1/token?grant_type=password",
                                {"email": self.email, "password": self.password})
        doc = parse(text)
        if status == 400 and "not confirmed" in (text or "").lower():
            raise TenantError(
                f"The smoke user {self.email} signed up on {self.host} but cannot sign in before its e-mail address "
                f"is confirmed ({describe_error(status, text)}): GoTrue asks for a confirmation mail. Set "
                "paycraft_smoke_api_key to the key of an existing test tenant, or enable auto-confirmation "
                "(GOTRUE_MAILER_AUTOCONFIRM=true) where no mail can be delivered.")
        if status != 200 or not isinstance(doc, dict) or not doc.get("access_token"):
            raise TenantError(
                f"The smoke user {self.email} cannot sign in on {self.host} ({describe_error(status, text)} "
                f"from /auth/v1/token). Its password is kept in {self.credentials_file or 'the credentials file'}; "
                "if that file was replaced, delete the user in auth.users or set paycraft_smoke_api_key to an "
                "existing tenant key.")
        user = doc.get("user") if isinstance(doc.get("user"), dict) else {}
        return doc["access_token"], user.get("id") or self._claim_sub(doc["access_token"])

    @staticmethod
    def _claim_sub(token):
        import base64

        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return claims.get("sub")
        except (IndexError, ValueError):
            return None

    # ------------------------------------------------------------ the contracts
    def existing(self, token, user_id):
        query = "select=tenant_id" + (f"&user_id=eq.{user_id}" if user_id else "")
        status, text = self.ask("GET", f"/rest/v1/tenant_admins?{query}", token=token)
        if absent(status, text) or status == 400:  # no tenant_admins table (or no such column): not this release
            return None
        self._refused("GET /rest/v1/tenant_admins", status, text)
        ids = sorted({str(r["tenant_id"]) for r in parse(text) or [] if isinstance(r, dict) and r.get("tenant_id")})
        if not ids:
            return None
        status, text = self.ask("GET", f"/rest/v1/tenants?select=id,api_key_test&id=in.({','.join(ids)})",
                                token=token)
        if absent(status, text) or status == 400:  # tenants without api_key_test: an older shape
            return None
        self._refused("GET /rest/v1/tenants", status, text)
        rows = {str(r.get("id")): r for r in parse(text) or [] if isinstance(r, dict) and r.get("api_key_test")}
        if not rows:
            raise TenantError(
                f"The smoke user {self.email} on {self.host} administers tenant(s) {', '.join(ids)} in "
                "tenant_admins but cannot read their api_key_test through /rest/v1/tenants: the tenants SELECT "
                "policy for a tenant's admins is missing (PayCraft's migration 040_tenants_rls_select_policy). "
                f"Next: docker exec {self.db} psql -U postgres -d postgres -c \"SELECT policyname FROM pg_policies "
                "WHERE tablename = 'tenants';\", then site.yml --tags migrations.")
        chosen = self.hint if self.hint in rows else sorted(rows)[0]
        return {"api_key": rows[chosen]["api_key_test"], "tenant_id": chosen}

    def provision_app(self, token, user_id):
        return self._rpc("provision_app", {"p_app_name": self.app_name}, token)

    def provision_tenant(self, token, user_id):
        return self._rpc("provision_tenant", {"p_user_id": user_id, "p_app_name": self.app_name,
                                              "p_email": self.email}, token)

    def _rpc(self, name, args, token):
        status, text = self.ask("POST", f"/rest/v1/rpc/{name}", args, token=token)
        if absent(status, text):
            return None
        doc = parse(text)
        if status != 200 or not isinstance(doc, dict) or not str(doc.get("api_key_test") or "").startswith("pk_"):
            raise TenantError(
                f"{name}() on {self.host} did not give the smoke user {self.email} a tenant key "
                f"({describe_error(status, text) if status != 200 else 'HTTP 200 without api_key_test'}). "
                f"It must be granted to authenticated (GRANT EXECUTE ON FUNCTION {name} TO authenticated) and "
                f"return api_key_test. Next: docker exec {self.db} psql -U postgres -d postgres -c "
                f"\"\\df+ public.{name}\"; docker logs paycraft_rest.")
        return {"api_key": doc["api_key_test"], "tenant_id": str(doc.get("tenant_id") or "") or None,
                "webhook_url": doc.get("webhook_url")}

    def api_keys(self, token, user_id):
        deadline = self.clock() + self.timeout
        while True:
            status, text = self.ask("GET", "/rest/v1/api_keys?select=key&limit=1", token=token)
            if absent(status, text):
                return None
            self._refused("GET /rest/v1/api_keys", status, text)
            rows = [r for r in parse(text) or [] if isinstance(r, dict) and r.get("key")]
            if rows:
                return {"api_key": rows[0]["key"], "tenant_id": None}
            if self.clock() >= deadline:
                raise TenantError(
                    f"The smoke user {self.email} on {self.host} has no tenant API key in public.api_keys, and "
                    "this release has neither provision_app nor provision_tenant: its tenants come from the "
                    f"signup trigger. {RUNBOOK_TRIGGER}: confirm the migration that creates "
                    "handle_new_user_tenancy() is in the ledger and its trigger is on auth.users: "
                    f"docker exec {self.db} psql -U postgres -d postgres -c \"SELECT version FROM {self.ledger} "
                    "ORDER BY version;\" (then ansible-playbook playbooks/doctor.yml).")
            self.sleep(self.interval)

    def _refused(self, what, status, text):
        if status != 200:
            raise TenantError(f"{what} under the smoke user's JWT on {self.host} was refused "
                              f"({describe_error(status, text)}). Next: docker logs paycraft_rest; "
                              "ansible-playbook playbooks/doctor.yml.")

    # ------------------------------------------------------------ all
    def find(self):
        signed_up = self.sign_up()
        token, user_id = self.sign_in()
        for contract in CONTRACTS:
            self.tried.append(contract)
            found = getattr(self, contract)(token, user_id)
            if found:
                webhook_url = found.get("webhook_url")
                return {"api_key": found["api_key"], "contract": contract, "signed_up": signed_up,
                        "created": contract in ("provision_app", "provision_tenant"),
                        "tenant_id": found.get("tenant_id"), "webhook_url": webhook_url,
                        "webhook_pattern": webhook_pattern(webhook_url, found.get("tenant_id")),
                        "message": self.message(contract, signed_up)}
        raise TenantError(
            f"The release on {self.host} has none of the tenancy contracts the smoke test knows: PostgREST "
            "answered 404 for tenant_admins, rpc/provision_app, rpc/provision_tenant and api_keys. Its migrations "
            f"may not have run. Next: docker exec {self.db} psql -U postgres -d postgres -c \"SELECT version FROM "
            f"{self.ledger} ORDER BY version;\", then site.yml --tags migrations; or set paycraft_smoke_api_key to "
            "the key of an existing test tenant.")

    def message(self, contract, signed_up):
        how = "signed up now" if signed_up else "signed up earlier"
        return (f"No paycraft_smoke_api_key was given: the smoke test uses the tenant of {self.email} ({how}), "
                f"its key found through {DESCRIBE[contract]}; password and key in "
                f"{self.credentials_file or 'the credentials file'}.")
