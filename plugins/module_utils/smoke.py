# -*- coding: utf-8 -*-
# Copyright: (c) 2026, PayCraft self-hosting contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Smoke probes of a self-hosted PayCraft stack (runbook section 6).

Pure Python (standard library only), importable without Ansible:

* five probes, one attempt each, each proving its own component:
  ``suite_config`` (the SDK's SuiteConfig fetch through the gateway; always part
  of the default set), ``gateway`` (Kong's own answer on ``/``: its 404 "no Route
  matched", never a 5xx), ``auth`` (GoTrue's ``/auth/v1/health`` through the
  gateway), ``postgres`` (a ``pg_isready``-style ping, then a real login with
  the database password and ``SELECT 1``) and ``dashboard`` (``curl -fsSIL``:
  a 200 after redirects);
* one more probe per webhook function of the release (``webhook_functions``,
  e.g. ``stripe-webhook``), at its per-tenant path when the release hands those
  out (``webhook_tenant_id``): an unsigned ``POST`` of a body that is not JSON,
  through the gateway, with no apikey (providers send none), must come back with
  the function's own refusal (400 JSON ``{"error": ...}`` or a plain-text 400/401
  such as ``Missing stripe-signature``), never the gateway's 404/401/502;
* :func:`run_probes` runs the selected probes in parallel threads, each
  retrying until it passes or a shared deadline expires;
* every failure is classified into one entry of :data:`CAUSES` (most of them
  from the runbook's Troubleshooting, section 7, which each entry names), with
  the next commands to run. The doctor reuses that table.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

PROBES = ("suite_config", "gateway", "auth", "postgres", "dashboard")
# The smoke role's probe set always includes these: the SuiteConfig fetch is the runbook's "fastest signal that
# the stack is alive" (a subset without it is for building blocks such as the stack role's wait for Postgres).
REQUIRED_PROBES = ("suite_config",)
# Names of the webhook functions the webhook probes may take (a directory name under supabase/functions).
WEBHOOK_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_REDIRECTS = 10
KONG_NO_ROUTE = "no route matched"
SUITE_CONFIG_KEYS = ("tenant_id", "products", "providers", "paywall", "cache_ttl_seconds")
DEFAULTS = {
    "api_url": "http://127.0.0.1:54321",
    "config_path": "/functions/v1/config",
    "auth_path": "/auth/v1/health",
    "dashboard_url": "http://127.0.0.1:3000",
    "db_host": "127.0.0.1",
    "db_port": 54322,
    "db_user": "postgres",
    "db_name": "postgres",
    "timeout": 120.0,
    "interval": 2.0,
    "request_timeout": 5.0,
    "key_check": False,
}
BODY_PREVIEW = 200  # the runbook's `| head -c 200`
MAX_BODY = 1024 * 1024
REDACTED = "********"

# PostgreSQL wire protocol (v3), as pg_isready speaks it.
PG_PROTOCOL_V3 = 196608
PG_CANNOT_CONNECT_NOW = "57P03"
PG_ACCEPTING = "accepting"
PG_REJECTING = "rejecting"
PG_NO_RESPONSE = "no response"

# ---------------------------------------------------------------------------
# The likely causes of a failed probe, one row each, in this collection's words.
# ``runbook`` names the runbook section an entry comes from ("runbook section 7,
# '<entry title>'"), None for a symptom the runbook does not list.
# ``explanation`` and ``next`` are templates: {api_url} {gateway_port}
# {config_path} {db_host} {db_port} {dashboard_url} {missing} {status} {url} {code}.
# Commands with relative paths are the runbook's, run in infra/selfhost.
# ---------------------------------------------------------------------------
CAUSES = {
    "function_not_found": {
        "runbook": "runbook section 7, 'Edge function returns 404 for /functions/v1/config'",
        "heading": "The edge runtime has no config function to serve",
        "explanation": (
            'The gateway answered {{"message":"Function not found"}} for {config_path}. The edge runtime '
            "serves the functions of the release's supabase/functions directory: when config is not there "
            "the release predates it (check out a newer release and apply its migrations); when it is "
            "there the runtime could not load it and its log says why."
        ),
        "next": (
            "ls ../../supabase/functions/config",
            "docker logs paycraft_edge_runtime --tail 100",
        ),
    },
    "key_mismatch": {
        "runbook": "runbook section 7, 'SDK throws \"401 Unauthorized\" from a self-hosted backend'",
        "heading": "The gateway rejected the anon key (401)",
        "explanation": (
            "The key the probe sent is not the PAYCRAFT_ANON_KEY of .env (compare the two byte for byte, "
            "a trailing newline included), or PAYCRAFT_JWT_SECRET changed after the keys were signed. "
            "Sign both keys (anon and service role) again with the current secret: re-run the playbook "
            "with -e paycraft_config_resign_keys=true."
        ),
        "next": ("ansible-playbook <your usual command> -e paycraft_config_resign_keys=true",),
    },
    "probe_config": {
        "runbook": None,
        "heading": "The smoke probe sent no usable apiKey",
        "explanation": (
            "The config function answered 400 (missing_apiKey): the probe's own configuration is wrong, "
            "not the stack. Pass the tenant's API key (pk_test_... / pk_live_...) as api_key."
        ),
        "next": ("set api_key of paycraft.selfhost.paycraft_smoke to a tenant API key",),
    },
    "api_key_unknown": {
        "runbook": None,
        "heading": "No tenant owns the API key the probe sent",
        "explanation": (
            "The config function answered 401 invalid_apiKey: the apiKey is not an active key of any tenant. "
            "API keys (pk_test_... / pk_live_...) are generated in /settings/api-keys on your dashboard; the "
            "anon key is not one. Pass a tenant's key as api_key, or leave it empty so site.yml provisions "
            "its smoke tenant and key (and provisions it again when the database no longer knows it)."
        ),
        "next": (
            "open {dashboard_url}/settings/api-keys, create a key, pass it as api_key",
            "or leave paycraft_smoke_api_key empty and re-run the playbook with --tags smoke",
        ),
    },
    "rest_unreachable": {
        "runbook": None,
        "heading": "The config function cannot reach /rest/v1",
        "explanation": (
            "The config function answered 502 upstream_unreachable: it reads the SuiteConfig through the "
            "gateway (POST /rest/v1/rpc/get_suite_config with the service role key) and nothing answers "
            "there. PayCraft's own release routes /rest/v1/ to db:3000, where nothing listens."
        ),
        "next": ("docker compose ps", "grep -n -B2 -A4 'rest/v1' kong.yml", "docker logs paycraft_rest --tail 100"),
    },
    "rest_error": {
        "runbook": None,
        "heading": "get_suite_config failed in the database",
        "explanation": (
            "The config function answered 502 upstream_error{code}: /rest/v1/rpc/get_suite_config answered "
            "but failed. Most often the migrations were not applied (PGRST202: the function does not exist)."
        ),
        "next": (
            "docker logs paycraft_rest --tail 100",
            "./migrations-bootstrap.sh (or the playbook with --tags migrations)",
        ),
    },
    "gateway_down": {
        "runbook": "runbook section 7, 'Port already in use'",
        "heading": "Nothing answers on the gateway's port: Kong is down or another process holds the port",
        "explanation": (
            "Nothing answers HTTP on {api_url}: paycraft_kong is not running, or docker compose up -d "
            "could not publish port {gateway_port} (Docker says \"port is already allocated\"). Find the "
            "process that listens there and stop it (a forgotten Supabase CLI stack: supabase stop)."
        ),
        "next": (
            "docker compose ps",
            "lsof -iTCP:{gateway_port} -sTCP:LISTEN -n -P",
            "docker logs paycraft_kong",
        ),
    },
    "gateway_error": {
        "runbook": None,
        "heading": "The gateway answers with a server error",
        "explanation": (
            "{api_url}/ answered {status}: something answers HTTP there but fails. Kong itself answers an "
            "unmatched / with 404 \"no Route matched\"; a 5xx comes from Kong failing, or from a TLS proxy "
            "in front of it that cannot reach paycraft_kong."
        ),
        "next": ("docker compose ps", "docker logs paycraft_kong", "curl -sS -i {api_url}/ | head -c 400"),
    },
    "not_kong": {
        "runbook": "runbook section 7, 'Port already in use'",
        "heading": "Something other than Kong answers on the gateway port",
        "explanation": (
            "{api_url}/ answered {status}, not Kong's 404 {{\"message\":\"no Route matched with those "
            "values\"}}: another service holds the port (runbook: Port already in use) or a proxy in front "
            "of Kong rewrites /."
        ),
        "next": ("lsof -iTCP:{gateway_port} -sTCP:LISTEN -n -P", "docker compose ps", "docker logs paycraft_kong"),
    },
    "auth_down": {
        "runbook": None,
        "heading": "GoTrue (auth) does not answer behind the gateway",
        "explanation": (
            "{api_url}{auth_path} answered {status}: Kong routes /auth/v1/ to auth:9999 and nothing answers "
            "there. paycraft_auth is stopped, restarting (it cannot reach the database as supabase_auth_admin), "
            "or still starting. Sign-ups and sign-ins of the dashboard and the SDK fail until it answers."
        ),
        "next": ("docker compose ps auth", "docker logs paycraft_auth --tail 100"),
    },
    "gateway_key_refused": {
        "runbook": None,
        "heading": "The gateway refuses the anon key",
        "explanation": (
            "{api_url}{auth_path} answered {status} from Kong's key check: the anon key the smoke test sends "
            "(PAYCRAFT_ANON_KEY of the env file) is not a consumer key of the gateway's Kong file, which the "
            "stack role writes from the env file (paycraft_stack_key_check). The keys changed after the file "
            "was written, or the smoke test was given another host's key. Every SDK client with this key gets "
            "401 too."
        ),
        "next": ("ansible-playbook playbooks/site.yml --tags stack  (writes the gateway's file again and "
                 "recreates kong)", "docker logs paycraft_kong --tail 50"),
    },
    "gateway_open": {
        "runbook": None,
        "heading": "The gateway lets requests through without an API key",
        "explanation": (
            "{api_url}{auth_path} answered {status} to a request with no apikey header, where Kong's key check "
            "answers 401 \"No API key found in request\": the check (paycraft_stack_key_check) is not in force, "
            "so /rest/v1/ and /auth/v1/ are open to anyone who can reach the gateway. The gateway runs from the "
            "release's own Kong file instead of the stack role's (<fill dir>/gateway/kong.yml, mounted by the "
            "compose override), or kong was recreated without the override."
        ),
        "next": ("ansible-playbook playbooks/site.yml --tags stack  (writes the gateway's file and the override "
                 "again and recreates kong)",
                 "docker inspect paycraft_kong | grep -B3 -A3 kong.yml  (the stack role's file must be the one "
                 "mounted)"),
    },
    "auth_error": {
        "runbook": None,
        "heading": "GoTrue (auth) answers, but not its health document",
        "explanation": (
            "{api_url}{auth_path} answered {status} without GoTrue's health document "
            "({{\"version\", \"name\"}}): the /auth/v1/ route of kong.yml does not lead to GoTrue."
        ),
        "next": ("grep -n -B2 -A4 'auth/v1' kong.yml", "docker logs paycraft_auth --tail 100"),
    },
    "upstream_down": {
        "runbook": None,
        "heading": "The gateway's upstream service is down",
        "explanation": (
            "Kong answered {status} for {config_path}: the edge runtime behind the route is not running, "
            "still starting, or not reachable from Kong."
        ),
        "next": ("docker compose ps", "docker logs paycraft_edge_runtime --tail 100"),
    },
    "function_error": {
        "runbook": None,
        "heading": "The config function failed",
        "explanation": (
            "The config function answered {status}: it runs but fails (database unreachable through "
            "/rest/v1/, an RPC missing because migrations were not applied, ...)."
        ),
        "next": ("docker logs paycraft_edge_runtime --tail 100", "docker compose ps"),
    },
    "no_route": {
        "runbook": "runbook section 5, 'SDK wiring'",
        "heading": "The gateway has no route for the config path",
        "explanation": (
            "Kong answered 404 \"no Route matched\" for {config_path}: the path does not match a route "
            "of kong.yml (/auth/v1/, /rest/v1/, /functions/v1/), or the gateway is reverse-proxied under "
            "a sub-path (set config_path, the SDK's third configPath argument)."
        ),
        "next": ("grep -n 'functions/v1' kong.yml", "docker logs paycraft_kong"),
    },
    "not_suite_config": {
        "runbook": "runbook section 6, 'Smoke test'",
        "heading": "The release's config function does not return a SuiteConfig",
        "explanation": (
            "The answer is not the SuiteConfig the SDK expects (tenant_id, products, providers, paywall, "
            "cache_ttl_seconds): {missing}."
        ),
        "next": ("ls ../../supabase/functions/config", "docker logs paycraft_edge_runtime --tail 100"),
    },
    "unexpected_http": {
        "runbook": None,
        "heading": "Unexpected answer from the gateway",
        "explanation": "The gateway answered {status} for {config_path}, which no runbook entry describes.",
        "next": ("docker logs paycraft_kong", "docker logs paycraft_edge_runtime --tail 100"),
    },
    "tls_error": {
        "runbook": None,
        "heading": "TLS handshake or certificate verification failed",
        "explanation": (
            "The https endpoint's certificate was not accepted. Fix the certificate of the TLS proxy in "
            "front of Kong / the dashboard; a certificate from an internal CA needs that CA's root in ca_file "
            "(paycraft_smoke_ca_file)."
        ),
        "next": ("curl -vI {url}",),
    },
    "postgres_no_response": {
        "runbook": (
            "runbook section 7, 'migrations-bootstrap.sh aborts with \"could not connect\"' and "
            "'Postgres container exits during boot'"
        ),
        "heading": "Postgres does not answer: still initialising its data directory, or restarting in a loop",
        "explanation": (
            "Postgres does not answer on {db_host}:{db_port}. On a first boot it is still creating its "
            "data directory (give it half a minute); if paycraft_db restarts again and again, its log "
            "names the reason, most often a PAYCRAFT_DB_PASSWORD changed after the volume was created."
        ),
        "next": ("docker exec paycraft_db pg_isready -U postgres", "docker logs paycraft_db --tail 50"),
    },
    "postgres_rejecting": {
        "runbook": "runbook section 7, 'migrations-bootstrap.sh aborts with \"could not connect\"'",
        "heading": "Postgres is still starting up",
        "explanation": (
            "Postgres answers on {db_host}:{db_port} but does not accept connections yet: a first boot "
            "is still creating the data directory. Give it half a minute and run the probe again."
        ),
        "next": ("docker exec paycraft_db pg_isready -U postgres", "docker logs paycraft_db --tail 50"),
    },
    "postgres_login_failed": {
        "runbook": "runbook section 7, 'Postgres container exits during boot'",
        "heading": "Postgres refuses the login with the env file's password",
        "explanation": (
            "Postgres answers on {db_host}:{db_port} but refuses the login as {db_user} with the password "
            "of the env file (password authentication failed). Most likely PAYCRAFT_DB_PASSWORD was changed "
            "after the database volume was created: the password is set once, when the volume is initialised. "
            "Put the old password back in the env file, or take a backup and recreate the volume, which "
            "deletes every row in it."
        ),
        "next": (
            "docker logs paycraft_db --tail 50",
            "docker exec paycraft_db pg_dump -U postgres -Fc postgres",
            "docker compose down",
            "docker volume rm selfhost_paycraft-db",
            "docker compose up -d db",
        ),
    },
    "postgres_query_failed": {
        "runbook": None,
        "heading": "Postgres accepts the login but cannot run a query",
        "explanation": "Logged in on {db_host}:{db_port} as {db_user}, but SELECT 1 failed: {reason}.",
        "next": ("docker logs paycraft_db --tail 50", "docker exec paycraft_db psql -U postgres -c 'SELECT 1'"),
    },
    "dashboard_down": {
        "runbook": "runbook section 7, 'Dashboard build hangs at npm install'",
        "heading": "Nothing answers on the dashboard's URL: its container is still installing packages",
        "explanation": (
            "Nothing answers on {dashboard_url}: paycraft_dashboard installs its npm packages each time "
            "it starts, and a slow or rate-limited network holds it there. Install them once on the "
            "host, in the release's dashboard directory, and start the container again: it uses them."
        ),
        "next": (
            "docker logs paycraft_dashboard --tail 50",
            "(cd ../../dashboard && npm install --no-audit --no-fund) && docker compose up -d dashboard",
        ),
    },
    "dashboard_error": {
        "runbook": None,
        "heading": "The dashboard answers with an error",
        "explanation": (
            "The dashboard answered {status} to HEAD {dashboard_url}{hops} (curl -fsSIL would fail: it "
            "expects a 200 after redirects)."
        ),
        "next": ("docker logs paycraft_dashboard --tail 50",),
    },
    "webhook_not_found": {
        "runbook": None,
        "heading": "The edge runtime has no {function} function to serve",
        "explanation": (
            'An unsigned POST to {api_url}{webhook_path} got {{"message":"Function not found"}}: the release\'s '
            "supabase/functions/{function} is not where the edge runtime reads its functions (the compose "
            "file mounts ../../supabase/functions), or the runtime could not load it and its log says why. "
            "The provider's deliveries to this URL fail the same way."
        ),
        "next": (
            "ls ../../supabase/functions/{function}",
            "docker logs paycraft_edge_runtime --tail 100",
        ),
    },
    "webhook_no_route": {
        "runbook": "runbook section 5, 'SDK wiring'",
        "heading": "The gateway has no route for the {function} function",
        "explanation": (
            "Kong answered 404 \"no Route matched\" for {webhook_path}: kong.yml has no /functions/v1/ route, "
            "or the gateway is reverse-proxied under a sub-path (the webhook probes follow config_path's "
            "directory). The provider's deliveries to {api_url}{webhook_path} cannot arrive."
        ),
        "next": ("grep -n 'functions/v1' kong.yml", "docker logs paycraft_kong"),
    },
    "webhook_gateway_auth": {
        "runbook": None,
        "heading": "An unsigned POST to {function} was refused before it reached the function ({status})",
        "explanation": (
            "{api_url}{webhook_path} answered {status} without the function's own refusal: the gateway "
            "(a key-auth plugin on the functions-v1 route of kong.yml) or the edge runtime's JWT check "
            "(VERIFY_JWT=true, with {function} not among the main router's public functions) asks for an "
            "apikey or a JWT. Stripe and Razorpay send neither, only their signature header: every delivery "
            "is refused. Leave /functions/v1/ without key-auth and {function} public."
        ),
        "next": (
            "grep -n -A8 'functions-v1' kong.yml",
            "grep -n VERIFY_JWT docker-compose.yaml",
            "grep -n PUBLIC_FUNCTIONS ../../supabase/functions/main/index.ts",
        ),
    },
    "webhook_unsigned_accepted": {
        "runbook": None,
        "heading": "The {function} function accepts an unsigned delivery",
        "explanation": (
            "{api_url}{webhook_path} answered {status} to an unsigned POST whose body is not even JSON, not the "
            "function's own 400 (such as {{\"error\": \"missing_signature\"}} or \"Missing stripe-signature\"): "
            "anyone who knows the URL can post events to it, or something else answers there. Check the "
            "release's function before you give the URL to the provider."
        ),
        "next": ("cat ../../supabase/functions/{function}/index.ts", "docker logs paycraft_edge_runtime --tail 100"),
    },
    "webhook_upstream_down": {
        "runbook": None,
        "heading": "The edge runtime behind {webhook_path} does not answer",
        "explanation": (
            "Kong answered {status} for {webhook_path}: the edge runtime is not running, still starting, or "
            "not reachable from Kong. The provider retries its deliveries for a while, then gives up."
        ),
        "next": ("docker compose ps edge-runtime", "docker logs paycraft_edge_runtime --tail 100"),
    },
    "webhook_function_error": {
        "runbook": None,
        "heading": "The {function} function fails",
        "explanation": (
            "{api_url}{webhook_path} answered {status} to an unsigned POST, which the function should refuse "
            "with its own 400 before doing anything: it does not load or crashes (its log says why)."
        ),
        "next": ("docker logs paycraft_edge_runtime --tail 100",),
    },
}

# Failures that waiting cannot change: stop retrying at the first one.
FINAL_CAUSES = frozenset({"key_mismatch", "api_key_unknown", "probe_config", "not_suite_config", "tls_error",
                          "postgres_login_failed", "webhook_gateway_auth", "webhook_unsigned_accepted",
                          "gateway_open"})

_JWT_MARKERS = ("invalid jwt", "jwt", "invalid api key", "invalid key", "no api key", "unauthorized", "jws")


class Outcome:
    """What one attempt of one probe saw."""

    __slots__ = ("cause", "context", "detail", "document", "final", "ok", "status")

    def __init__(self, ok, status, detail, cause=None, context=None, document=None):
        self.ok = ok
        self.status = status
        self.detail = detail
        self.cause = cause
        self.context = context or {}
        self.document = document
        self.final = cause in FINAL_CAUSES


class HttpAnswer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def text(self):
        return self.body.decode("utf-8", "replace")


class NoAnswer(Exception):
    """No HTTP answer at all: ``kind`` is refused, timeout, tls or closed."""

    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Like curl without -L: a 3xx is the answer, not a hop."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_TLS_LOCK = threading.Lock()
_TLS_CONTEXTS = {}


def _tls_context(validate_certs, ca_file=None):
    """One TLS context per setting, made once (loading the CA store takes a while on a busy host, and the
    probes' threads would each load it); an SSLContext is safe to share between threads.

    ``ca_file``: a PEM bundle that replaces the system's CA store (only its roots are trusted), e.g. the
    root of an internal or test ACME CA."""
    key = (bool(validate_certs), ca_file or None)
    with _TLS_LOCK:
        context = _TLS_CONTEXTS.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=ca_file or None)
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            _TLS_CONTEXTS[key] = context
        return context


def _opener(url, validate_certs, ca_file=None):
    handlers = [_NoRedirect()]
    if urllib.parse.urlsplit(url).scheme == "https":  # plain http needs no TLS context
        handlers.append(urllib.request.HTTPSHandler(context=_tls_context(validate_certs, ca_file)))
    return urllib.request.build_opener(*handlers)


def http_request(url, method="GET", headers=None, timeout=5.0, validate_certs=True, data=None, ca_file=None):
    """One HTTP request. Returns :class:`HttpAnswer` for every HTTP status, raises :class:`NoAnswer`.

    ``ca_file``: trust only the roots in this PEM file for https (default: the system's CA store)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - checked
                                     headers=dict(headers or {}))
    try:
        with _opener(url, validate_certs, ca_file).open(request, timeout=timeout) as response:
            return HttpAnswer(response.status, response.read(MAX_BODY), dict(response.headers))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(MAX_BODY) if exc.fp is not None else b""
        except (OSError, HTTPException):
            body = b""
        return HttpAnswer(exc.code, body, dict(exc.headers or {}))
    except urllib.error.URLError as exc:
        raise _no_answer(exc.reason) from exc
    except (OSError, HTTPException) as exc:
        raise _no_answer(exc) from exc


def _no_answer(reason):
    if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
        return NoAnswer("tls", f"TLS error: {reason}")
    if isinstance(reason, ConnectionRefusedError):
        return NoAnswer("refused", "connection refused")
    if isinstance(reason, TimeoutError):
        return NoAnswer("timeout", "timed out")
    if isinstance(reason, (ConnectionResetError, HTTPException)):
        return NoAnswer("closed", f"connection closed without an HTTP answer ({type(reason).__name__})")
    if isinstance(reason, socket.gaierror):
        return NoAnswer("refused", f"cannot resolve host: {reason}")
    return NoAnswer("refused", str(reason) or type(reason).__name__)


def preview(text, limit=BODY_PREVIEW):
    """The first ``limit`` characters on one line (``| head -c 200``)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def redact(text, secrets):
    """Replace every secret, raw or URL-encoded, by ``********``.

    Redact before cutting a preview, or a secret cut at the boundary would leak in part.
    """
    for secret in secrets:
        if secret:
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
                text = text.replace(form, REDACTED)
    return text


def _port_of(url):
    parsed = urllib.parse.urlsplit(url)
    if parsed.port:
        return parsed.port
    return 443 if parsed.scheme == "https" else 80


def suite_config_url(api_url, config_path, api_key):
    """``${supabaseUrl}${configPath}?apiKey=...`` as the SDK builds it."""
    sep = "&" if "?" in config_path else "?"
    return api_url.rstrip("/") + config_path + sep + urllib.parse.urlencode({"apiKey": api_key or ""})


def check_suite_config(document):
    """Return a list of problems with a SuiteConfig document (empty when it is one)."""
    if not isinstance(document, dict):
        return [f"the JSON document is a {type(document).__name__}, not an object"]
    problems = []
    missing = [key for key in SUITE_CONFIG_KEYS if key not in document]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    expected = (("products", list, "a list"), ("providers", list, "a list"), ("paywall", dict, "an object"))
    for key, kind, label in expected:
        if key in document and not isinstance(document[key], kind):
            problems.append(f"{key} is {_json_type(document[key])}, not {label}")
    ttl = document.get("cache_ttl_seconds")
    if "cache_ttl_seconds" in document and (isinstance(ttl, bool) or not isinstance(ttl, int)):
        problems.append(f"cache_ttl_seconds is {_json_type(ttl)}, not an integer")
    if "tenant_id" in document and not isinstance(document["tenant_id"], str):
        problems.append(f"tenant_id is {_json_type(document['tenant_id'])}, not a string")
    return problems


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def classify_config_answer(status, body_text):
    """Map a non-200 answer of the config endpoint to ``(cause id, context)`` (a key of :data:`CAUSES`).

    Answers of the config function itself carry ``{"error": ...}``; Kong's and the edge runtime's carry
    ``{"message": ...}`` or ``{"msg": ...}``.
    """
    lowered = body_text.lower()
    error = code = ""
    try:
        document = json.loads(body_text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        error = str(document.get("error") or "")
        code = str(document.get("code") or "")
    if status == 404 and "function not found" in lowered:
        return "function_not_found", {}
    if status == 404 and "no route matched" in lowered:
        return "no_route", {}
    if status == 401 and error == "invalid_apiKey":
        return "api_key_unknown", {}
    if status in (401, 403) or (400 <= status < 500 and any(m in lowered for m in _JWT_MARKERS)):
        return "key_mismatch", {}
    if status == 400 and ("missing_apikey" in lowered or "apikey" in lowered):
        return "probe_config", {}
    if status == 502 and error == "upstream_unreachable":
        return "rest_unreachable", {}
    if status == 502 and error == "upstream_error":
        return "rest_error", {"code": f" ({code})" if code else ""}
    if status in (502, 503, 504):
        return "upstream_down", {}
    if status >= 500:
        return "function_error", {}
    return "unexpected_http", {}


# --------------------------------------------------------------------- probes
def _json_headers(anon_key):
    """What the SDK sends through the gateway: JSON, and the anon key as apikey and bearer token."""
    headers = {"Accept": "application/json"}
    if anon_key:
        headers["apikey"] = anon_key
        headers["Authorization"] = f"Bearer {anon_key}"
    return headers


def probe_suite_config(params, timeout):
    api_key = params.get("api_key")
    anon_key = params.get("anon_key")
    url = suite_config_url(params["api_url"], params["config_path"], api_key)
    headers = _json_headers(anon_key)
    try:
        answer = http_request(url, "GET", headers, timeout, params.get("validate_certs", True),
                              ca_file=params.get("ca_file"))
    except NoAnswer as exc:
        cause = {"tls": "tls_error", "timeout": "upstream_down"}.get(exc.kind, "gateway_down")
        return Outcome(False, exc.kind, exc.detail, cause, {"status": exc.kind, "url": params["api_url"]})
    text = redact(answer.text(), (api_key, anon_key))
    if answer.status != 200:
        cause, context = classify_config_answer(answer.status, text)
        return Outcome(False, answer.status, f"HTTP {answer.status} {preview(text)}", cause,
                       {"status": f"HTTP {answer.status}", **context})
    try:
        document = json.loads(text)
    except ValueError:
        problem = "the answer is not JSON"
        return Outcome(False, 200, f"HTTP 200, not JSON: {preview(text)}", "not_suite_config",
                       {"missing": problem})
    problems = check_suite_config(document)
    if problems:
        return Outcome(False, 200, "HTTP 200 JSON, " + "; ".join(problems), "not_suite_config",
                       {"missing": "; ".join(problems)})
    detail = (f"tenant {document['tenant_id']}: {len(document['products'])} products, "
              f"{len(document['providers'])} providers, cache_ttl_seconds {document['cache_ttl_seconds']}")
    return Outcome(True, 200, detail, document=document)


# Kong's key-auth answers: no key sent, or a key that is no consumer's
KONG_KEY_REFUSED = re.compile(
    r'"message"\s*:\s*"(No API key found in request|Unauthorized|Invalid authentication credentials)"')


def _is_kong(answer):
    server = str({k.lower(): v for k, v in answer.headers.items()}.get("server", "")).lower()
    return server.startswith("kong") or any(k.lower().startswith("x-kong-") for k in answer.headers)


def probe_gateway(params, timeout):
    """Kong's own answer on ``/``: 404 "no Route matched" (or any non-error answer that Kong signs)."""
    url = params["api_url"].rstrip("/") + "/"
    try:
        answer = http_request(url, "GET", {}, timeout, params.get("validate_certs", True),
                              ca_file=params.get("ca_file"))
    except NoAnswer as exc:
        cause = "tls_error" if exc.kind == "tls" else "gateway_down"
        return Outcome(False, exc.kind, exc.detail, cause, {"url": url})
    line = f"HTTP {answer.status} {preview(answer.text())}".rstrip()
    if answer.status >= 500:
        return Outcome(False, answer.status, line, "gateway_error", {"status": f"HTTP {answer.status}"})
    if answer.status == 404 and KONG_NO_ROUTE in answer.text().lower():
        return Outcome(True, answer.status, line)
    if answer.status < 400 and _is_kong(answer):
        return Outcome(True, answer.status, line)
    return Outcome(False, answer.status, line, "not_kong", {"status": f"HTTP {answer.status}"})


def _ask_auth(url, headers, params, timeout):
    """``(answer, None)`` from the auth route, or ``(None, the failing Outcome)`` when nothing answered."""
    try:
        return http_request(url, "GET", headers, timeout, params.get("validate_certs", True),
                            ca_file=params.get("ca_file")), None
    except NoAnswer as exc:
        cause = "tls_error" if exc.kind == "tls" else "gateway_down"
        return None, Outcome(False, exc.kind, exc.detail, cause, {"url": params["api_url"], "status": exc.kind})


def _key_check_in_force(url, params, timeout):
    """None when Kong refuses a request without an apikey (its key check is on), else the failing Outcome."""
    answer, failed = _ask_auth(url, {"Accept": "application/json"}, params, timeout)
    if failed:
        return failed
    text = answer.text()
    if answer.status == 401 and KONG_KEY_REFUSED.search(text):
        return None
    line = f"without an apikey: HTTP {answer.status} {preview(text)}".rstrip()
    if answer.status in (502, 503, 504):
        # passed on to GoTrue, which is down or starting: retried; its answer then decides
        return Outcome(False, answer.status, line, "auth_down", {"status": f"HTTP {answer.status}"})
    return Outcome(False, answer.status, line, "gateway_open", {"status": f"HTTP {answer.status}"})


def probe_auth(params, timeout):
    """GoTrue's ``GET /health`` through the gateway's /auth/v1/ route: 200 with its health document.

    With ``key_check`` (the stack's paycraft_stack_key_check), a request without an apikey must first get
    Kong's 401: a gateway that lets it through is open to anyone.
    """
    url = params["api_url"].rstrip("/") + params.get("auth_path", DEFAULTS["auth_path"])
    if params.get("key_check"):
        refused = _key_check_in_force(url, params, timeout)
        if refused is not None:
            return refused
    anon_key = params.get("anon_key")
    answer, failed = _ask_auth(url, _json_headers(anon_key), params, timeout)
    if failed:
        return failed
    text = redact(answer.text(), (anon_key,))
    line = f"HTTP {answer.status} {preview(text)}".rstrip()
    context = {"status": f"HTTP {answer.status}"}
    if answer.status in (502, 503, 504):
        return Outcome(False, answer.status, line, "auth_down", context)
    if answer.status == 401 and _is_kong(answer) and KONG_KEY_REFUSED.search(text):
        return Outcome(False, answer.status, line, "gateway_key_refused", context)
    if answer.status != 200:
        return Outcome(False, answer.status, line, "auth_error" if answer.status < 500 else "auth_down", context)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not document.get("version") or not document.get("name"):
        return Outcome(False, answer.status, line, "auth_error", context)
    return Outcome(True, 200, f"{document['name']} {document['version']}")


def probe_dashboard(params, timeout):
    """``curl -fsSIL``: HEAD (GET when HEAD is refused with 405), redirects followed, a 200 at the end."""
    url = params["dashboard_url"]
    validate = params.get("validate_certs", True)
    hops = []
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            answer = http_request(url, "HEAD", {}, timeout, validate, ca_file=params.get("ca_file"))
            if answer.status == 405:
                answer = http_request(url, "GET", {}, timeout, validate, ca_file=params.get("ca_file"))
            location = {k.lower(): v for k, v in answer.headers.items()}.get("location")
            if answer.status not in (301, 302, 303, 307, 308) or not location:
                break
            hops.append(f"{answer.status} -> {location}")
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                break
    except NoAnswer as exc:
        cause = "tls_error" if exc.kind == "tls" else "dashboard_down"
        return Outcome(False, exc.kind, exc.detail, cause, {"url": url})
    line = f"HTTP {answer.status}" + (f" after {', '.join(hops)}" if hops else "")
    if answer.status == 200:
        return Outcome(True, answer.status, line)
    context = {"status": f"HTTP {answer.status}", "hops": f" (redirects: {', '.join(hops)})" if hops else ""}
    return Outcome(False, answer.status, line, "dashboard_error", context)


def pg_ping(host, port, timeout):
    """``pg_isready`` over the wire: ``(state, detail)``; never authenticates."""
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except TimeoutError:
        return PG_NO_RESPONSE, "connect timed out"
    except OSError as exc:
        return PG_NO_RESPONSE, _no_answer(exc).detail
    with sock:
        sock.settimeout(timeout)
        payload = b"user\0postgres\0database\0postgres\0application_name\0paycraft_smoke\0\0"
        try:
            sock.sendall(struct.pack("!ii", 8 + len(payload), PG_PROTOCOL_V3) + payload)
            head = _recv_exact(sock, 5)
            if head is None:
                return PG_NO_RESPONSE, "connection closed before any answer"
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = _recv_exact(sock, max(0, min(length - 4, 8192))) or b""
        except TimeoutError:
            return PG_NO_RESPONSE, "no answer to the startup message"
        except OSError as exc:
            return PG_NO_RESPONSE, f"connection error: {exc}"
        try:
            sock.sendall(b"X\0\0\0\4")  # Terminate: leave politely, never log in
        except OSError:
            pass
    if kind == b"R":
        return PG_ACCEPTING, "server requests authentication (accepting connections)"
    if kind == b"v":
        return PG_ACCEPTING, "server negotiates the protocol version (accepting connections)"
    if kind == b"E":
        fields = parse_pg_error(body)
        code, message = fields.get("C", ""), fields.get("M", "")
        if code == PG_CANNOT_CONNECT_NOW:
            return PG_REJECTING, f"{code} {message}".strip()
        return PG_ACCEPTING, f"server answers: {code} {message}".strip()
    return PG_NO_RESPONSE, f"unexpected first byte {kind!r}: not a PostgreSQL server"


def _recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None if not data else data
        data += chunk
    return data


def parse_pg_error(body):
    """Fields of an ErrorResponse body: ``{'S': 'FATAL', 'C': '57P03', 'M': '...'}``."""
    fields = {}
    for part in body.split(b"\0"):
        if len(part) >= 1:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def pg_login(params, timeout):
    """Log in as ``db_user`` with ``db_password`` and run ``SELECT 1``: ``(ok, cause or None, detail)``."""
    from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres

    conn_params = {"host": params["db_host"], "port": params["db_port"], "user": params["db_user"],
                   "password": params.get("db_password"), "dbname": params["db_name"]}
    try:
        conn = _postgres.connect(conn_params, "paycraft_smoke", max(1, round(timeout)))
    except _postgres.PostgresError as exc:
        kind = _postgres.login_failure_kind(exc.reason)
        if kind == "password":
            return False, "postgres_login_failed", exc.reason
        if kind == "starting":
            return False, "postgres_rejecting", exc.reason
        return False, "postgres_query_failed", exc.reason
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            row = cur.fetchone()
    except Exception as exc:  # psycopg2.Error: a server that logs in but cannot answer
        return False, "postgres_query_failed", str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    finally:
        conn.close()
    if not row or row[0] != 1:
        return False, "postgres_query_failed", f"SELECT 1 returned {row!r}"
    return True, None, f"logged in as {params['db_user']}, SELECT 1 returned 1"


def probe_postgres(params, timeout):
    state, detail = pg_ping(params["db_host"], params["db_port"], timeout)
    if state != PG_ACCEPTING:
        cause = "postgres_rejecting" if state == PG_REJECTING else "postgres_no_response"
        return Outcome(False, state, detail, cause)
    ok, cause, login_detail = pg_login(params, timeout)
    if ok:
        return Outcome(True, "logged in", login_detail)
    status = {"postgres_login_failed": "login refused", "postgres_rejecting": PG_REJECTING}.get(cause, "query failed")
    return Outcome(False, status, login_detail, cause, {"reason": login_detail})


# The body of the webhook probes: deliberately not JSON and unsigned, so that no function can take it for an
# event (a function that checks no signature, such as one whose provider secret is not set yet, stops at its
# JSON parse), and no provider's signature header.
WEBHOOK_PROBE_BODY = b"paycraft-selfhost smoke probe: not an event"
# A tenant id for the per-tenant path when the smoke tenant's is not known (an operator's key): the function
# refuses the unsigned delivery before it looks the tenant up, and the route is what the probe proves.
NIL_TENANT = "00000000-0000-0000-0000-000000000000"
TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def webhook_path(config_path, function, tenant_id=None):
    """The webhook function's path: a sibling of the config function under the same ``/functions/v1/``;
    with ``tenant_id``, the per-tenant path a release like PayCraft hands out (``.../<function>/<tenant_id>``)."""
    path = config_path.split("?", 1)[0].rsplit("/", 1)[0] + "/" + function
    return f"{path}/{tenant_id}" if tenant_id else path


def classify_webhook_answer(status, body_text):
    """Map the answer to an unsigned POST to ``(passed, cause id or None, the function's refusal or None)``.

    The function's own refusal is a 400 or 422 (a JSON object with an ``error`` field, as the reference
    release's functions answer, or a line of plain text, as PayCraft's do: ``Missing stripe-signature``,
    ``Invalid JSON``), or a 401 in plain text (``Invalid signature``). Kong's and the edge runtime's answers
    are JSON objects with ``message``/``msg`` instead, an HTML page is a proxy's.
    """
    lowered = body_text.lower()
    try:
        document = json.loads(body_text)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    text = body_text.strip()
    plain = bool(text) and document is None and not text.startswith("<")
    refusal = error if isinstance(error, str) and error else (preview(text, 80) if plain else None)
    if status in (400, 422) and refusal:
        return True, None, refusal
    if status == 404 and "function not found" in lowered:
        return False, "webhook_not_found", None
    if status == 404 and KONG_NO_ROUTE in lowered:
        return False, "webhook_no_route", None
    if status == 401 and plain:  # the function's own "Invalid signature" (Kong's and GoTrue's 401s are JSON)
        return True, None, refusal
    if status in (401, 403):
        return False, "webhook_gateway_auth", None
    if status in (502, 503, 504):
        return False, "webhook_upstream_down", None
    if status >= 500:
        return False, "webhook_function_error", None
    return False, "webhook_unsigned_accepted", None


HOLD_PASS_HEADER = "X-PayCraft-Hold-Pass"  # noqa: S105 - gateway.HOLD_PASS_HEADER, a header name


def read_hold_pass(path: str) -> str:
    """The pass token of the write hold in force (its record at ``path``), else ''."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return ""
    return str(record.get("pass") or "") if isinstance(record, dict) else ""


def make_webhook_probe(function):
    """The probe of one webhook function: an unsigned ``POST {api_url}/functions/v1/<function>``, no apikey;
    ``params["webhook_tenant_id"]`` set: the per-tenant path ``.../<function>/<tenant_id>``."""

    def probe(params, timeout):
        path = webhook_path(params["config_path"], function, params.get("webhook_tenant_id"))
        url = params["api_url"].rstrip("/") + path
        context = {"function": function, "webhook_path": path}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if params.get("hold_pass"):
            # an operation's write hold refuses POSTs at the gateway; its own smoke test passes
            headers[HOLD_PASS_HEADER] = params["hold_pass"]
        try:
            answer = http_request(url, "POST", headers, timeout, params.get("validate_certs", True),
                                  data=WEBHOOK_PROBE_BODY, ca_file=params.get("ca_file"))
        except NoAnswer as exc:
            cause = {"tls": "tls_error", "timeout": "webhook_upstream_down"}.get(exc.kind, "gateway_down")
            return Outcome(False, exc.kind, exc.detail, cause, {**context, "status": exc.kind, "url": url})
        text = answer.text()
        passed, cause, error = classify_webhook_answer(answer.status, text)
        if passed:
            return Outcome(True, answer.status, f"HTTP {answer.status} {error} (the function refuses an unsigned POST)")
        return Outcome(False, answer.status, f"HTTP {answer.status} {preview(text)}".rstrip(), cause,
                       {**context, "status": f"HTTP {answer.status}"})

    probe.__name__ = f"probe_webhook_{function}"
    return probe


PROBE_FUNCTIONS = {
    "suite_config": probe_suite_config,
    "gateway": probe_gateway,
    "auth": probe_auth,
    "postgres": probe_postgres,
    "dashboard": probe_dashboard,
}


# ---------------------------------------------------------------- the engine
def validate(params):
    """Return a list of operator-facing errors in the parameters (empty when fine)."""
    errors = []
    probes = params.get("probes") or list(PROBES)
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        errors.append(f"unknown probes {unknown}: choose from {list(PROBES)}")
    if not probes:
        errors.append("probes is empty: select at least one of " + ", ".join(PROBES))
    if "postgres" in probes and not params.get("db_password"):
        errors.append("db_password is required when the postgres probe runs (PAYCRAFT_DB_PASSWORD: give "
                      "env_file, the env file on the host, or db_password); or leave postgres out of probes")
    if "suite_config" in probes and not params.get("api_key"):
        errors.append("api_key is required when the suite_config probe runs (a tenant API key, pk_test_... "
                      "or pk_live_...); or leave suite_config out of probes")
    for name in ("api_url", "dashboard_url"):
        value = params.get(name) or ""
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            errors.append(f"{name} must be an http:// or https:// URL with a host, got {value!r}")
    if not str(params.get("config_path") or "").startswith("/"):
        errors.append(f"config_path must start with '/', got {params.get('config_path')!r}")
    if not str(params.get("auth_path") or "").startswith("/"):
        errors.append(f"auth_path must start with '/', got {params.get('auth_path')!r}")
    ca_file = params.get("ca_file")
    if ca_file and not os.path.isfile(ca_file):
        errors.append(f"ca_file {ca_file!r} does not exist on this host (the PEM root(s) to trust for https)")
    webhooks = params.get("webhook_functions") or []
    if not isinstance(webhooks, (list, tuple)):
        errors.append(f"webhook_functions must be a list of function names, got {webhooks!r}")
    else:
        bad = [w for w in webhooks if not isinstance(w, str) or not WEBHOOK_FUNCTION_NAME.match(w) or w in PROBES]
        if bad:
            errors.append(f"webhook_functions {bad}: each must be the name of a directory under supabase/functions "
                          "(letters, digits, '-' and '_'), such as stripe-webhook")
        if len(set(webhooks)) != len(webhooks):
            errors.append(f"webhook_functions names a function twice: {list(webhooks)}")
    tenant = params.get("webhook_tenant_id")
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_ID.match(tenant)):
        errors.append(f"webhook_tenant_id {tenant!r} is not a tenant id (letters, digits, '-' and '_'), such as a UUID")
    timeout = params.get("timeout")
    if not isinstance(timeout, (int, float)) or timeout < 0:
        errors.append(f"timeout must be 0 or more seconds, got {timeout!r}")
    for name in ("interval", "request_timeout"):
        value = params.get(name)
        if not isinstance(value, (int, float)) or value <= 0:
            errors.append(f"{name} must be a positive number of seconds, got {value!r}")
    port = params.get("db_port")
    if not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"db_port must be a TCP port (1-65535), got {port!r}")
    return errors


def _with_defaults(params):
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in params.items() if v is not None})
    merged.setdefault("probes", list(PROBES))
    merged.setdefault("validate_certs", True)
    merged.setdefault("webhook_functions", [])
    merged.setdefault("webhook_tenant_id", None)
    return merged


def run_probe(name, params, deadline, interval, request_timeout, clock=time.monotonic, sleep=time.sleep):
    """Retry one probe until it passes, fails finally, or ``deadline`` (a ``clock()`` value) passes.

    Returns ``(result dict, parsed document or None)``.
    """
    fn = PROBE_FUNCTIONS[name] if name in PROBE_FUNCTIONS else make_webhook_probe(name)
    attempts = 0
    while True:
        attempts += 1
        # Every attempt gets the whole request_timeout (a shortened last attempt would report "timed out"
        # instead of what the server says): the deadline decides when attempts start, so a run takes at
        # most timeout + request_timeout.
        started = clock()
        try:
            outcome = fn(params, request_timeout)
        except Exception as exc:  # a probe bug must not hide the others' results
            outcome = Outcome(False, "error", f"probe error: {type(exc).__name__}: {exc}", "unexpected_http")
        latency = max(0.0, (clock() - started) * 1000.0)
        if outcome.ok or outcome.final:
            break
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(interval, remaining))
        if clock() >= deadline:
            break
    return _result(name, outcome, attempts, latency, params)


def _result(name, outcome, attempts, latency, params):
    secrets = (params.get("api_key"), params.get("anon_key"), params.get("db_password"))
    result = {
        "ok": outcome.ok,
        "attempts": attempts,
        "latency_ms": round(latency, 1),
        "status": outcome.status,
        "detail": redact(outcome.detail, secrets),
        "cause_id": None,
        "cause": None,
        "explanation": None,
        "runbook": None,
        "next": [],
    }
    if not outcome.ok:
        cause = CAUSES[outcome.cause]
        context = {
            "api_url": params["api_url"],
            "gateway_port": _port_of(params["api_url"]),
            "config_path": params["config_path"],
            "auth_path": params["auth_path"],
            "db_host": params["db_host"],
            "db_port": params["db_port"],
            "db_user": params["db_user"],
            "dashboard_url": params["dashboard_url"],
            "missing": "",
            "status": outcome.status,
            "url": "",
            "code": "",
            "hops": "",
            "reason": "",
            "function": "",
            "webhook_path": "",
        }
        context.update(outcome.context)
        result.update(
            cause_id=outcome.cause,
            cause=cause["heading"].format(**context),
            explanation=redact(cause["explanation"].format(**context), secrets),
            runbook=cause["runbook"],
            next=[redact(cmd.format(**context), secrets) for cmd in cause["next"]],
        )
    return result, outcome.document


def summarize(results, order=PROBES):
    """``smoke: 5/5 probes passed (suite_config 35 ms, gateway 3 ms, ...)``."""
    names = [n for n in order if n in results]
    passed = sum(1 for n in names if results[n]["ok"])
    parts = []
    for n in names:
        r = results[n]
        if r["ok"]:
            parts.append(f"{n} {r['latency_ms']:.0f} ms")
        else:
            plural = "attempt" if r["attempts"] == 1 else "attempts"
            parts.append(f"{n} FAILED after {r['attempts']} {plural}")
    return f"smoke: {passed}/{len(names)} probes passed ({', '.join(parts)})"


def failure_lines(results, order=PROBES):
    """One line per failed probe: ``<probe>: <seen> — likely cause: <heading> (<runbook>). Next: <commands>``.

    ``(<runbook>)``, the runbook section the cause comes from, only when it has one.
    """
    lines = []
    for n in order:
        r = results.get(n)
        if r is None or r["ok"]:
            continue
        source = f" ({r['runbook']})" if r.get("runbook") else ""
        lines.append(f"{n}: {r['detail']} — likely cause: {r['cause']}{source}. Next: {'; '.join(r['next'])}")
    return lines


def run_probes(params, clock=time.monotonic, sleep=time.sleep):
    """Run the selected probes in parallel under one deadline.

    Returns ``{"ok", "probes", "suite_config", "summary", "message"}``; ``message``
    is the summary followed by one line per failed probe.
    """
    params = _with_defaults(params)
    errors = validate(params)
    if errors:
        raise ValueError("; ".join(errors))
    # the webhook probes come after the five, in the order given (a release without webhook functions keeps
    # its count)
    names = [n for n in PROBES if n in params["probes"]] + list(params["webhook_functions"])
    deadline = clock() + float(params["timeout"])
    interval, request_timeout = float(params["interval"]), float(params["request_timeout"])
    results, documents = {}, {}
    lock = threading.Lock()

    def one(name):
        result, document = run_probe(name, params, deadline, interval, request_timeout, clock, sleep)
        with lock:
            results[name] = result
            documents[name] = document

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="paycraft_smoke") as pool:
        for future in [pool.submit(one, n) for n in names]:
            future.result()
    summary = summarize(results, names)
    ok = all(r["ok"] for r in results.values())
    message = "\n".join([summary, *failure_lines(results, names)])
    return {
        "ok": ok,
        "probes": results,
        "suite_config": documents.get("suite_config"),
        "summary": summary,
        "message": message,
    }


def read_api_key_file(path: str) -> str:
    """The ``api_key`` field of a JSON file (the smoke role's saved smoke tenant key)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    key = data.get("api_key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key:
        raise ValueError("no api_key field")
    return key


def read_tenant_id_file(path: str):
    """The ``tenant_id`` field of the smoke role's credentials file, or None (no file, no field, not JSON)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    tenant = data.get("tenant_id") if isinstance(data, dict) else None
    return tenant if isinstance(tenant, str) and TENANT_ID.match(tenant) else None
