"""Unit tests of the smoke library: parsing, classification, the cause table, the retry loop, the summary."""

from __future__ import annotations

import json
import re
import string
import struct

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys, smoke
from paycraft_testlib import REPO

GOOD = {
    "tenant_id": "tenant-1",
    "products": [],
    "providers": [{"name": "stripe"}],
    "paywall": {},
    "cache_ttl_seconds": 3600,
}


# ------------------------------------------------------------ SuiteConfig shape
def test_a_suite_config_has_no_problems():
    assert smoke.check_suite_config(GOOD) == []


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({k: v for k, v in GOOD.items() if k != "paywall"}, "missing keys: paywall"),
        ({"tenant_id": "t"}, "missing keys: products, providers, paywall, cache_ttl_seconds"),
        ({**GOOD, "products": {}}, "products is an object, not a list"),
        ({**GOOD, "providers": "stripe"}, "providers is a string, not a list"),
        ({**GOOD, "paywall": []}, "paywall is a list, not an object"),
        ({**GOOD, "cache_ttl_seconds": "3600"}, "cache_ttl_seconds is a string, not an integer"),
        ({**GOOD, "cache_ttl_seconds": True}, "cache_ttl_seconds is a boolean, not an integer"),
        ({**GOOD, "cache_ttl_seconds": 36.5}, "cache_ttl_seconds is a number, not an integer"),
        ({**GOOD, "tenant_id": None}, "tenant_id is null, not a string"),
        ([GOOD], "the JSON document is a list, not an object"),
    ],
)
def test_suite_config_problems_are_named(document, problem):
    assert problem in smoke.check_suite_config(document)


# -------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (404, '{"message":"Function not found"}', "function_not_found"),
        (404, '{"message":"no Route matched with those values"}', "no_route"),
        (401, '{"message":"Invalid JWT"}', "key_mismatch"),
        (401, '{"msg":"Invalid JWT"}', "key_mismatch"),
        (401, '{"error":"service_role_key_rejected","message":"... PGRST301 ..."}', "key_mismatch"),
        (401, '{"error":"invalid_apiKey"}', "api_key_unknown"),
        (502, '{"error":"upstream_unreachable","message":"cannot reach http://kong:8000/rest/v1"}',
         "rest_unreachable"),
        (502, '{"error":"upstream_error","status":404,"code":"PGRST202"}', "rest_error"),
        (504, '{"message":"The upstream server is timing out"}', "upstream_down"),
        (401, '{"message":"Invalid authentication credentials"}', "key_mismatch"),
        (403, "", "key_mismatch"),
        (400, '{"msg":"JWSError JWSInvalidSignature"}', "key_mismatch"),
        (400, '{"error":"missing_apiKey"}', "probe_config"),
        (502, '{"message":"An invalid response was received from the upstream server"}', "upstream_down"),
        (503, "", "upstream_down"),
        (504, "", "upstream_down"),
        (500, '{"error":"rpc get_suite_config does not exist"}', "function_error"),
        (418, "teapot", "unexpected_http"),
        (404, "Not Found", "unexpected_http"),
    ],
)
def test_config_answers_are_classified(status, body, cause):
    assert smoke.classify_config_answer(status, body)[0] == cause


def test_rest_error_names_the_postgrest_code():
    cause, context = smoke.classify_config_answer(502, '{"error":"upstream_error","status":404,"code":"PGRST202"}')
    explanation = smoke.CAUSES[cause]["explanation"].format(**{**CONTEXT, **context})
    assert "upstream_error (PGRST202)" in explanation


def test_final_causes_are_the_ones_waiting_cannot_change():
    assert {"key_mismatch", "api_key_unknown", "probe_config", "not_suite_config", "tls_error",
            "postgres_login_failed", "webhook_gateway_auth", "webhook_unsigned_accepted",
            "gateway_open"} == set(smoke.FINAL_CAUSES)
    assert smoke.Outcome(False, 401, "x", "key_mismatch").final
    assert not smoke.Outcome(False, 502, "x", "upstream_down").final


# --------------------------------------------------------------- cause table
CONTEXT = {
    "api_url": "http://127.0.0.1:54321", "gateway_port": 54321, "config_path": "/functions/v1/config",
    "db_host": "127.0.0.1", "db_port": 54322, "dashboard_url": "http://127.0.0.1:3000", "missing": "m",
    "status": 502, "url": "u", "code": "", "auth_path": "/auth/v1/health", "db_user": "postgres",
    "hops": "", "reason": "r", "function": "stripe-webhook", "webhook_path": "/functions/v1/stripe-webhook",
}


@pytest.mark.parametrize("cause_id", sorted(smoke.CAUSES))
def test_every_cause_is_complete_and_formats(cause_id):
    cause = smoke.CAUSES[cause_id]
    assert set(cause) == {"runbook", "heading", "explanation", "next"}
    assert cause["heading"] and cause["next"]
    assert {f for _, f, _, _ in string.Formatter().parse(cause["heading"]) if f} <= set(CONTEXT)
    cause["heading"].format(**CONTEXT)
    fields = {f for _, f, _, _ in string.Formatter().parse(cause["explanation"]) if f}
    assert fields <= set(CONTEXT)
    cause["explanation"].format(**CONTEXT)
    for command in cause["next"]:
        command.format(**CONTEXT)


# The release layout the commands run in (paths relative to infra/selfhost), as the repository's
# reference release holds it (the webhook functions, which CONTEXT names, come with v1.1.4-webhooks).
RELEASE = REPO / "reference" / "release" / "base"
SELFHOST = RELEASE / "infra" / "selfhost"
WEBHOOKS_RELEASE = REPO / "reference" / "release" / "v1.1.4-webhooks" / "files"
RUNBOOK_REF = re.compile(r"^runbook section (?P<section>[1-9]), '[^']+'( and '[^']+')*$")
# Runbook sections the table may name: 5 SDK wiring, 6 Smoke test, 7 Troubleshooting.
SECTIONS = {"5", "6", "7"}
# Causes that come from the runbook's Troubleshooting entries (section 7).
TROUBLESHOOTING = {"function_not_found", "key_mismatch", "gateway_down", "not_kong", "postgres_no_response",
                   "postgres_login_failed", "postgres_rejecting", "dashboard_down"}


def _compose():
    return yaml.safe_load((SELFHOST / "docker-compose.yaml").read_text(encoding="utf-8"))


def _commands():
    for cause_id, cause in sorted(smoke.CAUSES.items()):
        for command in cause["next"]:
            yield cause_id, command.format(**CONTEXT)


def test_each_cause_names_its_runbook_section_in_one_form():
    for cause_id, cause in smoke.CAUSES.items():
        if cause["runbook"] is None:
            continue
        match = RUNBOOK_REF.match(cause["runbook"])
        assert match, (cause_id, cause["runbook"])
        assert match["section"] in SECTIONS, (cause_id, cause["runbook"])
    troubleshooting = {c for c, v in smoke.CAUSES.items() if (v["runbook"] or "").startswith("runbook section 7,")}
    assert troubleshooting == TROUBLESHOOTING


def test_containers_in_the_commands_are_the_releases():
    containers = {svc["container_name"] for svc in _compose()["services"].values()}
    named = {(cause_id, m) for cause_id, command in _commands()
             for m in re.findall(r"docker (?:logs|exec) (\S+)", command)}
    assert named
    assert {(c, m) for c, m in named if m not in containers} == set()


def test_compose_services_in_the_commands_are_the_releases():
    services = set(_compose()["services"])
    named = [m for _, command in _commands() for m in re.findall(r"docker compose up -d (\S+)", command)]
    assert named and set(named) <= services


def test_paths_in_the_commands_exist_in_the_release():
    """Relative paths are run in infra/selfhost, as in the runbook."""
    paths = set()
    for _, command in _commands():
        for token in re.split(r"[\s()&;']+", command):
            if token.startswith(("../", "./")) or token in ("kong.yml", "docker-compose.yaml"):
                paths.add(token)
    assert {"../../supabase/functions/config", "../../dashboard", "kong.yml",
            "../../supabase/functions/stripe-webhook"} <= paths
    assert sorted(p for p in paths if not (SELFHOST / p).exists() and not (
        p.startswith("../../") and (WEBHOOKS_RELEASE / p.removeprefix("../../")).exists())) == []


def test_variables_in_the_commands_are_role_variables():
    defaults = {}
    for path in (REPO / "roles").glob("*/defaults/main.yml"):
        defaults.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    named = [m for _, command in _commands() for m in re.findall(r"-e (\w+)=", command)]
    assert named and sorted(set(named) - set(defaults)) == []


def test_env_variables_in_the_explanations_are_the_runbook_section_3_names():
    named = {m for cause in smoke.CAUSES.values() for m in re.findall(r"\bPAYCRAFT_\w+", cause["explanation"])}
    assert named and named <= set(keys.SECTION3)


def test_resign_variable_is_the_collections():
    assert any("-e paycraft_config_resign_keys=true" in c for c in smoke.CAUSES["key_mismatch"]["next"])


def test_failure_line_names_the_runbook_section_when_the_cause_has_one():
    base = {"ok": False, "detail": "seen", "next": ["cmd"], "attempts": 1, "latency_ms": 1.0}
    results = {
        "gateway": {**base, "cause": "Kong is down", "runbook": "runbook section 7, 'Port already in use'"},
        "dashboard": {**base, "cause": "The dashboard answers with an error", "runbook": None},
    }
    assert smoke.failure_lines(results) == [
        "gateway: seen — likely cause: Kong is down (runbook section 7, 'Port already in use'). Next: cmd",
        "dashboard: seen — likely cause: The dashboard answers with an error. Next: cmd",
    ]


# -------------------------------------------------------------- small helpers
def test_suite_config_url_encodes_the_key_like_the_sdk():
    assert (smoke.suite_config_url("http://h:54321/", "/functions/v1/config", "pk_test_local")
            == "http://h:54321/functions/v1/config?apiKey=pk_test_local")
    assert smoke.suite_config_url("http://h", "/f?x=1", "a b&c") == "http://h/f?x=1&apiKey=a+b%26c"


def test_preview_is_one_line_and_cut_at_200():
    assert smoke.preview("a\n  b") == "a b"
    assert smoke.preview("x" * 201) == "x" * 200 + "..."
    assert smoke.preview("x" * 200) == "x" * 200


def test_redact_removes_every_secret_and_ignores_empty_ones():
    assert smoke.redact("key pk_1 and eyJ.a.b", ("pk_1", "eyJ.a.b", None, "")) == "key ******** and ********"


def test_redact_catches_url_encoded_forms():
    assert smoke.redact("apiKey=pk%2Fa%2Bb or pk/a+b", ("pk/a+b",)) == "apiKey=******** or ********"


@pytest.mark.parametrize("status", [500, 502])
def test_jwt_words_in_a_5xx_are_not_a_key_mismatch(status):
    assert smoke.classify_config_answer(status, '{"message":"jwt verification service crashed"}')[0] != "key_mismatch"


def test_parse_pg_error_reads_fields():
    body = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
    fields = smoke.parse_pg_error(body)
    assert fields["C"] == "57P03" and fields["S"] == "FATAL"
    assert fields["M"] == "the database system is starting up"


def test_startup_message_constant_is_protocol_3_0():
    assert struct.pack("!i", smoke.PG_PROTOCOL_V3) == b"\x00\x03\x00\x00"


# ------------------------------------------------------------------- validate
def _params(**over):
    base = {**smoke.DEFAULTS, "api_key": "pk_test_local", "db_password": "pw-local", "probes": list(smoke.PROBES)}
    base.update(over)
    return base


def test_defaults_validate():
    assert smoke.validate(_params()) == []


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"api_key": None}, "api_key is required when the suite_config probe runs"),
        ({"api_url": "localhost:54321"}, "api_url must be an http:// or https:// URL"),
        ({"dashboard_url": "ftp://h"}, "dashboard_url must be an http:// or https:// URL"),
        ({"config_path": "functions/v1/config"}, "config_path must start with '/'"),
        ({"timeout": -1}, "timeout must be 0 or more seconds"),
        ({"interval": 0}, "interval must be a positive number"),
        ({"request_timeout": 0}, "request_timeout must be a positive number"),
        ({"db_port": 70000}, "db_port must be a TCP port"),
        ({"probes": ["gateway", "kong"]}, "unknown probes ['kong']"),
        ({"webhook_functions": ["stripe webhook"]}, "webhook_functions ['stripe webhook']: each must be the name"),
        ({"webhook_functions": ["../config"]}, "webhook_functions ['../config']"),
        ({"webhook_functions": ["gateway"]}, "webhook_functions ['gateway']"),
        ({"webhook_functions": ["a-webhook", "a-webhook"]}, "names a function twice"),
        ({"webhook_functions": "stripe-webhook"}, "webhook_functions must be a list"),
    ],
)
def test_bad_parameters_are_named(over, needle):
    errors = smoke.validate(_params(**over))
    assert any(needle in e for e in errors), errors


def test_api_key_not_needed_without_suite_config():
    assert smoke.validate(_params(api_key=None, probes=["gateway", "postgres"])) == []


def test_the_postgres_probe_needs_the_password():
    errors = smoke.validate(_params(db_password=None))
    assert any("db_password is required when the postgres probe runs" in e for e in errors), errors
    assert smoke.validate(_params(db_password=None, probes=["suite_config", "gateway", "auth", "dashboard"])) == []


def test_the_default_probe_set_is_all_five_with_suite_config():
    assert smoke.PROBES == ("suite_config", "gateway", "auth", "postgres", "dashboard")
    assert "suite_config" in smoke.REQUIRED_PROBES


def test_run_probes_refuses_bad_parameters():
    with pytest.raises(ValueError, match="api_key is required"):
        smoke.run_probes({"probes": ["suite_config"]})


# ------------------------------------------------------------ the retry loop
class FakeClock:
    """Deterministic time: only sleep() and probe attempts move it."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def scripted(monkeypatch):
    """Replace the gateway probe by a script of outcomes; each attempt costs ``cost`` seconds."""

    def install(clock, outcomes, cost=0.01):
        calls = []

        def probe(params, timeout):
            calls.append(timeout)
            clock.now += cost
            return outcomes[min(len(calls), len(outcomes)) - 1]

        monkeypatch.setitem(smoke.PROBE_FUNCTIONS, "gateway", probe)
        return calls

    return install


def _loop(clock, timeout=10.0, interval=2.0, request_timeout=5.0):
    params = smoke._with_defaults({"probes": ["gateway"]})
    return smoke.run_probe("gateway", params, clock() + timeout, interval, request_timeout, clock, clock.sleep)


def test_retries_until_the_probe_passes(scripted):
    clock = FakeClock()
    down = smoke.Outcome(False, "refused", "connection refused", "gateway_down")
    up = smoke.Outcome(True, 404, "HTTP 404")
    calls = scripted(clock, [down, down, up])
    result, _ = _loop(clock)
    assert result["ok"] and result["attempts"] == 3 and result["status"] == 404
    assert clock.sleeps == [2.0, 2.0]
    assert calls == [5.0, 5.0, 5.0]  # every attempt gets the whole request_timeout
    assert result["cause"] is None


def test_stops_at_the_deadline_with_the_last_cause(scripted):
    clock = FakeClock()
    down = smoke.Outcome(False, "refused", "connection refused", "gateway_down")
    scripted(clock, [down], cost=0.5)
    result, _ = _loop(clock, timeout=10.0, interval=2.0)
    # attempts at t=0, 2.5, 5, 7.5, then 10 = deadline: no attempt starts at or after it
    assert result["attempts"] == 4
    assert sum(clock.sleeps) == pytest.approx(8.0)
    assert result["cause_id"] == "gateway_down"
    assert result["next"][1] == "lsof -iTCP:54321 -sTCP:LISTEN -n -P"


def test_last_sleep_is_cut_to_the_deadline(scripted):
    clock = FakeClock()
    scripted(clock, [smoke.Outcome(False, "refused", "x", "gateway_down")], cost=0.0)
    result, _ = _loop(clock, timeout=5.0, interval=2.0)
    assert clock.sleeps == [2.0, 2.0, 1.0]
    assert result["attempts"] == 3


def test_zero_timeout_is_one_attempt(scripted):
    clock = FakeClock()
    scripted(clock, [smoke.Outcome(False, "refused", "x", "gateway_down")])
    result, _ = _loop(clock, timeout=0)
    assert result["attempts"] == 1 and clock.sleeps == []


def test_final_failure_stops_at_once(scripted):
    clock = FakeClock()
    scripted(clock, [smoke.Outcome(False, 401, "HTTP 401", "key_mismatch")])
    result, _ = _loop(clock)
    assert result["attempts"] == 1 and clock.sleeps == []
    assert result["cause"] == smoke.CAUSES["key_mismatch"]["heading"]
    assert result["runbook"] == "runbook section 7, 'SDK throws \"401 Unauthorized\" from a self-hosted backend'"


def test_a_probe_that_raises_is_a_failed_result_not_a_crash(scripted, monkeypatch):
    clock = FakeClock()

    def broken(params, timeout):
        raise RuntimeError("boom")

    monkeypatch.setitem(smoke.PROBE_FUNCTIONS, "gateway", broken)
    result, _ = _loop(clock, timeout=0)
    assert not result["ok"] and "RuntimeError: boom" in result["detail"]


# --------------------------------------------------------- summary and message
def _r(ok, latency=3.0, attempts=1, detail="d", cause="c", nxt=("a", "b")):
    return {"ok": ok, "latency_ms": latency, "attempts": attempts, "detail": detail, "cause": cause,
            "next": list(nxt)}


def test_summary_lists_probes_in_a_fixed_order_with_latency():
    results = {"dashboard": _r(True, 12.4), "postgres": _r(True, 2.0), "gateway": _r(True, 3.2),
               "suite_config": _r(True, 35.0)}
    assert smoke.summarize(results) == (
        "smoke: 4/4 probes passed (suite_config 35 ms, gateway 3 ms, postgres 2 ms, dashboard 12 ms)"
    )


def test_summary_and_failure_lines_of_a_failed_run():
    results = {"suite_config": _r(False, attempts=7, detail="HTTP 404 {\"message\":\"Function not found\"}",
                                  cause="Edge function returns 404 for /functions/v1/config",
                                  nxt=("ls ../../supabase/functions/config",
                                       "docker logs paycraft_edge_runtime --tail 100")),
               "postgres": _r(True, 1.0)}
    assert smoke.summarize(results) == "smoke: 1/2 probes passed (suite_config FAILED after 7 attempts, postgres 1 ms)"
    assert smoke.failure_lines(results) == [
        'suite_config: HTTP 404 {"message":"Function not found"} — likely cause: Edge function returns 404 for '
        "/functions/v1/config. Next: ls ../../supabase/functions/config; docker logs paycraft_edge_runtime --tail 100"
    ]  # _r gives no runbook section: none in the line
    results["suite_config"]["attempts"] = 1
    assert "FAILED after 1 attempt," in smoke.summarize(results)


def test_result_never_carries_the_keys():
    params = smoke._with_defaults({"api_key": "pk_secret_1", "anon_key": "eyJsecret"})
    outcome = smoke.Outcome(False, 401, "HTTP 401 no tenant owns pk_secret_1 (eyJsecret)", "key_mismatch")
    result, _ = smoke._result("suite_config", outcome, 1, 1.0, params)
    assert "pk_secret_1" not in repr(result) and "eyJsecret" not in repr(result)


# ------------------------------------------------------------ saved smoke key
def test_read_api_key_file(tmp_path):
    f = tmp_path / "smoke-user.json"
    f.write_text('{"email": "s@x.invalid", "password": "p", "api_key": "pk_test_abc"}\n')
    assert smoke.read_api_key_file(str(f)) == "pk_test_abc"
    f.write_text('{"email": "s@x.invalid", "password": "p"}\n')
    with pytest.raises(ValueError, match="no api_key field"):
        smoke.read_api_key_file(str(f))
    f.write_text("not json")
    with pytest.raises(ValueError):
        smoke.read_api_key_file(str(f))


# ------------------------------------------------------------ webhook probes
@pytest.mark.parametrize(
    ("status", "body", "passed", "cause"),
    [
        (400, '{"error":"missing_signature","message":"no Stripe-Signature header"}', True, None),
        (400, '{"error":"invalid_signature"}', True, None),
        (404, '{"message":"Function not found"}', False, "webhook_not_found"),
        (404, '{"message":"no Route matched with those values"}', False, "webhook_no_route"),
        (401, '{"message":"No API key found in request"}', False, "webhook_gateway_auth"),
        (401, '{"msg":"Invalid JWT"}', False, "webhook_gateway_auth"),
        (403, "forbidden", False, "webhook_gateway_auth"),
        (502, '{"message":"An invalid response was received from the upstream server"}', False,
         "webhook_upstream_down"),
        (503, "", False, "webhook_upstream_down"),
        (500, '{"msg":"boot error"}', False, "webhook_function_error"),
        (200, '{"received":true}', False, "webhook_unsigned_accepted"),
        (400, '{"msg":"missing function name in request"}', False, "webhook_unsigned_accepted"),
        (400, "<html>bad request</html>", False, "webhook_unsigned_accepted"),
        (405, '{"error":"method_not_allowed"}', False, "webhook_unsigned_accepted"),
        # PayCraft's own functions refuse in plain text (stripe-webhook, razorpay-webhook, paddle-webhook ...)
        (400, "Missing stripe-signature", True, None),
        (400, "Invalid JSON", True, None),
        (422, '{"error":"unprocessable"}', True, None),
        (401, "Invalid signature", True, None),
        (401, "", False, "webhook_gateway_auth"),
        (403, '{"message":"You cannot consume this service"}', False, "webhook_gateway_auth"),
        (400, "", False, "webhook_unsigned_accepted"),
        (200, "ok", False, "webhook_unsigned_accepted"),
    ],
)
def test_webhook_answers_are_classified(status, body, passed, cause):
    got_passed, got_cause, error = smoke.classify_webhook_answer(status, body)
    assert (got_passed, got_cause) == (passed, cause)
    assert (error is not None) == passed


def test_webhook_path_follows_the_config_path():
    assert smoke.webhook_path("/functions/v1/config", "stripe-webhook") == "/functions/v1/stripe-webhook"
    # the per-tenant path PayCraft's provision_app hands out (webhook_url)
    assert smoke.webhook_path("/functions/v1/config", "stripe-webhook", "t-1") == "/functions/v1/stripe-webhook/t-1"
    assert smoke.webhook_path("/paycraft/functions/v1/config", "razorpay-webhook") == (
        "/paycraft/functions/v1/razorpay-webhook")


def test_webhook_failures_name_the_function_and_its_url():
    params = smoke._with_defaults({"webhook_functions": ["razorpay-webhook"]})
    outcome = smoke.Outcome(False, 404, 'HTTP 404 {"message":"Function not found"}', "webhook_not_found",
                            {"function": "razorpay-webhook", "webhook_path": "/functions/v1/razorpay-webhook"})
    result, _ = smoke._result("razorpay-webhook", outcome, 3, 1.0, params)
    assert result["cause"] == "The edge runtime has no razorpay-webhook function to serve"
    assert "http://127.0.0.1:54321/functions/v1/razorpay-webhook" in result["explanation"]
    assert result["next"][0] == "ls ../../supabase/functions/razorpay-webhook"


def test_webhook_probes_are_counted_after_the_five(monkeypatch):
    seen = []

    def fake_http(url, method="GET", headers=None, timeout=5.0, validate_certs=True, data=None, ca_file=None):
        seen.append((method, url, dict(headers or {}), data))
        if url.endswith("/razorpay-webhook"):
            return smoke.HttpAnswer(404, b'{"message":"Function not found"}', {})
        return smoke.HttpAnswer(400, b'{"error":"missing_signature"}', {})

    monkeypatch.setattr(smoke, "http_request", fake_http)
    result = smoke.run_probes({"probes": ["gateway"], "webhook_functions": ["stripe-webhook", "razorpay-webhook"],
                               "timeout": 0, "anon_key": "eyJanon"})
    assert result["summary"].startswith(
        "smoke: 1/3 probes passed (gateway FAILED after 1 attempt, stripe-webhook ")
    assert result["summary"].endswith(", razorpay-webhook FAILED after 1 attempt)")
    assert result["probes"]["stripe-webhook"]["detail"] == (
        "HTTP 400 missing_signature (the function refuses an unsigned POST)")
    assert result["probes"]["razorpay-webhook"]["cause_id"] == "webhook_not_found"
    assert "razorpay-webhook: HTTP 404" in result["message"]
    posts = [s for s in seen if s[0] == "POST"]
    assert sorted(u for _, u, _, _ in posts) == ["http://127.0.0.1:54321/functions/v1/razorpay-webhook",
                                                  "http://127.0.0.1:54321/functions/v1/stripe-webhook"]
    # the providers send no apikey, so neither does the probe; its body is not JSON (no function takes it for an event)
    assert all("apikey" not in h and "Authorization" not in h and d == smoke.WEBHOOK_PROBE_BODY for _, _, h, d in posts)
    with pytest.raises(ValueError):
        json.loads(smoke.WEBHOOK_PROBE_BODY)


def test_per_tenant_webhook_paths_are_probed_with_the_tenant_id(monkeypatch):
    seen = []

    def fake_http(url, method="GET", headers=None, timeout=5.0, validate_certs=True, data=None, ca_file=None):
        seen.append(url)
        # PayCraft's stripe-webhook: plain text, before it looks the tenant up
        return smoke.HttpAnswer(400, b"Missing stripe-signature", {})

    monkeypatch.setattr(smoke, "http_request", fake_http)
    result = smoke.run_probes({"probes": ["gateway"], "webhook_functions": ["stripe-webhook"], "timeout": 0,
                               "webhook_tenant_id": "6f1c2d3e-0000-4000-8000-000000000001"})
    assert "http://127.0.0.1:54321/functions/v1/stripe-webhook/6f1c2d3e-0000-4000-8000-000000000001" in seen
    assert result["probes"]["stripe-webhook"]["detail"] == (
        "HTTP 400 Missing stripe-signature (the function refuses an unsigned POST)")


def test_without_webhook_functions_the_count_is_unchanged(monkeypatch):
    monkeypatch.setattr(smoke, "http_request", lambda *a, **k: smoke.HttpAnswer(404, b"no Route matched", {}))
    result = smoke.run_probes({"probes": ["gateway"], "timeout": 0})
    assert result["summary"].startswith("smoke: 1/1 probes passed (gateway ")


def test_the_tenant_id_of_the_credentials_file_is_read_or_none(tmp_path):
    f = tmp_path / "smoke-user.json"
    f.write_text(json.dumps({"api_key": "pk_test_x", "tenant_id": "11111111-2222-3333-4444-555555555555"}))
    assert smoke.read_tenant_id_file(str(f)) == "11111111-2222-3333-4444-555555555555"
    f.write_text(json.dumps({"api_key": "pk_test_x", "tenant_id": None}))
    assert smoke.read_tenant_id_file(str(f)) is None
    f.write_text(json.dumps({"tenant_id": "../../etc"}))
    assert smoke.read_tenant_id_file(str(f)) is None
    assert smoke.read_tenant_id_file(str(tmp_path / "missing.json")) is None


def test_a_tenant_id_that_is_not_one_is_refused():
    params = smoke._with_defaults({"api_key": "pk_test_x", "webhook_tenant_id": "a/b"})
    assert any("webhook_tenant_id" in e for e in smoke.validate(params))
