"""Real servers on 127.0.0.1 that answer like a PayCraft stack in one state each (used by the smoke tests).

``Stack`` is a healthy gateway + config function; its subclasses are the broken states of the runbook's
Troubleshooting section; ``Dashboard*`` answer like the Next.js dashboard; ``PgStartingHandler`` answers a
StartupMessage the way PostgreSQL does while it starts up (SQLSTATE 57P03).
"""

from __future__ import annotations

import json
import socketserver
import struct
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "pk_test_smoke_3b9f1c"
ANON_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c21va2UtdGVzdC1hbm9uLWtleQ"
SUITE_CONFIG = {
    "tenant_id": "tenant-5f0c2a",
    "products": [{"id": "pro_monthly", "price": 999}],
    "providers": [{"name": "stripe"}],
    "paywall": {"title": "Go Pro"},
    "cache_ttl_seconds": 3600,
}
CONFIG_PATH = "/functions/v1/config"
AUTH_HEALTH_PATH = "/auth/v1/health"
GOTRUE_HEALTH = {"version": "v2.151.0", "name": "GoTrue",
                 "description": "GoTrue is a user registration and authentication API"}
KONG_BAD_GATEWAY = {"message": "An invalid response was received from the upstream server"}
# The webhook functions of the reference release's v1.1.4-webhooks, and the header each one checks.
WEBHOOK_FUNCTIONS = ("stripe-webhook", "razorpay-webhook")
WEBHOOK_SIGNATURE_HEADERS = {"stripe-webhook": "Stripe-Signature", "razorpay-webhook": "X-Razorpay-Signature"}
FUNCTIONS_PREFIX = "/functions/v1/"


class Stack(BaseHTTPRequestHandler):
    """A healthy gateway + config function + auth: Kong's 404 on /, GoTrue's health document on
    /auth/v1/health, the SuiteConfig on the config path.

    Like Kong in front of Supabase functions, a request carrying an ``apikey`` header that is not
    the anon key gets 401 Invalid JWT; the function itself answers 400 missing_apiKey without apiKey
    and 401 for an apiKey no tenant owns.
    """

    server_version = "paycraft-test-gateway"
    anon_key = ANON_KEY
    api_key = API_KEY
    # Kong's key-auth on /auth/v1/ (the stack's paycraft_stack_key_check): no apikey, no answer but 401
    key_check = False

    def log_message(self, format, *args):  # keep pytest output quiet
        return

    def _send(self, status, body, content_type="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append({"path": url.path, "query": query, "headers": headers})
        if url.path == "/":
            return self.root()
        if url.path == AUTH_HEALTH_PATH:
            return self.auth_health()
        if url.path != CONFIG_PATH:
            return self._send(404, {"message": "no Route matched with those values"})
        if "apikey" in self.headers and self.headers["apikey"] != self.anon_key:
            return self._send(401, {"message": "Invalid JWT"})
        if self.headers.get("Authorization") not in (None, f"Bearer {self.anon_key}"):
            return self._send(401, {"message": "Invalid JWT"})
        return self.config(query.get("apiKey", [""])[0])

    def root(self):
        return self._send(404, {"message": "no Route matched with those values"}, headers={"Server": "kong/3.7.1"})

    # POST: the webhook functions of v1.1.4-webhooks behind Kong's functions-v1 route (no apikey needed)
    webhook_functions = WEBHOOK_FUNCTIONS

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append({"path": url.path, "method": "POST", "query": urllib.parse.parse_qs(url.query),
                                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        if not url.path.startswith(FUNCTIONS_PREFIX):
            return self._send(404, {"message": "no Route matched with those values"})
        return self.function_post(url.path.removeprefix(FUNCTIONS_PREFIX))

    def function_post(self, name):
        # the edge runtime's main router takes the first segment: /functions/v1/<name>[/<tenant_id>...]
        name = name.split("/", 1)[0]
        if name not in self.webhook_functions:
            return self._send(404, {"message": "Function not found"})
        return self.webhook(name)

    def webhook(self, name):
        header = WEBHOOK_SIGNATURE_HEADERS.get(name, "X-Signature")
        if not self.headers.get(header):
            return self._send(400, {"error": "missing_signature", "message": f"no {header} header"})
        return self._send(400, {"error": "invalid_signature"})

    def auth_health(self):
        if self.key_check and "apikey" not in self.headers:
            return self._send(401, {"message": "No API key found in request"},
                              headers={"WWW-Authenticate": 'Key realm="kong"'})
        return self._send(200, GOTRUE_HEALTH)

    def config(self, api_key):
        if not api_key:
            return self._send(400, {"error": "missing_apiKey"})
        if api_key != self.api_key:
            return self._send(401, {"error": "invalid_apiKey", "message": f"no tenant owns {api_key}"})
        return self._send(200, SUITE_CONFIG)


class FunctionNotFound(Stack):
    def config(self, api_key):
        return self._send(404, {"message": "Function not found"})


class BadGateway(Stack):
    def config(self, api_key):
        return self._send(502, {"message": "An invalid response was received from the upstream server"})


class RootBadGateway(Stack):
    """A gateway (or the TLS proxy in front of it) answering 502 on /, its routes still working."""

    def root(self):
        return self._send(502, KONG_BAD_GATEWAY)


class AllBadGateway(Stack):
    """A proxy in front of a stopped Kong: 502 for every path."""

    def do_GET(self):
        self.server.seen.append({"path": self.path, "query": {}, "headers": {}})
        return self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")


class NotKong(Stack):
    """Another web server on the gateway port: 200 on / with its own page."""

    def root(self):
        return self._send(200, b"<html>Welcome to nginx!</html>", "text/html")


class AuthDown(Stack):
    """GoTrue stopped: Kong answers its route with 502."""

    def auth_health(self):
        return self._send(502, KONG_BAD_GATEWAY)


class AuthKeyRefused(Stack):
    """Kong's key-auth on /auth/v1/ (paycraft_stack_key_check) with another anon key than the one sent."""

    def version_string(self):  # the one Server header, as Kong sends it
        return "kong/3.7.1"

    def auth_health(self):
        return self._send(401, {"message": "Unauthorized"}, headers={"WWW-Authenticate": 'Key realm="kong"'})


class AuthNotGoTrue(Stack):
    """/auth/v1/ routed to something that is not GoTrue."""

    def auth_health(self):
        return self._send(200, b"OK", "text/plain")


class RestUnreachable(Stack):
    """The reference config function when /rest/v1/ leads nowhere (PayCraft's kong.yml: db:3000)."""

    def config(self, api_key):
        return self._send(502, {"error": "upstream_unreachable", "message": "cannot reach http://kong:8000/rest/v1"})


class ServiceRoleRejected(Stack):
    """The reference config function when PostgREST rejects the service role key (JWT secret changed)."""

    def config(self, api_key):
        return self._send(401, {"error": "service_role_key_rejected", "message": "PGRST301 ..."})


class MissingPaywall(Stack):
    def config(self, api_key):
        return self._send(200, {k: v for k, v in SUITE_CONFIG.items() if k != "paywall"})


class WrongTypes(Stack):
    def config(self, api_key):
        return self._send(200, {**SUITE_CONFIG, "products": {}, "cache_ttl_seconds": "3600"})


class NotJson(Stack):
    def config(self, api_key):
        return self._send(200, b"<html>hello</html>", "text/html")


class WebhooksNotDeployed(Stack):
    """The edge runtime serves no webhook function (a checkout without them, or a wrong functions mount)."""

    webhook_functions = ()


class WebhookNoRoute(Stack):
    def function_post(self, name):
        return self._send(404, {"message": "no Route matched with those values"})


class WebhookKeyAuth(Stack):
    """key-auth on Kong's functions-v1 route: a POST without an apikey never reaches the function."""

    def function_post(self, name):
        if "apikey" not in self.headers:
            return self._send(401, {"message": "No API key found in request"})
        return super().function_post(name)


class WebhookBadGateway(Stack):
    def function_post(self, name):
        return self._send(502, KONG_BAD_GATEWAY)


class PayCraftWebhooks(Stack):
    """PayCraft's own webhook functions behind a gateway: per-tenant paths (``/functions/v1/<name>/<tenant_id>``),
    plain-text refusals. stripe/razorpay check the signature header first (400 ``Missing stripe-signature``);
    paddle-like ones check a signature only when one is sent and a secret is set, then parse the body: a body
    that is not JSON gets 400 ``Invalid JSON``, a JSON one is taken as an event (200 ``{"received": true}``).
    The unknown-name answer is the edge runtime's. ``server.tenant_paths`` records the tenant segment seen."""

    webhook_functions = ("stripe-webhook", "razorpay-webhook", "paddle-webhook")

    def function_post(self, name):
        name, _, tenant = name.partition("/")
        self.server.__dict__.setdefault("tenant_paths", []).append(tenant)
        if name not in self.webhook_functions:
            return self._send(404, {"message": "Function not found"})
        if name == "stripe-webhook" and not self.headers.get("Stripe-Signature"):
            return self._send(400, b"Missing stripe-signature", "text/plain")
        if name == "razorpay-webhook" and not self.headers.get("X-Razorpay-Signature"):
            return self._send(400, b"Missing x-razorpay-signature", "text/plain")
        body = self.server.seen[-1]["body"]
        try:
            json.loads(body)
        except ValueError:
            return self._send(400, b"Invalid JSON", "text/plain")
        return self._send(200, {"received": True})


class WebhookAcceptsUnsigned(Stack):
    def webhook(self, name):
        return self._send(200, {"received": True})


class Dashboard(BaseHTTPRequestHandler):
    """The Next.js dashboard: 200 text/html for HEAD and GET."""

    def log_message(self, format, *args):
        return

    def _page(self, status=200, headers=None):
        body = b"<html><body>PayCraft</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_HEAD(self):
        self.server.seen.append({"method": "HEAD", "path": self.path})
        self._page()

    def do_GET(self):
        self.server.seen.append({"method": "GET", "path": self.path})
        self._page()


class DashboardNoHead(Dashboard):
    def do_HEAD(self):
        self.server.seen.append({"method": "HEAD", "path": self.path})
        self._page(405, {"Allow": "GET"})


class DashboardRedirect(Dashboard):
    """A dashboard that only redirects (every path, /login too): never a page."""

    def do_HEAD(self):
        self.server.seen.append({"method": "HEAD", "path": self.path})
        self._page(307, {"Location": "/login"})


class DashboardLogin(Dashboard):
    """The Next.js dashboard's usual answer: / redirects to /login, which is a page."""

    def do_HEAD(self):
        self.server.seen.append({"method": "HEAD", "path": self.path})
        if self.path == "/login":
            return self._page()
        return self._page(307, {"Location": "/login"})


class DashboardBroken(Dashboard):
    def do_HEAD(self):
        self.server.seen.append({"method": "HEAD", "path": self.path})
        self._page(500)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.seen = []

    def handle_error(self, request, client_address):
        # a probe that gave up (its timeout) or a non-HTTP client hangs up: not an error of the test server
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class RunningServer:
    def __init__(self, handler, port=0):
        self.server = _Server(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def seen(self):
        return self.server.seen

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def pg_error_response(code, message, severity="FATAL"):
    body = b"".join(
        kind + value.encode() + b"\0" for kind, value in ((b"S", severity), (b"V", severity), (b"C", code),
                                                          (b"M", message))
    ) + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class PgStartingHandler(socketserver.BaseRequestHandler):
    def handle(self):
        head = self.request.recv(8)
        if len(head) < 8:
            return
        length, protocol = struct.unpack("!ii", head)
        rest = b""
        while len(rest) < length - 8:
            chunk = self.request.recv(length - 8 - len(rest))
            if not chunk:
                break
            rest += chunk
        self.server.startups.append((protocol, rest))
        self.request.sendall(pg_error_response("57P03", "the database system is starting up"))


class SilentHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.stop.wait(10)


class TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True




class TenantStack(Stack):
    """A gateway with GoTrue's signup/token and PostgREST, over one in-memory "database".

    ``contract`` is the tenancy contract of the release it plays (PayCraft's, by migration):

    * ``provision_app`` (048): ``tenant_admins`` + ``tenants.api_key_test`` readable under the user's JWT,
      ``rpc/provision_app`` makes a NEW tenant per call, ``rpc/provision_tenant`` too (idempotent);
    * ``provision_tenant`` (023/039): the same without ``provision_app`` (PostgREST's 404 PGRST202);
    * ``api_keys``: the older reference shape, a signup trigger that fills ``public.api_keys``; no
      ``tenant_admins`` table (404 PGRST205) and no provisioning RPC.

    ``server.db``: ``users`` (email -> password), ``keys`` (email -> the pk_test_ key of the user's tenant),
    ``tenants`` (email -> tenant id), ``signups``, ``created`` (tenants made by an RPC). A reset empties
    users and keys, a restore replaces keys.
    """

    key_check = True
    contract = "api_keys"

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _user(self):
        return str(self.headers.get("Authorization", "")).removeprefix("Bearer token-")

    def _db(self):
        db = self.server.db
        db.setdefault("tenants", {})
        db.setdefault("created", 0)
        return db

    def _unknown_function(self, name):
        return self._send(404, {"code": "PGRST202", "details": None, "hint": None,
                                "message": f"Could not find the function public.{name} in the schema cache"})

    def _unknown_table(self, name):
        return self._send(404, {"code": "PGRST205", "details": None, "hint": None,
                                "message": f"Could not find the table 'public.{name}' in the schema cache"})

    def _new_tenant(self, email):
        db = self._db()
        db["keys"][email] = f"pk_test_{uuid.uuid4().hex[:16]}"
        db["tenants"][email] = str(uuid.uuid4())
        return db["tenants"][email]

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith(FUNCTIONS_PREFIX):
            return super().do_POST()
        body = self._body()
        db = self._db()
        self.server.seen.append({"path": url.path, "method": "POST", "query": urllib.parse.parse_qs(url.query),
                                 "headers": {}})
        email, password = str(body.get("email", "")), str(body.get("password", ""))
        if url.path == "/auth/v1/signup":
            if email in db["users"]:
                return self._send(422, {"code": 422, "error_code": "user_already_exists",
                                        "msg": "User already registered"})
            db["users"][email] = password
            db["signups"] += 1
            if self.contract == "api_keys":  # the signup trigger
                self._new_tenant(email)
            return self._send(200, {"id": str(uuid.uuid4()), "email": email})
        if url.path == "/auth/v1/token":
            if db["users"].get(email) != password or not password:
                return self._send(400, {"error": "invalid_grant", "error_description": "Invalid login credentials"})
            return self._send(200, {"access_token": f"token-{email}", "token_type": "bearer",
                                    "user": {"id": f"uid-{email}", "email": email}})
        if url.path.startswith("/rest/v1/rpc/"):
            name = url.path.removeprefix("/rest/v1/rpc/")
            user = self._user()
            if user not in db["users"]:
                return self._send(401, {"code": "PGRST301", "message": "JWT invalid"})
            if name == "provision_app" and self.contract == "provision_app" and set(body) == {"p_app_name"}:
                tenant_id = self._new_tenant(user)
            elif (name == "provision_tenant" and self.contract in ("provision_app", "provision_tenant")
                  and set(body) == {"p_user_id", "p_app_name", "p_email"}):
                tenant_id = db["tenants"].get(user) or self._new_tenant(user)
            else:
                return self._unknown_function(name)
            db["created"] += 1
            return self._send(200, {"tenant_id": tenant_id, "name": body.get("p_app_name"),
                                    "api_key_test": db["keys"][user], "api_key_live": "pk_live_" + "0" * 16,
                                    "webhook_url": f"/functions/v1/stripe-webhook/{tenant_id}"})
        return self._send(404, {"message": "no Route matched with those values"})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        db = self._db()
        user = self._user()
        if url.path == "/rest/v1/api_keys":
            if self.contract != "api_keys":
                return self._unknown_table("api_keys")
            key = db["keys"].get(user)
            return self._send(200, [{"key": key}] if key else [])
        if url.path == "/rest/v1/tenant_admins":
            if self.contract not in ("provision_app", "provision_tenant"):
                return self._unknown_table("tenant_admins")
            tenant = db["tenants"].get(user) if user in db["keys"] else None
            return self._send(200, [{"tenant_id": tenant}] if tenant else [])
        if url.path == "/rest/v1/tenants":
            if self.contract == "api_keys":
                return self._send(400, {"code": "42703", "message": "column tenants.api_key_test does not exist"})
            wanted = urllib.parse.parse_qs(url.query).get("id", [""])[0]
            tenant = db["tenants"].get(user)
            rows = [{"id": tenant, "api_key_test": db["keys"][user]}] if tenant and tenant in wanted else []
            return self._send(200, rows)
        return super().do_GET()

    def config(self, api_key):
        if api_key not in self.server.db["keys"].values():
            return self._send(401, {"error": "invalid_apiKey", "message": "no tenant owns this key"})
        return self._send(200, SUITE_CONFIG)
