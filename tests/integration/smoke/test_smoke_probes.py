"""The smoke library against real HTTP servers, real sockets and the real PostgreSQL fixture."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke
from paycraft_testlib import missing
from smoke_servers import (
    ANON_KEY,
    API_KEY,
    SUITE_CONFIG,
    AllBadGateway,
    AuthDown,
    AuthKeyRefused,
    AuthNotGoTrue,
    BadGateway,
    Dashboard,
    DashboardBroken,
    DashboardLogin,
    DashboardNoHead,
    DashboardRedirect,
    FunctionNotFound,
    MissingPaywall,
    NotJson,
    NotKong,
    PayCraftWebhooks,
    RestUnreachable,
    RootBadGateway,
    ServiceRoleRejected,
    Stack,
    WebhookAcceptsUnsigned,
    WebhookBadGateway,
    WebhookKeyAuth,
    WebhookNoRoute,
    WebhooksNotDeployed,
    WrongTypes,
)

FAST = {"timeout": 1.0, "interval": 0.1, "request_timeout": 1.0}


def run(**params):
    merged = {**FAST, "api_key": API_KEY, **params}
    return smoke.run_probes(merged)


def only(probe, **params):
    return run(probes=[probe], **params)["probes"][probe]


def pg_params(pg, **over):
    return {"db_host": pg.host, "db_port": pg.port, "db_user": pg.user, "db_password": pg.password, **over}


# ----------------------------------------------------------------- all five
@pytest.mark.postgres
def test_healthy_stack_passes_all_five_probes(http_server, pg):
    gateway = http_server(Stack)
    dashboard = http_server(Dashboard)
    result = run(api_url=gateway.url, anon_key=ANON_KEY, dashboard_url=dashboard.url,
                 **pg_params(pg), request_timeout=10.0)  # one attempt each, even on a busy box
    assert result["ok"], result["message"]
    assert set(result["probes"]) == set(smoke.PROBES)
    for name, probe in result["probes"].items():
        assert probe["ok"] is True, name
        assert probe["attempts"] == 1
        assert probe["latency_ms"] >= 0
        assert probe["cause"] is None and probe["next"] == []
    assert result["suite_config"] == SUITE_CONFIG
    assert result["probes"]["gateway"]["status"] == 404
    assert "no Route matched" in result["probes"]["gateway"]["detail"]
    assert result["probes"]["postgres"]["status"] == "logged in"
    assert result["probes"]["postgres"]["detail"] == "logged in as postgres, SELECT 1 returned 1"
    assert result["probes"]["auth"]["detail"] == "GoTrue v2.151.0"
    assert result["probes"]["dashboard"]["status"] == 200
    assert result["summary"].startswith("smoke: 5/5 probes passed (suite_config ")
    assert pg.password not in repr(result)
    assert result["message"] == result["summary"]
    # the SDK's request: apiKey in the query, the anon key as apikey + Bearer headers
    config_requests = [s for s in gateway.seen if s["path"] == "/functions/v1/config"]
    assert config_requests[0]["query"] == {"apiKey": [API_KEY]}
    assert config_requests[0]["headers"]["apikey"] == ANON_KEY
    assert config_requests[0]["headers"]["authorization"] == f"Bearer {ANON_KEY}"
    assert [s["method"] for s in dashboard.seen] == ["HEAD"]
    assert "/auth/v1/health" in [s["path"] for s in gateway.seen]


# -------------------------------------------- one broken component at a time
BROKEN = {
    # component: (gateway handler, dashboard handler, postgres password is wrong, cause id, runbook heading)
    "suite_config": (FunctionNotFound, Dashboard, False, "function_not_found",
                     "The edge runtime has no config function to serve"),
    "gateway": (RootBadGateway, Dashboard, False, "gateway_error", "The gateway answers with a server error"),
    "auth": (AuthDown, Dashboard, False, "auth_down", "GoTrue (auth) does not answer behind the gateway"),
    "postgres": (Stack, Dashboard, True, "postgres_login_failed",
                 "Postgres refuses the login with the env file's password"),
    "dashboard": (Stack, DashboardRedirect, False, "dashboard_error", "The dashboard answers with an error"),
}


@pytest.mark.postgres
@pytest.mark.parametrize("component", list(BROKEN))
def test_breaking_one_component_fails_exactly_its_probe(http_server, pg, component):
    """A healthy stack with one component broken: that probe fails with its cause, every other one passes."""
    gateway_handler, dashboard_handler, wrong_password, cause_id, heading = BROKEN[component]
    gateway, dashboard = http_server(gateway_handler), http_server(dashboard_handler)
    password = "not-the-password-0c41" if wrong_password else pg.password
    result = run(api_url=gateway.url, anon_key=ANON_KEY, dashboard_url=dashboard.url,
                 **pg_params(pg, db_password=password), timeout=0.5, request_timeout=10.0)
    assert not result["ok"]
    failed = {name for name, probe in result["probes"].items() if not probe["ok"]}
    assert failed == {component}, result["message"]
    probe = result["probes"][component]
    assert probe["cause_id"] == cause_id
    assert probe["cause"] == heading
    assert result["summary"].startswith("smoke: 4/5 probes passed")
    assert f"{component}: " in result["message"] and f"likely cause: {heading}" in result["message"]
    assert "not-the-password-0c41" not in repr(result)


def test_config_path_override_is_used(http_server):
    class SubPath(Stack):
        def do_GET(self):
            if self.path.startswith("/billing"):
                self.path = self.path[len("/billing"):]
                return super().do_GET()
            return self._send(404, {"message": "no Route matched with those values"})

    server = http_server(SubPath)
    probe = only("suite_config", api_url=server.url, config_path="/billing/functions/v1/config")
    assert probe["ok"], probe
    wrong = only("suite_config", api_url=server.url)
    assert wrong["cause_id"] == "no_route"
    assert "/functions/v1/config" in wrong["explanation"]


# -------------------------------------------------------------- suite_config
def test_function_not_found_names_the_runbook_entry(http_server):
    server = http_server(FunctionNotFound)
    probe = only("suite_config", api_url=server.url, timeout=2.0)
    assert not probe["ok"]
    assert probe["status"] == 404
    assert probe["cause"] == smoke.CAUSES["function_not_found"]["heading"]
    assert probe["runbook"] == "runbook section 7, 'Edge function returns 404 for /functions/v1/config'"
    assert probe["next"] == ["ls ../../supabase/functions/config", "docker logs paycraft_edge_runtime --tail 100"]
    assert "Function not found" in probe["detail"]
    assert probe["attempts"] > 1  # a runtime still importing may serve it later: retried to the deadline


def test_wrong_anon_key_is_the_401_entry_and_stops_retrying(http_server):
    server = http_server(Stack)
    probe = only("suite_config", api_url=server.url, anon_key="eyJ.not-the-anon-key.x")
    assert probe["status"] == 401
    assert probe["cause"] == smoke.CAUSES["key_mismatch"]["heading"]
    assert probe["runbook"] == "runbook section 7, 'SDK throws \"401 Unauthorized\" from a self-hosted backend'"
    assert "byte for byte" in probe["explanation"]
    assert any("paycraft_config_resign_keys=true" in cmd for cmd in probe["next"])
    assert probe["attempts"] == 1
    assert len([s for s in server.seen if s["path"] == "/functions/v1/config"]) == 1


def test_unknown_api_key_is_redacted_from_what_the_server_echoed(http_server):
    server = http_server(Stack)
    secret = "pk_test_nobody_owns_this_91ac"
    result = run(probes=["suite_config"], api_url=server.url, api_key=secret)
    probe = result["probes"]["suite_config"]
    assert probe["status"] == 401
    assert server.seen[0]["query"] == {"apiKey": [secret]}
    assert secret not in repr(result)
    assert smoke.REDACTED in probe["detail"]
    assert probe["cause_id"] == "api_key_unknown" and probe["attempts"] == 1
    assert "/settings/api-keys" in probe["next"][0]


def test_a_key_echoed_at_the_preview_boundary_does_not_leak_in_part(http_server):
    secret = "pk_test_boundary_0f9e8d7c6b5a"

    class Echo(Stack):
        def config(self, api_key):
            return self._send(401, b"x" * 190 + api_key.encode(), "text/plain")

    probe = only("suite_config", api_url=http_server(Echo).url, api_key=secret)
    assert probe["status"] == 401
    assert "pk_test_b" not in probe["detail"]
    assert probe["detail"].startswith("HTTP 401 " + "x" * 190 + "********")


def test_missing_api_key_answer_points_at_the_probe(http_server):
    """validate() refuses an empty api_key; the classification of the function's 400 is checked here."""
    server = http_server(Stack)
    params = {**smoke.DEFAULTS, "api_url": server.url, "api_key": ""}
    outcome = smoke.probe_suite_config(params, 1.0)
    assert outcome.status == 400
    assert outcome.cause == "probe_config" and outcome.final
    assert "missing_apiKey" in outcome.detail
    assert server.seen[0]["query"] == {}


@pytest.mark.parametrize(
    ("handler", "cause_id", "command"),
    [
        (RestUnreachable, "rest_unreachable", "docker logs paycraft_rest --tail 100"),
        (ServiceRoleRejected, "key_mismatch",
         "ansible-playbook <your usual command> -e paycraft_config_resign_keys=true"),
    ],
)
def test_config_function_errors_of_the_reference_release(http_server, handler, cause_id, command):
    probe = only("suite_config", api_url=http_server(handler).url)
    assert probe["cause_id"] == cause_id
    assert command in probe["next"]


def test_bad_gateway_is_upstream_down(http_server):
    server = http_server(BadGateway)
    probe = only("suite_config", api_url=server.url)
    assert probe["status"] == 502
    assert probe["cause_id"] == "upstream_down"
    assert probe["next"] == ["docker compose ps", "docker logs paycraft_edge_runtime --tail 100"]


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (MissingPaywall, "missing keys: paywall"),
        (WrongTypes, "products is an object, not a list"),
        (WrongTypes, "cache_ttl_seconds is a string, not an integer"),
        (NotJson, "not JSON"),
    ],
)
def test_not_a_suite_config(http_server, handler, expected):
    server = http_server(handler)
    result = run(probes=["suite_config"], api_url=server.url)
    probe = result["probes"]["suite_config"]
    assert not result["ok"]
    assert probe["status"] == 200
    assert probe["cause"] == "The release's config function does not return a SuiteConfig"
    assert expected in probe["detail"]
    assert expected in probe["explanation"]
    assert result["suite_config"] is None


def test_refused_gateway_names_kong_and_port_in_use(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    result = run(probes=["suite_config", "gateway"], api_url=url, timeout=0.5)
    for name in ("suite_config", "gateway"):
        probe = result["probes"][name]
        assert probe["status"] == "refused"
        assert probe["cause_id"] == "gateway_down"
        assert f"lsof -iTCP:{closed_port} -sTCP:LISTEN -n -P" in probe["next"]
        assert "docker logs paycraft_kong" in probe["next"]
        assert probe["attempts"] >= 1
    assert result["summary"].startswith("smoke: 0/2 probes passed (suite_config FAILED after ")


def test_server_that_comes_up_late_passes_after_retries(late_server):
    port, started = late_server(Stack, delay=1.0)
    probe = only("gateway", api_url=f"http://127.0.0.1:{port}", timeout=20, interval=0.2)
    assert started.is_set()
    assert probe["ok"], probe
    assert probe["attempts"] >= 2
    assert probe["status"] == 404


# ------------------------------------------------------------------ gateway
@pytest.mark.parametrize("handler", [Stack, BadGateway, FunctionNotFound])
def test_kongs_no_route_answer_means_the_gateway_is_up(http_server, handler):
    server = http_server(handler)
    probe = only("gateway", api_url=server.url + "/")
    assert probe["ok"] and probe["status"] == 404
    assert len(probe["detail"]) <= len("HTTP 404 ") + smoke.BODY_PREVIEW + 3


@pytest.mark.parametrize("handler", [RootBadGateway, AllBadGateway])
def test_a_5xx_on_the_gateway_fails_it(http_server, handler):
    probe = only("gateway", api_url=http_server(handler).url, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 502
    assert probe["cause_id"] == "gateway_error"
    assert "docker logs paycraft_kong" in probe["next"]


def test_something_else_on_the_gateway_port_is_not_kong(http_server):
    server = http_server(NotKong)
    probe = only("gateway", api_url=server.url, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 200
    assert probe["cause_id"] == "not_kong"
    assert f"lsof -iTCP:{server.port} -sTCP:LISTEN -n -P" in probe["next"]


def test_gateway_body_preview_is_cut_at_200_characters(http_server):
    class Chatty(Stack):
        def root(self):
            return self._send(503, b"x" * 5000, "text/plain")

    probe = only("gateway", api_url=http_server(Chatty).url, timeout=0.3)
    assert probe["detail"] == "HTTP 503 " + "x" * 200 + "..."


# --------------------------------------------------------------------- auth
def test_auth_health_through_the_gateway(http_server):
    server = http_server(Stack)
    probe = only("auth", api_url=server.url, anon_key=ANON_KEY)
    assert probe["ok"] and probe["status"] == 200 and probe["detail"] == "GoTrue v2.151.0"
    request = next(s for s in server.seen if s["path"] == "/auth/v1/health")
    assert request["headers"]["apikey"] == ANON_KEY


def test_auth_down_behind_kong_fails_auth(http_server):
    probe = only("auth", api_url=http_server(AuthDown).url, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 502
    assert probe["cause_id"] == "auth_down"
    assert probe["next"] == ["docker compose ps auth", "docker logs paycraft_auth --tail 100"]


def test_auth_key_refused_by_the_gateway_names_the_kong_file(http_server):
    probe = only("auth", api_url=http_server(AuthKeyRefused).url, anon_key=ANON_KEY, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 401
    assert probe["cause_id"] == "gateway_key_refused"
    assert probe["next"][0].startswith("ansible-playbook playbooks/site.yml --tags stack")
    assert ANON_KEY not in json.dumps(probe)


class _KeyChecked(Stack):
    key_check = True


def test_key_check_on_a_gateway_that_refuses_no_key_passes(http_server):
    server = http_server(_KeyChecked)
    probe = only("auth", api_url=server.url, anon_key=ANON_KEY, key_check=True)
    assert probe["ok"] and probe["detail"] == "GoTrue v2.151.0", probe
    # first the request with no key (refused by the gateway), then the keyed one
    asked = [s["headers"].get("apikey") for s in server.seen if s["path"] == "/auth/v1/health"]
    assert asked == [None, ANON_KEY]


def test_key_check_on_an_open_gateway_fails_at_once_and_names_the_fix(http_server):
    server = http_server(Stack)  # answers /auth/v1/health without a key
    probe = only("auth", api_url=server.url, anon_key=ANON_KEY, key_check=True, timeout=5.0)
    assert not probe["ok"] and probe["status"] == 200
    assert probe["cause_id"] == "gateway_open"
    assert probe["attempts"] == 1  # waiting cannot close the gateway: final
    assert probe["cause"] == "The gateway lets requests through without an API key"
    assert "without an apikey: HTTP 200" in probe["detail"]
    assert "paycraft_stack_key_check" in probe["explanation"]
    assert probe["next"][0].startswith("ansible-playbook playbooks/site.yml --tags stack")
    # the keyed request never went out
    assert [s["headers"].get("apikey") for s in server.seen if s["path"] == "/auth/v1/health"] == [None]


def test_key_check_with_auth_down_behind_an_open_gateway_is_retried_as_auth_down(http_server):
    # a 502 to the request with no key: passed on to a stopped GoTrue; waiting may change it
    probe = only("auth", api_url=http_server(AuthDown).url, anon_key=ANON_KEY, key_check=True, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 502
    assert probe["cause_id"] == "auth_down" and probe["attempts"] > 1


def test_without_key_check_the_open_gateway_passes(http_server):
    probe = only("auth", api_url=http_server(Stack).url, anon_key=ANON_KEY)
    assert probe["ok"], probe


def test_auth_route_that_is_not_gotrue_fails_auth(http_server):
    probe = only("auth", api_url=http_server(AuthNotGoTrue).url, timeout=0.3)
    assert not probe["ok"] and probe["cause_id"] == "auth_error"


# ----------------------------------------------------------------- postgres
@pytest.mark.postgres
def test_postgres_logs_in_on_the_real_cluster(pg):
    state, detail = smoke.pg_ping(pg.host, pg.port, 2.0)
    assert state == smoke.PG_ACCEPTING, detail
    probe = only("postgres", **pg_params(pg))
    assert probe["ok"] and probe["status"] == "logged in"


@pytest.mark.postgres
def test_postgres_wrong_password_fails_with_the_runbook_entry(pg):
    """A server that answers is not enough: the login with the env file's password must succeed."""
    probe = only("postgres", **pg_params(pg, db_password="wrong-password-7e1d"))
    assert not probe["ok"]
    assert probe["status"] == "login refused"
    assert "password authentication failed" in probe["detail"]
    assert probe["cause"] == "Postgres refuses the login with the env file's password"
    assert probe["runbook"] == "runbook section 7, 'Postgres container exits during boot'"
    assert probe["attempts"] == 1  # a password does not fix itself
    assert "wrong-password-7e1d" not in repr(probe)


@pytest.mark.postgres
def test_postgres_unknown_database_fails(pg):
    probe = only("postgres", **pg_params(pg, db_name="no_such_db_91"), timeout=0.3)
    assert not probe["ok"] and probe["cause_id"] == "postgres_query_failed"
    assert "no_such_db_91" in probe["explanation"]


def test_postgres_probe_needs_a_password():
    with pytest.raises(ValueError, match="db_password is required when the postgres probe runs"):
        smoke.run_probes({"probes": ["postgres"], "timeout": 0})


def test_postgres_starting_up_is_rejecting(pg_starting_server):
    port = pg_starting_server.server_address[1]
    probe = only("postgres", db_host="127.0.0.1", db_port=port, db_password="unused-pw-4f2a", timeout=0.5)
    assert not probe["ok"]
    assert probe["status"] == smoke.PG_REJECTING
    assert "57P03" in probe["detail"] and "starting up" in probe["detail"]
    assert probe["cause"] == smoke.CAUSES["postgres_rejecting"]["heading"]
    assert probe["runbook"] == "runbook section 7, 'migrations-bootstrap.sh aborts with \"could not connect\"'"
    assert probe["next"] == ["docker exec paycraft_db pg_isready -U postgres", "docker logs paycraft_db --tail 50"]
    protocol, payload = pg_starting_server.startups[0]
    assert protocol == smoke.PG_PROTOCOL_V3
    assert payload.startswith(b"user\0postgres\0database\0postgres\0")


def test_postgres_closed_port_is_no_response(closed_port):
    probe = only("postgres", db_host="127.0.0.1", db_port=closed_port, db_password="unused-pw-4f2a", timeout=0.3)
    assert probe["status"] == smoke.PG_NO_RESPONSE
    assert probe["cause_id"] == "postgres_no_response"
    assert "'Postgres container exits during boot'" in probe["runbook"]


def test_postgres_silent_server_is_no_response(silent_server):
    port = silent_server.server_address[1]
    state, detail = smoke.pg_ping("127.0.0.1", port, 0.3)
    assert state == smoke.PG_NO_RESPONSE
    assert "no answer" in detail


def test_http_server_is_not_postgres(http_server):
    """An HTTP server waits for a request line that never comes: no PostgreSQL answer."""
    state, _detail = smoke.pg_ping("127.0.0.1", http_server(Stack).port, 0.5)
    assert state == smoke.PG_NO_RESPONSE


# ---------------------------------------------------------------- dashboard
def test_dashboard_head_falls_back_to_get_on_405(http_server):
    server = http_server(DashboardNoHead)
    probe = only("dashboard", dashboard_url=server.url)
    assert probe["ok"] and probe["status"] == 200
    assert [s["method"] for s in server.seen] == ["HEAD", "GET"]


def test_dashboard_redirect_is_followed_to_a_200(http_server):
    server = http_server(DashboardLogin)
    probe = only("dashboard", dashboard_url=server.url)
    assert probe["ok"] and probe["status"] == 200
    assert probe["detail"] == "HTTP 200 after 307 -> /login"
    assert [s["path"] for s in server.seen] == ["/", "/login"]


def test_dashboard_that_only_redirects_fails(http_server):
    server = http_server(DashboardRedirect)
    probe = only("dashboard", dashboard_url=server.url, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 307
    assert probe["cause_id"] == "dashboard_error"
    assert "redirects: 307 -> /login" in probe["explanation"]


def test_dashboard_500_fails_like_curl_f(http_server):
    probe = only("dashboard", dashboard_url=http_server(DashboardBroken).url, timeout=0.3)
    assert not probe["ok"] and probe["status"] == 500
    assert probe["cause_id"] == "dashboard_error"


def test_dashboard_refused_is_the_npm_install_entry(closed_port):
    probe = only("dashboard", dashboard_url=f"http://127.0.0.1:{closed_port}", timeout=0.3)
    assert probe["cause"] == smoke.CAUSES["dashboard_down"]["heading"]
    assert probe["runbook"] == "runbook section 7, 'Dashboard build hangs at npm install'"
    assert probe["next"][0] == "docker logs paycraft_dashboard --tail 50"
    assert "npm install --no-audit --no-fund" in probe["next"][1]


# ------------------------------------------------------- parallel, deadline
def test_probes_run_in_parallel_under_one_deadline(closed_port, silent_server):
    """Four failing probes, each retrying: all stop at the shared deadline, none waits for another."""
    result = smoke.run_probes({
        "api_key": API_KEY, "api_url": f"http://127.0.0.1:{closed_port}",
        "dashboard_url": f"http://127.0.0.1:{closed_port}", "db_host": "127.0.0.1",
        "db_port": silent_server.server_address[1], "db_password": "unused-pw-4f2a",
        "timeout": 1.0, "interval": 0.2, "request_timeout": 0.4,
    })
    assert not result["ok"]
    assert result["summary"].startswith("smoke: 0/5 probes passed")
    lines = result["message"].splitlines()
    assert lines[0] == result["summary"]
    assert [line.split(":", 1)[0] for line in lines[1:]] == list(smoke.PROBES)
    assert all(" — likely cause: " in line and ". Next: " in line for line in lines[1:])
    # a refused probe retries several times within the deadline; the silent postgres at most 1s / 0.4s
    assert result["probes"]["gateway"]["attempts"] >= 2
    assert 1 <= result["probes"]["postgres"]["attempts"] <= 4


# --------------------------------------------------------------------- TLS
def test_https_self_signed_fails_verification_unless_validate_certs_false(http_server, tmp_path):
    if shutil.which("openssl") is None:
        missing("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = http_server(Dashboard)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.port}"

    refused = only("dashboard", dashboard_url=url, timeout=5)
    assert refused["status"] == "tls" and refused["cause_id"] == "tls_error"
    assert refused["attempts"] == 1  # a certificate does not fix itself
    assert refused["next"] == [f"curl -vI {url}"]

    accepted = only("dashboard", dashboard_url=url, validate_certs=False)
    assert accepted["ok"] and accepted["status"] == 200


# ------------------------------------------------------------ webhook functions
WEBHOOKS = ["stripe-webhook", "razorpay-webhook"]


def test_webhook_routes_reach_their_functions(http_server):
    gateway = http_server(Stack)
    result = run(api_url=gateway.url, anon_key=ANON_KEY, probes=["gateway"], webhook_functions=WEBHOOKS)
    assert result["ok"], result["message"]
    assert result["summary"].startswith("smoke: 3/3 probes passed (gateway ")
    assert ", stripe-webhook " in result["summary"] and ", razorpay-webhook " in result["summary"]
    for name in WEBHOOKS:
        assert result["probes"][name]["status"] == 400
        assert result["probes"][name]["detail"] == "HTTP 400 missing_signature (the function refuses an unsigned POST)"
    posts = [s for s in gateway.seen if s.get("method") == "POST"]
    assert sorted(s["path"] for s in posts) == ["/functions/v1/razorpay-webhook", "/functions/v1/stripe-webhook"]
    # as a provider: no apikey, no bearer, no signature
    for s in posts:
        assert not {"apikey", "authorization", "stripe-signature", "x-razorpay-signature"} & set(s["headers"])
        assert s["body"] == smoke.WEBHOOK_PROBE_BODY


def test_paycraft_s_own_functions_on_per_tenant_paths(http_server):
    """Real PayCraft: plain-text refusals, a function that takes any JSON body, paths that carry the tenant."""
    gateway = http_server(PayCraftWebhooks)
    names = ["paddle-webhook", "razorpay-webhook", "stripe-webhook"]
    tenant = "6f1c2d3e-0000-4000-8000-000000000001"
    result = run(api_url=gateway.url, anon_key=ANON_KEY, probes=["gateway"], webhook_functions=names,
                 webhook_tenant_id=tenant)
    assert result["ok"], result["message"]
    assert result["probes"]["stripe-webhook"]["detail"] == (
        "HTTP 400 Missing stripe-signature (the function refuses an unsigned POST)")
    assert result["probes"]["paddle-webhook"]["detail"] == (
        "HTTP 400 Invalid JSON (the function refuses an unsigned POST)")
    assert sorted(s["path"] for s in gateway.seen if s.get("method") == "POST") == [
        f"/functions/v1/{n}/{tenant}" for n in names]
    # a JSON body would have been taken for an event by paddle-webhook: the probe's body is not JSON
    assert gateway.server.tenant_paths == [tenant] * 3


def test_webhook_probes_follow_a_sub_path(http_server):
    class SubPath(Stack):
        def do_POST(self):
            self.path = self.path.removeprefix("/paycraft")
            return super().do_POST()

    gateway = http_server(SubPath)
    result = run(api_url=gateway.url, probes=["gateway"], webhook_functions=["stripe-webhook"],
                 config_path="/paycraft/functions/v1/config")
    assert result["probes"]["stripe-webhook"]["ok"], result["message"]


@pytest.mark.parametrize(
    ("handler", "cause_id", "heading", "status"),
    [
        (WebhooksNotDeployed, "webhook_not_found", "The edge runtime has no stripe-webhook function to serve", 404),
        (WebhookNoRoute, "webhook_no_route", "The gateway has no route for the stripe-webhook function", 404),
        (WebhookKeyAuth, "webhook_gateway_auth",
         "An unsigned POST to stripe-webhook was refused before it reached the function (HTTP 401)", 401),
        (WebhookBadGateway, "webhook_upstream_down",
         "The edge runtime behind /functions/v1/stripe-webhook does not answer", 502),
        (WebhookAcceptsUnsigned, "webhook_unsigned_accepted", "The stripe-webhook function accepts an unsigned "
         "delivery", 200),
    ],
)
def test_a_webhook_route_that_does_not_reach_its_function_fails_its_probe(http_server, handler, cause_id, heading,
                                                                          status):
    gateway = http_server(handler)
    result = run(api_url=gateway.url, anon_key=ANON_KEY, probes=["gateway"], webhook_functions=["stripe-webhook"],
                 timeout=0.3)
    assert not result["ok"]
    assert result["summary"].startswith("smoke: 1/2 probes passed (gateway ")
    probe = result["probes"]["stripe-webhook"]
    assert (probe["cause_id"], probe["cause"], probe["status"]) == (cause_id, heading, status)
    assert f"{gateway.url}/functions/v1/stripe-webhook" in probe["explanation"] or cause_id == "webhook_upstream_down"
    line = [x for x in result["message"].splitlines() if x.startswith("stripe-webhook: ")]
    assert line and f"likely cause: {heading}" in line[0] and "Next: " in line[0], result["message"]
    # the gateway's own anon key never goes to the webhook route
    assert all("apikey" not in s["headers"] for s in gateway.seen if s.get("method") == "POST")
