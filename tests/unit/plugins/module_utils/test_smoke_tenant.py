"""smoke_tenant: which contract a release has comes from PostgREST's answers, in a fixed order, idempotently."""

from __future__ import annotations

import json

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke_tenant as st

TOKEN = {"access_token": "jwt-smoke", "user": {"id": "uid-1"}}
UNKNOWN_FN = (404, json.dumps({"code": "PGRST202", "message": "Could not find the function public.x"}))
UNKNOWN_TABLE = (404, json.dumps({"code": "PGRST205", "message": "Could not find the table 'public.x'"}))
T1, T2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def finder(routes, **kw):
    """``routes``: (method, path prefix) -> (status, body) or a list of them (one per call, the last repeats)."""
    seen = []

    def request(method, path, headers, body):
        seen.append((method, path, headers, json.loads(body) if body else None))
        for (m, prefix), answer in routes.items():
            if m == method and path.startswith(prefix):
                if isinstance(answer, list):
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                if isinstance(answer, Exception):
                    raise answer
                status, text = answer
                return status, text if isinstance(text, str) else json.dumps(text)
        return 404, json.dumps({"message": "no Route matched with those values"})

    clock = Clock()
    f = st.SmokeTenant(request, anon_key="anon", email="smoke@x.invalid", password="pw", host="billing-1",
                       clock=clock, sleep=clock.sleep, timeout=kw.pop("timeout", 30), **kw)
    return f, seen


def auth(signup=(200, {"id": "uid-1"})):
    return {("POST", "/auth/v1/signup"): signup, ("POST", "/auth/v1/token"): (200, TOKEN)}


def test_the_existing_tenant_comes_first_and_nothing_is_created():
    routes = {**auth((422, {"error_code": "user_already_exists"})),
              ("GET", "/rest/v1/tenant_admins"): (200, [{"tenant_id": T2}, {"tenant_id": T1}]),
              ("GET", "/rest/v1/tenants"): (200, [{"id": T1, "api_key_test": "pk_test_a"},
                                                 {"id": T2, "api_key_test": "pk_test_b"}])}
    f, seen = finder(routes, tenant_id=T2)
    found = f.find()
    assert (found["contract"], found["api_key"], found["tenant_id"]) == ("existing", "pk_test_b", T2)
    assert not found["signed_up"] and not found["created"]
    assert not [s for s in seen if "/rpc/" in s[1]]
    # under the user's JWT, with the anon key as apikey, filtered to the user
    get = next(s for s in seen if s[1].startswith("/rest/v1/tenant_admins"))
    assert get[2]["Authorization"] == "Bearer jwt-smoke" and get[2]["apikey"] == "anon"
    assert "user_id=eq.uid-1" in get[1]
    assert f"id=in.({T1},{T2})" in next(s[1] for s in seen if s[1].startswith("/rest/v1/tenants"))


def test_no_tenant_yet_provision_app_makes_one_and_hands_out_the_per_tenant_webhook_path():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): (200, []),
              ("POST", "/rest/v1/rpc/provision_app"): (200, {
                  "tenant_id": T1, "name": "n", "api_key_test": "pk_test_new", "api_key_live": "pk_live_new",
                  "webhook_url": f"/functions/v1/stripe-webhook/{T1}"})}
    f, seen = finder(routes, app_name="smoke app")
    found = f.find()
    assert (found["contract"], found["api_key"], found["tenant_id"]) == ("provision_app", "pk_test_new", T1)
    assert found["signed_up"] and found["created"]
    assert found["webhook_pattern"] == "/functions/v1/<name>/<tenant_id>"
    assert next(s[3] for s in seen if s[1] == "/rest/v1/rpc/provision_app") == {"p_app_name": "smoke app"}
    assert "provision_app(p_app_name)" in found["message"] and "signed up now" in found["message"]


def test_without_provision_app_provision_tenant_is_called_with_the_users_id():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): (200, []),
              ("POST", "/rest/v1/rpc/provision_app"): UNKNOWN_FN,
              ("POST", "/rest/v1/rpc/provision_tenant"): (200, {"tenant_id": T1, "api_key_test": "pk_test_t",
                                                               "webhook_url": f"/functions/v1/stripe-webhook/{T1}"})}
    f, seen = finder(routes)
    found = f.find()
    assert found["contract"] == "provision_tenant" and found["api_key"] == "pk_test_t"
    assert next(s[3] for s in seen if s[1] == "/rest/v1/rpc/provision_tenant") == {
        "p_user_id": "uid-1", "p_app_name": st.DEFAULT_APP_NAME, "p_email": "smoke@x.invalid"}
    assert f.tried == ["existing", "provision_app", "provision_tenant"]


def test_the_older_shape_last_api_keys_filled_by_the_trigger_waits_for_the_row():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): UNKNOWN_TABLE,
              ("POST", "/rest/v1/rpc/"): UNKNOWN_FN,
              ("GET", "/rest/v1/api_keys"): [(200, []), (503, {"code": "PGRST002"}), (200, [{"key": "pk_test_k"}])]}
    f, _ = finder(routes)
    found = f.find()
    assert (found["contract"], found["api_key"], found["tenant_id"], found["webhook_pattern"]) == (
        "api_keys", "pk_test_k", None, None)
    assert not found["created"]


def test_an_empty_api_keys_quotes_the_runbook_trigger_entry_and_the_ledger():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): UNKNOWN_TABLE, ("POST", "/rest/v1/rpc/"): UNKNOWN_FN,
              ("GET", "/rest/v1/api_keys"): (200, [])}
    f, _ = finder(routes, timeout=9, ledger="ops.ledger")
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert 'Runbook section 7, "Tenant not auto-created on first signup"' in exc.value.message
    assert "billing-1" in exc.value.message and "SELECT version FROM ops.ledger" in exc.value.message


def test_no_contract_at_all_names_the_host_and_the_next_command_not_the_trigger():
    routes = {**auth(), ("GET", "/rest/v1/"): UNKNOWN_TABLE, ("POST", "/rest/v1/rpc/"): UNKNOWN_FN}
    f, _ = finder(routes)
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "none of the tenancy contracts" in exc.value.message and "billing-1" in exc.value.message
    assert "site.yml --tags migrations" in exc.value.message and "trigger" not in exc.value.message
    assert f.tried == list(st.CONTRACTS)


def test_a_refused_rpc_is_not_mistaken_for_an_absent_one():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): (200, []),
              ("POST", "/rest/v1/rpc/provision_app"): (401, {"code": "42501",
                                                            "message": "permission denied for function provision_app"})}
    f, _ = finder(routes)
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "provision_app() on billing-1" in exc.value.message and "42501" in exc.value.message
    assert "GRANT EXECUTE ON FUNCTION provision_app TO authenticated" in exc.value.message


def test_admin_rows_without_a_readable_tenant_name_the_missing_select_policy():
    routes = {**auth(), ("GET", "/rest/v1/tenant_admins"): (200, [{"tenant_id": T1}]),
              ("GET", "/rest/v1/tenants"): (200, [])}
    f, _ = finder(routes)
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "SELECT policy" in exc.value.message and "040" in exc.value.message


def test_a_wrong_password_stops_at_sign_in_and_names_the_credentials_file():
    routes = {("POST", "/auth/v1/signup"): (422, {}),
              ("POST", "/auth/v1/token"): (400, {"error": "invalid_grant", "error_description": "Invalid login"})}
    f, _ = finder(routes, credentials_file="/etc/paycraft/smoke-user.json")
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "cannot sign in on billing-1" in exc.value.message
    assert "/etc/paycraft/smoke-user.json" in exc.value.message and "paycraft_smoke_api_key" in exc.value.message


def test_an_unconfirmed_e_mail_is_named_not_blamed_on_the_password_file():
    routes = {("POST", "/auth/v1/signup"): (200, {"id": "uid-1"}),
              ("POST", "/auth/v1/token"): (400, {"error": "invalid_grant", "error_description": "Email not confirmed"})}
    f, _ = finder(routes)
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "before its e-mail address is confirmed" in exc.value.message and "billing-1" in exc.value.message
    assert "GOTRUE_MAILER_AUTOCONFIRM" in exc.value.message and "password" not in exc.value.message


def test_a_gateway_that_never_answers_gives_up_at_the_deadline():
    routes = {("POST", "/auth/v1/signup"): st.Unreachable("connection refused")}
    f, _ = finder(routes, timeout=10)
    with pytest.raises(st.TenantError) as exc:
        f.find()
    assert "within 10 s" in exc.value.message and "connection refused" in exc.value.message
    assert f.clock() >= 10


@pytest.mark.parametrize(("status", "body", "expected"), [
    (404, {"code": "PGRST202"}, True), (404, {"code": "PGRST205"}, True), (404, {"code": "42P01"}, True),
    (404, "", True), (404, {"code": "P0001", "message": "tenant not found"}, False),
    (400, {"code": "PGRST202"}, False), (401, {}, False), (200, [], False),
])
def test_absent_is_only_postgrest_s_unknown_object(status, body, expected):
    assert st.absent(status, body if isinstance(body, str) else json.dumps(body)) is expected


def test_webhook_pattern_only_when_the_path_carries_the_tenant_id():
    assert st.webhook_pattern(f"/functions/v1/stripe-webhook/{T1}", T1) == "/functions/v1/<name>/<tenant_id>"
    assert st.webhook_pattern(f"https://api.x/functions/v1/stripe-webhook/{T1}/", T1) == \
        "/functions/v1/<name>/<tenant_id>"
    assert st.webhook_pattern("/functions/v1/stripe-webhook", T1) is None
    assert st.webhook_pattern(None, T1) is None and st.webhook_pattern("/x/" + T1, None) is None
