#!/usr/bin/env python3
"""A GoTrue-compatible auth service: the endpoints supabase-js uses for PayCraft.

Configured like supabase/gotrue by GOTRUE_API_HOST/GOTRUE_API_PORT,
GOTRUE_DB_DATABASE_URL (as supabase_auth_admin), GOTRUE_JWT_SECRET,
GOTRUE_JWT_EXP, GOTRUE_JWT_AUD, GOTRUE_JWT_ISSUER (default
API_EXTERNAL_URL/auth/v1), GOTRUE_MAILER_AUTOCONFIRM, GOTRUE_DISABLE_SIGNUP.

Implemented: GET /health, GET /settings, POST /signup, POST /token
(grant_type=password and refresh_token), GET /user, POST /logout. Users live
in auth.users (password hashed with pgcrypto's bcrypt), refresh tokens in
auth.refresh_tokens; access tokens are HS256 JWTs. Not implemented: e-mail
sending and confirmation links, OAuth providers, phone/OTP, MFA, admin API.
"""
import json
import os
import secrets
import signal
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import psycopg2
import psycopg2.errors
from psycopg2.extras import Json

VERSION = "v2.151.0"


def env_bool(name, default=False):
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


HOST = os.environ.get("GOTRUE_API_HOST", "0.0.0.0")  # noqa: S104 - a container service
PORT = int(os.environ.get("GOTRUE_API_PORT") or os.environ.get("PORT") or 9999)
DB_URL = os.environ.get("GOTRUE_DB_DATABASE_URL") or os.environ.get("DATABASE_URL", "")
JWT_SECRET = os.environ.get("GOTRUE_JWT_SECRET", "")
JWT_EXP = int(os.environ.get("GOTRUE_JWT_EXP") or 3600)
JWT_AUD = os.environ.get("GOTRUE_JWT_AUD") or "authenticated"
EXTERNAL_URL = (os.environ.get("API_EXTERNAL_URL") or "http://localhost:9999").rstrip("/")
JWT_ISSUER = os.environ.get("GOTRUE_JWT_ISSUER") or EXTERNAL_URL + "/auth/v1"
AUTOCONFIRM = env_bool("GOTRUE_MAILER_AUTOCONFIRM")
DISABLE_SIGNUP = env_bool("GOTRUE_DISABLE_SIGNUP")
MIN_PASSWORD = int(os.environ.get("GOTRUE_PASSWORD_MIN_LENGTH") or 6)

USER_COLUMNS = ("id, aud, role, email, email_confirmed_at, last_sign_in_at, raw_app_meta_data, "
                "raw_user_meta_data, created_at, updated_at")


class AuthError(Exception):
    def __init__(self, status, body):
        super().__init__(str(body))
        self.status = status
        self.body = body


def api_error(status, error_code, msg):
    return AuthError(status, {"code": status, "error_code": error_code, "msg": msg})


def log(level, msg, **fields):
    record = {"level": level, "msg": msg, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    print(json.dumps(record), file=sys.stderr, flush=True)


def iso(ts):
    return ts.isoformat().replace("+00:00", "Z") if ts else None


def connect():
    try:
        conn = psycopg2.connect(DB_URL, application_name="gotrue")
    except psycopg2.OperationalError as exc:
        log("error", "database connection failed", error=str(exc).strip())
        raise api_error(500, "unexpected_failure", "Database error: could not connect") from exc
    conn.autocommit = False
    return conn


def user_json(row):
    uid, aud, role, email, confirmed, last_sign_in, app_meta, user_meta, created, updated = row
    return {
        "id": str(uid), "aud": aud or JWT_AUD, "role": role or "authenticated", "email": email,
        "email_confirmed_at": iso(confirmed), "phone": "", "confirmed_at": iso(confirmed),
        "last_sign_in_at": iso(last_sign_in), "app_metadata": app_meta or {}, "user_metadata": user_meta or {},
        "identities": [], "created_at": iso(created), "updated_at": iso(updated), "is_anonymous": False,
    }


def issue_session(cur, user):
    now = int(time.time())
    claims = {
        "aud": user["aud"], "exp": now + JWT_EXP, "iat": now, "iss": JWT_ISSUER, "sub": user["id"],
        "email": user["email"], "phone": "", "app_metadata": user["app_metadata"],
        "user_metadata": user["user_metadata"], "role": user["role"], "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}], "session_id": str(uuid.uuid4()), "is_anonymous": False,
    }
    refresh = secrets.token_urlsafe(16)
    cur.execute("INSERT INTO auth.refresh_tokens (token, user_id) VALUES (%s, %s)", (refresh, user["id"]))
    return {
        "access_token": jwt.encode(claims, JWT_SECRET, algorithm="HS256"), "token_type": "bearer",
        "expires_in": JWT_EXP, "expires_at": now + JWT_EXP, "refresh_token": refresh, "user": user,
    }


def bearer_claims(header):
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise api_error(401, "no_authorization", "This endpoint requires a Bearer token")
    try:
        return jwt.decode(token.strip(), JWT_SECRET, algorithms=["HS256"], audience=JWT_AUD)
    except jwt.PyJWTError as exc:
        raise api_error(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "gotrue/" + VERSION

    def log_message(self, fmt, *args):
        log("info", "request", method=self.command, path=urlsplit(self.path).path,
            status=args[1] if len(args) > 1 else None, remote_addr=self.client_address[0])

    def send_json(self, status, payload):
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise api_error(400, "bad_json", "Could not parse request body as JSON") from None
        if not isinstance(data, dict):
            raise api_error(400, "bad_json", "Could not parse request body as JSON")
        return data

    def do_OPTIONS(self):
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
        self.send_header("Access-Control-Allow-Headers",
                         self.headers.get("Access-Control-Request-Headers") or "Authorization, Content-Type")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_GET

    def dispatch(self):
        url = urlsplit(self.path)
        route = (self.command, url.path.rstrip("/") or "/")
        handlers = {
            ("GET", "/health"): self.health, ("GET", "/settings"): self.settings,
            ("POST", "/signup"): self.signup, ("POST", "/token"): self.token,
            ("GET", "/user"): self.user, ("POST", "/logout"): self.logout,
        }
        try:
            handler = handlers.get(route)
            if handler is None:
                raise api_error(404, "not_found", "Not Found")
            status, payload = handler(parse_qs(url.query))
        except AuthError as err:
            status, payload = err.status, err.body
        except Exception as exc:  # answer as GoTrue does on an unexpected failure
            log("error", "unhandled error", error=repr(exc))
            status, payload = 500, {"code": 500, "error_code": "unexpected_failure", "msg": "Unexpected failure"}
        self.send_json(status, payload)

    def health(self, _query):
        return 200, {"version": VERSION, "name": "GoTrue",
                     "description": "GoTrue is a user registration and authentication API"}

    def settings(self, _query):
        return 200, {"external": {"email": True, "phone": False}, "disable_signup": DISABLE_SIGNUP,
                     "mailer_autoconfirm": AUTOCONFIRM, "phone_autoconfirm": False, "sms_provider": "",
                     "saml_enabled": False}

    def credentials(self):
        data = self.body()
        email = str(data.get("email") or "").strip().lower()
        password = str(data.get("password") or "")
        return data, email, password

    def signup(self, _query):
        if DISABLE_SIGNUP:
            raise api_error(422, "signup_disabled", "Signups not allowed for this instance")
        data, email, password = self.credentials()
        if not email or "@" not in email:
            raise api_error(400, "validation_failed", "Unable to validate email address: invalid format")
        if len(password) < MIN_PASSWORD:
            raise api_error(422, "weak_password", f"Password should be at least {MIN_PASSWORD} characters.")
        meta = data.get("data") if isinstance(data.get("data"), dict) else {}
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO auth.users (instance_id, aud, role, email, encrypted_password, email_confirmed_at,"
                    " raw_app_meta_data, raw_user_meta_data, last_sign_in_at)"
                    " VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', %s,"
                    " extensions.crypt(%s, extensions.gen_salt('bf', 10)), CASE WHEN %s THEN now() END, %s, %s,"
                    " CASE WHEN %s THEN now() END)"
                    f" RETURNING {USER_COLUMNS}",
                    (JWT_AUD, email, password, AUTOCONFIRM, Json({"provider": "email", "providers": ["email"]}),
                     Json(meta), AUTOCONFIRM))
                user = user_json(cur.fetchone())
                result = issue_session(cur, user) if AUTOCONFIRM else user
        except psycopg2.errors.UniqueViolation:
            raise api_error(422, "user_already_exists", "User already registered") from None
        except psycopg2.Error as exc:
            log("error", "database error saving new user", error=str(exc).strip(), sqlstate=exc.pgcode)
            raise api_error(500, "unexpected_failure", "Database error saving new user") from None
        finally:
            conn.close()
        log("info", "user signed up", user_id=user["id"])
        return 200, result

    def token(self, query):
        grant = (query.get("grant_type") or [""])[0]
        if grant == "password":
            _data, email, password = self.credentials()
            sql_find = (f"SELECT {USER_COLUMNS} FROM auth.users WHERE email = %s"
                        " AND encrypted_password = extensions.crypt(%s, encrypted_password)")
            params = (email, password)
        elif grant == "refresh_token":
            token = str(self.body().get("refresh_token") or "")
            sql_find = ("UPDATE auth.refresh_tokens SET revoked = true, updated_at = now()"
                        " WHERE token = %s AND NOT revoked RETURNING user_id")
            params = (token,)
        else:
            raise AuthError(400, {"error": "unsupported_grant_type",
                                  "error_description": "unsupported_grant_type"})
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql_find, params)
                row = cur.fetchone()
                if row and grant == "refresh_token":
                    cur.execute(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id::text = %s", row)
                    row = cur.fetchone()
                if row is None:
                    if grant == "refresh_token":
                        raise AuthError(400, {"error": "invalid_grant",
                                              "error_description": "Invalid Refresh Token: Refresh Token Not Found"})
                    raise AuthError(400, {"error": "invalid_grant", "error_description": "Invalid login credentials"})
                if AUTOCONFIRM is False and row[4] is None:
                    raise AuthError(400, {"error": "invalid_grant", "error_description": "Email not confirmed"})
                cur.execute("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s", (row[0],))
                session = issue_session(cur, user_json(row))
        finally:
            conn.close()
        return 200, session

    def user(self, _query):
        claims = bearer_claims(self.headers.get("Authorization"))
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id::text = %s", (claims.get("sub"),))
                row = cur.fetchone()
        finally:
            conn.close()
        if row is None:
            raise api_error(403, "user_not_found", "User from sub claim in JWT does not exist")
        return 200, user_json(row)

    def logout(self, _query):
        claims = bearer_claims(self.headers.get("Authorization"))
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE auth.refresh_tokens SET revoked = true WHERE user_id = %s", (claims.get("sub"),))
        finally:
            conn.close()
        return 204, None


def main():
    missing = [name for name, value in (("GOTRUE_DB_DATABASE_URL", DB_URL), ("GOTRUE_JWT_SECRET", JWT_SECRET))
               if not value]
    if missing:
        log("fatal", "required configuration missing: " + ", ".join(missing))
        return 1
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = True
    # PID 1 in a container: without a handler SIGTERM is ignored and `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log("info", f"GoTrue API started on: {HOST}:{PORT}", version=VERSION)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
