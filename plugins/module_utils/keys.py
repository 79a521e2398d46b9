# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PayCraft secret set (runbook section 3): generate, verify, validate, merge.

Pure Python, standard library only (the target host may lack PyJWT): HS256 JWTs are made
and checked with hmac/hashlib/base64, the same bytes PyJWT and upstream ``generate-keys.sh``
produce (header ``{"alg":"HS256","typ":"JWT"}``, claims ``role``, ``iss``, ``iat``, ``exp``).

``plan()`` is the whole decision: from what the operator gave (inventory / Vault), what the
env file already holds and what the release's ``.env.example`` ships, it computes the values
to write, what was generated, kept or re-signed, a verification status per JWT and every
problem found (all of them, each one line, none containing a secret value).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from datetime import datetime, timezone

# Runbook section 3, in the runbook's order.
DB_PASSWORD = "PAYCRAFT_DB_PASSWORD"  # noqa: S105 - a variable name, not a secret
JWT_SECRET = "PAYCRAFT_JWT_SECRET"  # noqa: S105 - a variable name, not a secret
ANON_KEY = "PAYCRAFT_ANON_KEY"
SERVICE_ROLE_KEY = "PAYCRAFT_SERVICE_ROLE_KEY"
TOKEN_ENCRYPTION_KEY = "PAYCRAFT_TOKEN_ENCRYPTION_KEY"  # noqa: S105 - a variable name, not a secret
OAUTH_STATE_SECRET = "PAYCRAFT_OAUTH_STATE_SECRET"  # noqa: S105 - a variable name, not a secret
STRIPE_SECRET_KEY = "PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
STRIPE_CLIENT_ID = "PAYCRAFT_PLATFORM_STRIPE_CLIENT_ID"
API_URL = "PAYCRAFT_API_URL"
DASHBOARD_URL = "PAYCRAFT_DASHBOARD_URL"

SECTION3 = (
    DB_PASSWORD,
    JWT_SECRET,
    ANON_KEY,
    SERVICE_ROLE_KEY,
    TOKEN_ENCRYPTION_KEY,
    OAUTH_STATE_SECRET,
    STRIPE_SECRET_KEY,
    STRIPE_CLIENT_ID,
    API_URL,
    DASHBOARD_URL,
)
# Non-secret keys a diff may show in clear.
PUBLIC_KEYS = (STRIPE_CLIENT_ID, API_URL, DASHBOARD_URL)
# The one shape of the paycraft_env fact the roles read (paycraft_keys return_public, paycraft_converged
# public_env): the values the runbook calls safe to embed in the dashboard and the SDK. No server secret
# (database password, JWT secret, service role key, ...) is ever part of it: modules that need one read the
# env file on the host (env_file options).
ENV_FACT_KEYS = (ANON_KEY, API_URL, DASHBOARD_URL)
# Values that must never be shown (in diffs, messages, logs): every other section 3 value.
SECRET_KEYS = tuple(k for k in SECTION3 if k not in PUBLIC_KEYS)
DEFAULTS = {API_URL: "http://localhost:54321", DASHBOARD_URL: "http://localhost:3000"}
JWT_ROLES = {ANON_KEY: "anon", SERVICE_ROLE_KEY: "service_role"}
# Runbook section 3: "PAYCRAFT_ANON_KEY is mirrored into NEXT_PUBLIC_SUPABASE_ANON_KEY and
# NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY for the dashboard."
ANON_MIRRORS = ("NEXT_PUBLIC_SUPABASE_ANON_KEY", "NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY")

DEFAULT_ISSUER = "supabase"
DEFAULT_EXPIRY_DAYS = 3650  # ten years, as upstream generate-keys.sh
DAY = 86400

OK, BAD_SIGNATURE, WRONG_ROLE, EXPIRED, MALFORMED = "ok", "bad_signature", "wrong_role", "expired", "malformed"

DB_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._~-]{16,}$")
HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
HEX_MIN64_RE = re.compile(r"^[0-9a-fA-F]{64,}$")
URL_RE = re.compile(
    r"^https?://"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_LOOKING_RE = re.compile(r"(SECRET|PASS|TOKEN|_KEY$|PRIVATE|CREDENTIAL)", re.IGNORECASE)

RUNBOOK_DB_RESET = (
    "docker compose down; docker volume rm {volume}; docker compose up -d db. "
    "This destroys all subscriptions data. Take a backup first."
)
RUNBOOK_401 = (
    'the SDK and dashboard get "401 Unauthorized" (runbook section 7: the JWT secret changed between when '
    "the anon key was generated and now)"
)
# The one way to change the password of an initialised database (playbooks/rotate.yml, roles/rotate).
ROTATE_COMMAND = (
    "ansible-playbook playbooks/rotate.yml -l {host} -e paycraft_rotate_secret=db_password "
    "-e paycraft_rotate_confirm=db_password"
)
LEAK_RULE = "runbook section 3: PAYCRAFT_SERVICE_ROLE_KEY bypasses RLS and It MUST NOT leak into NEXT_PUBLIC_*"


# -- base64url / HS256 ---------------------------------------------------------------------------
def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not re.match(r"^[A-Za-z0-9_-]*$", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hs256(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()


def sign_jwt(claims: dict, secret: str) -> str:
    """An HS256 JWT with ``claims`` signed by ``secret`` (compact JSON, like PyJWT)."""
    header = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{b64url_encode(_hs256(signing_input, secret))}"


def decode_jwt_unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWT; ValueError when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("a JWT has three non-empty dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"undecodable JWT part: {exc.__class__.__name__}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and payload must be JSON objects")
    return header, claims


def make_role_key(
    role: str, secret: str, issuer: str = DEFAULT_ISSUER, expiry_days: int = DEFAULT_EXPIRY_DAYS, now: int | None = None
) -> str:
    iat = int(time.time() if now is None else now)
    return sign_jwt({"role": role, "iss": issuer, "iat": iat, "exp": iat + int(expiry_days) * DAY}, secret)


def verify_role_key(token: str, secret: str, role: str, now: int | None = None) -> tuple[str, dict]:
    """Status of ``token`` as a ``role`` key signed by ``secret``: ok, malformed, bad_signature,
    wrong_role or expired (checked in that order), and the claims when decodable."""
    try:
        header, claims = decode_jwt_unverified(token)
    except ValueError:
        return MALFORMED, {}
    if header.get("alg") != "HS256":
        return BAD_SIGNATURE, claims
    head, payload, sig = token.split(".")
    expected = _hs256(f"{head}.{payload}".encode("ascii"), secret)
    if not hmac.compare_digest(expected, b64url_decode(sig)):
        return BAD_SIGNATURE, claims
    if claims.get("role") != role:
        return WRONG_ROLE, claims
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return MALFORMED, claims
        if exp <= (time.time() if now is None else now):
            return EXPIRED, claims
    return OK, claims


# -- generators ----------------------------------------------------------------------------------
def generate_db_password() -> str:
    """32 URL-safe characters (24 random bytes), safe inside postgres://user:PASSWORD@host URLs."""
    while True:
        value = secrets.token_urlsafe(24)
        if value[0] not in "-_":  # never look like a command-line option
            return value


def generate_jwt_secret() -> str:
    """32 random bytes, base64 (what ``openssl rand -base64 32`` prints: 44 characters)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def generate_hex32() -> str:
    """32 random bytes as 64 hex characters (``openssl rand -hex 32``)."""
    return secrets.token_hex(32)


GENERATORS = {
    DB_PASSWORD: generate_db_password,
    JWT_SECRET: generate_jwt_secret,
    TOKEN_ENCRYPTION_KEY: generate_hex32,
    OAUTH_STATE_SECRET: generate_hex32,
}


# -- validation ----------------------------------------------------------------------------------
def check_value(key: str, value: str) -> str | None:
    """What is wrong with ``value`` for ``key`` (one phrase, never the value), or None."""
    if key == DB_PASSWORD:
        if not DB_PASSWORD_RE.match(value):
            return (
                "must be at least 16 characters of A-Z a-z 0-9 . _ ~ - only (the compose file puts it in "
                "postgres://user:PASSWORD@db URLs, where / + = @ : ? # % break the URL)"
            )
    elif key == JWT_SECRET:
        if len(value) < 32:
            return "must be at least 32 characters (as `openssl rand -base64 32` prints)"
    elif key == TOKEN_ENCRYPTION_KEY:
        if not HEX64_RE.match(value):
            return "must be exactly 64 hex characters (32 bytes for AES-256-GCM, as `openssl rand -hex 32` prints)"
    elif key == OAUTH_STATE_SECRET:
        if not HEX_MIN64_RE.match(value):
            return "must be at least 64 hex characters (as `openssl rand -hex 32` prints)"
    elif key == STRIPE_SECRET_KEY:
        if value and not (value.startswith("sk_live_") or value.startswith("sk_test_")):
            return (
                "must be empty or start with sk_live_ or sk_test_ (your Stripe platform secret key; "
                "leave it blank if you only use Razorpay or Custom)"
            )
    elif key == STRIPE_CLIENT_ID:
        if value and not value.startswith("ca_"):
            return "must be empty or start with ca_ (your Stripe Connect platform OAuth client id)"
    elif key in (API_URL, DASHBOARD_URL):
        if not URL_RE.match(value):
            return (
                f"must be an http:// or https:// URL such as {DEFAULTS[key]} "
                "(a host, an optional port and path; no credentials, query or fragment)"
            )
    return None


# -- the plan ------------------------------------------------------------------------------------
class Plan:
    def __init__(self):
        self.values: dict[str, str] = {}  # every key the module manages, in file order
        self.generated: list[str] = []
        self.resigned: list[str] = []
        self.kept: list[str] = []
        self.given: list[str] = []
        self.defaulted: list[str] = []
        self.from_example: list[str] = []
        self.skipped_example: list[str] = []
        self.verification: dict[str, str] = {}
        self.errors: list[str] = []
        self.warnings: list[str] = []


def _expiry_text(claims: dict) -> str:
    try:
        return datetime.fromtimestamp(int(claims["exp"]), tz=timezone.utc).strftime("%Y-%m-%d")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return "an unknown date"


def describe_status(status: str, key: str, claims: dict) -> str:
    role = JWT_ROLES[key]
    if status == BAD_SIGNATURE:
        return "is not signed by the current PAYCRAFT_JWT_SECRET"
    if status == WRONG_ROLE:
        return f"carries role {claims.get('role')!r} instead of {role!r}"
    if status == EXPIRED:
        return f"expired on {_expiry_text(claims)}"
    return "is not a JWT (header.payload.signature in base64url)"


def plan(
    given: dict | None = None,
    existing: dict | None = None,
    *,
    existing_source: dict | None = None,
    extra_env: dict | None = None,
    example: dict | None = None,
    db_initialized: bool = False,
    volume_name: str = "selfhost_paycraft-db",
    resign: bool = False,
    issuer: str = DEFAULT_ISSUER,
    expiry_days: int = DEFAULT_EXPIRY_DAYS,
    now: int | None = None,
    host: str = "localhost",
    labels: dict | None = None,
    extra_env_label: str = "extra_env",
    example_label: str = ".env.example",
    resign_hint: str = "run again with resign=true",
) -> Plan:
    """Decide every value to write; see the module documentation for the rules."""
    # surrounding whitespace (a Vault file's trailing newline) is trimmed: runbook section 7 names an untrimmed
    # newline as a cause of "401 Unauthorized"
    given = {k: str(v).strip() for k, v in (given or {}).items() if v is not None and str(v).strip() != ""}
    existing = dict(existing or {})
    existing_source = dict(existing_source or {})
    extra_env = dict(extra_env or {})
    example = dict(example or {})
    labels = dict(labels or {})
    now = int(time.time() if now is None else now)
    p = Plan()

    def label_given(key: str) -> str:
        name = labels.get(key)
        return f"{name} ({key})" if name else key

    def label_kept(key: str) -> str:
        return f"{key} in {existing_source.get(key, 'the env file')}"

    def err(text: str) -> None:
        p.errors.append(f"{host}: {text}")

    # 1. section 3 keys that are not JWTs: given > existing > generated/default
    for key in SECTION3:
        if key in JWT_ROLES:
            continue
        if key in given:
            value = str(given[key])
            problem = check_value(key, value)
            if problem:
                err(f"{label_given(key)} {problem}.")
            p.given.append(key)
        elif existing.get(key, "") != "":
            value = existing[key]
            problem = check_value(key, value)
            if problem and key in (DB_PASSWORD,):
                # cannot be changed without a db reset: keep it, but say so
                p.warnings.append(
                    f"{host}: {label_kept(key)} {problem}; it is kept: change it with the data intact with "
                    f"{ROTATE_COMMAND.format(host=host)}."
                )
            elif problem:
                err(f"{label_kept(key)} {problem}; set {labels.get(key, key)} to a valid value.")
            p.kept.append(key)
        elif key in GENERATORS:
            value = GENERATORS[key]()
            p.generated.append(key)
        elif key in DEFAULTS:
            value = DEFAULTS[key]
            p.defaulted.append(key)
        else:  # Stripe credentials: optional, written empty
            value = existing.get(key, "")
            (p.kept if key in existing else p.defaulted).append(key)
        p.values[key] = value

    # 2. the database password guard (runbook section 7, "Postgres container exits during boot")
    reset = RUNBOOK_DB_RESET.format(volume=volume_name)
    if db_initialized:
        old = existing.get(DB_PASSWORD, "")
        if old and p.values[DB_PASSWORD] != old:
            err(
                f"{label_given(DB_PASSWORD)} differs from the one in {existing_source.get(DB_PASSWORD, 'the env file')}"
                f", but the database volume {volume_name} already exists: Postgres keeps the password it was "
                "initialised with, so a new one written here would lock the services out. Next, to change it with "
                f"the data intact: {ROTATE_COMMAND.format(host=host)} (add --check first to see what it would "
                "change; it takes the new value from "
                f"{labels.get(DB_PASSWORD, DB_PASSWORD)}, or generates one). To keep the current password instead: "
                f"leave {labels.get(DB_PASSWORD, DB_PASSWORD)} empty. (The runbook's section 7 fix, recreating the "
                f"volume, destroys the data: {reset})"
            )
        elif not old and DB_PASSWORD not in given:
            err(
                f"the database volume {volume_name} already exists but no PAYCRAFT_DB_PASSWORD is known (none in "
                "the env file, none given), and a new one would not match the one Postgres was initialised with: "
                f"set {labels.get(DB_PASSWORD, DB_PASSWORD)} to that password, or reset the database "
                f"(runbook section 7: {reset})"
            )

    # 3. the JWTs: given > kept (verified) > signed now
    secret = p.values[JWT_SECRET]
    for key, role in JWT_ROLES.items():
        if key in given:
            value = str(given[key])
            status, claims = verify_role_key(value, secret, role, now)
            p.verification[key] = status
            p.given.append(key)
            if status != OK:
                err(
                    f"{label_given(key)} {describe_status(status, key, claims)}, so {RUNBOOK_401}; give the key "
                    f"signed with this secret for role {role}, or leave {labels.get(key, key)} empty to keep or "
                    "generate one."
                )
        elif existing.get(key, "") != "":
            value = existing[key]
            status, claims = verify_role_key(value, secret, role, now)
            p.verification[key] = status
            if status == OK:
                p.kept.append(key)
                exp = claims.get("exp")
                if isinstance(exp, (int, float)) and exp - now < 30 * DAY:
                    p.warnings.append(
                        f"{host}: {label_kept(key)} expires on {_expiry_text(claims)}; re-sign it "
                        f"before then ({resign_hint})."
                    )
            elif resign:
                value = make_role_key(role, secret, issuer, expiry_days, now)
                p.resigned.append(key)
            else:
                err(
                    f"{label_kept(key)} {describe_status(status, key, claims)}, so {RUNBOOK_401}; re-sign the anon "
                    f"and service role keys: {resign_hint}."
                )
        else:
            value = make_role_key(role, secret, issuer, expiry_days, now)
            p.verification[key] = OK
            p.generated.append(key)
        p.values[key] = value

    anon, service = p.values[ANON_KEY], p.values[SERVICE_ROLE_KEY]

    # 4. the mirrors of the anon key
    for key in ANON_MIRRORS:
        if key in extra_env and extra_env[key] != anon:
            err(
                f"{extra_env_label}.{key} must equal PAYCRAFT_ANON_KEY (runbook section 3: the anon key is "
                "mirrored into NEXT_PUBLIC_SUPABASE_ANON_KEY and NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY); remove it, "
                "the mirror is written for you."
            )
        p.values[key] = anon

    # 5. the rest: extra env > existing > .env.example (never its placeholder secrets)
    bad_names = [key for key in extra_env if not ENV_NAME_RE.match(str(key))]
    if bad_names:
        err(
            f"{extra_env_label} has invalid variable names {', '.join(map(str, bad_names))}; expected letters, "
            "digits and _ (not starting with a digit)."
        )
        extra_env = {key: value for key, value in extra_env.items() if key not in bad_names}
    for key in SECTION3:
        if key in extra_env:
            err(
                f"{extra_env_label}.{key} is a runbook section 3 variable: set {labels.get(key, key)} instead, so it "
                "is validated."
            )
    for key, value in example.items():
        if key in SECTION3 or key in ANON_MIRRORS or key in extra_env:
            continue
        if key in existing:
            continue  # the existing file keeps its own value, handled below
        if SECRET_LOOKING_RE.search(key):
            p.skipped_example.append(key)
            p.warnings.append(
                f"{host}: {example_label} has {key}, which looks like a secret; its placeholder is not "
                f"copied: set it in {extra_env_label} if the release needs it."
            )
            continue
        p.values[key] = str(value)
        p.from_example.append(key)
    for key, value in extra_env.items():
        if key in SECTION3 or key in ANON_MIRRORS:
            continue
        p.values[key] = "" if value is None else str(value)

    # 6. the service role key never reaches NEXT_PUBLIC_* (whatever the source)
    candidates = dict(existing)
    candidates.update(p.values)
    for key, value in candidates.items():
        if key.startswith("NEXT_PUBLIC_") and service and service in str(value):
            if key in extra_env:
                where = f"{extra_env_label}.{key}"
            elif key in p.from_example:
                where = f"{key} from {example_label}"
            elif key in existing:
                where = f"{key} in {existing_source.get(key, 'the env file')}"
            else:
                where = key
            err(
                f"{where} holds PAYCRAFT_SERVICE_ROLE_KEY ({LEAK_RULE}); remove it, NEXT_PUBLIC_* values are "
                "shipped to every browser."
            )
    order = [k for k in SECTION3 if k in p.values] + [k for k in ANON_MIRRORS if k in p.values]
    order += [k for k in p.values if k not in order]
    p.values = {k: p.values[k] for k in order}
    return p
