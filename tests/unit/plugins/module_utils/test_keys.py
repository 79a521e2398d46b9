"""module_utils/keys.py: HS256 cross-checked with PyJWT, generators, validation, the plan."""

from __future__ import annotations

import base64
import collections
import re
import time

import jwt
import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as k

NOW = 1_700_000_000
SECRET = "a" * 20 + "-this-is-the-secret-of-the-test"
OTHER = "b" * 20 + "-this-is-another-secret-entirely"
LABELS = {key: key.lower() for key in k.SECTION3}
HOST = "web1"


# -- HS256 against PyJWT -----------------------------------------------------------------------
@pytest.mark.parametrize("role", ["anon", "service_role"])
def test_role_key_verifies_with_pyjwt_and_is_rejected_with_another_secret(role):
    token = k.make_role_key(role, SECRET, issuer="supabase", expiry_days=3650, now=NOW)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"role": role, "iss": "supabase", "iat": NOW, "exp": NOW + 3650 * 86400}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, OTHER, algorithms=["HS256"], options={"verify_exp": False})


def test_signature_bytes_equal_pyjwt():
    claims = {"role": "anon", "iss": "supabase", "iat": NOW, "exp": NOW + 10}
    assert k.sign_jwt(claims, SECRET) == jwt.encode(claims, SECRET, algorithm="HS256")


def test_generated_key_verifies_with_pyjwt_at_current_time():
    token = k.make_role_key("anon", SECRET)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="supabase")
    assert claims["exp"] - claims["iat"] == 3650 * 86400
    assert abs(claims["iat"] - time.time()) < 3600


def test_verify_accepts_pyjwt_tokens_and_classifies_failures():
    good = jwt.encode({"role": "anon", "iss": "x", "iat": NOW, "exp": NOW + 100}, SECRET, algorithm="HS256")
    assert k.verify_role_key(good, SECRET, "anon", now=NOW)[0] == k.OK
    assert k.verify_role_key(good, OTHER, "anon", now=NOW)[0] == k.BAD_SIGNATURE
    assert k.verify_role_key(good, SECRET, "service_role", now=NOW)[0] == k.WRONG_ROLE
    assert k.verify_role_key(good, SECRET, "anon", now=NOW + 100)[0] == k.EXPIRED
    no_exp = jwt.encode({"role": "anon"}, SECRET, algorithm="HS256")
    assert k.verify_role_key(no_exp, SECRET, "anon", now=NOW)[0] == k.OK
    hs512 = jwt.encode({"role": "anon"}, SECRET * 2, algorithm="HS512")
    assert k.verify_role_key(hs512, SECRET, "anon", now=NOW)[0] == k.BAD_SIGNATURE
    unsigned = jwt.encode({"role": "anon"}, None, algorithm="none")
    assert k.verify_role_key(unsigned, SECRET, "anon", now=NOW)[0] == k.MALFORMED  # empty signature part
    head, payload, _sig = good.split(".")
    assert k.verify_role_key(f"{head}.{payload}.{k.b64url_encode(b'x' * 32)}", SECRET, "anon")[0] == k.BAD_SIGNATURE


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.!!!.c2ln", k.b64url_encode(b"[]") + ".e30.c2ln",
     "e30." + k.b64url_encode(b"not json") + ".c2ln"],
)
def test_malformed_tokens(token):
    assert k.verify_role_key(token, SECRET, "anon")[0] == k.MALFORMED


def test_tampered_payload_is_bad_signature():
    token = k.make_role_key("anon", SECRET, now=NOW)
    head, _payload, sig = token.split(".")
    forged = k.b64url_encode(b'{"role":"service_role","iss":"supabase","iat":1,"exp":9999999999}')
    assert k.verify_role_key(f"{head}.{forged}.{sig}", SECRET, "service_role")[0] == k.BAD_SIGNATURE


# -- generators ----------------------------------------------------------------------------------
N = 300


def _distinct(gen):
    values = [gen() for _ in range(N)]
    assert len(set(values)) == N
    return values


def test_db_password_is_24_random_bytes_url_safe():
    for value in _distinct(k.generate_db_password):
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", value)
        assert value[0] not in "-_"
        assert len(base64.urlsafe_b64decode(value)) == 24
        assert k.check_value(k.DB_PASSWORD, value) is None
        assert not set(value) & set("/+=@:?#%")


def test_jwt_secret_is_32_random_bytes_base64():
    for value in _distinct(k.generate_jwt_secret):
        assert len(value) == 44
        assert len(base64.b64decode(value, validate=True)) == 32
        assert k.check_value(k.JWT_SECRET, value) is None


@pytest.mark.parametrize("key", [k.TOKEN_ENCRYPTION_KEY, k.OAUTH_STATE_SECRET])
def test_hex_secrets_are_32_random_bytes(key):
    values = _distinct(k.GENERATORS[key])
    for value in values:
        assert re.fullmatch(r"[0-9a-f]{64}", value)
        assert len(bytes.fromhex(value)) == 32
        assert k.check_value(key, value) is None
    # every hex digit shows up about equally often (19200 digits, 1200 expected each)
    counts = collections.Counter("".join(values))
    assert set(counts) == set("0123456789abcdef")
    assert all(900 < c < 1500 for c in counts.values()), counts


def test_generated_bytes_are_not_biased():
    raw = b"".join(base64.b64decode(k.generate_jwt_secret()) for _ in range(N))  # 9600 bytes
    ones = sum(bin(b).count("1") for b in raw)
    assert 0.48 < ones / (len(raw) * 8) < 0.52


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        (k.DB_PASSWORD, ["abcdefghijklmnop", "A1.b2_c3~d4-e5f6g7"], ["short", "abcdefgh/ijklmnop", "abcdefgh+ijklmnop",
                                                                     "abcdefgh@ijklmnop", "abcdefgh:ijklmnop",
                                                                     "abcdefgh?ijklmnop", "abcdefgh=ijklmnop"]),
        (k.JWT_SECRET, ["x" * 32], ["x" * 31, ""]),
        (k.TOKEN_ENCRYPTION_KEY, ["0" * 64, "aB" * 32], ["0" * 63, "0" * 65, "g" * 64, ""]),
        (k.OAUTH_STATE_SECRET, ["0" * 64, "f" * 128], ["0" * 62, "z" * 64, ""]),
        (k.STRIPE_SECRET_KEY, ["", "sk_live_abc", "sk_test_abc"], ["pk_live_abc", "sk_abc", "rk_test_abc"]),
        (k.STRIPE_CLIENT_ID, ["", "ca_abc"], ["ac_abc", "CA_abc", "client"]),
        (k.API_URL, ["http://localhost:54321", "https://billing.example.com", "https://b.example.com/api",
                     "http://[::1]:54321", "http://10.0.0.1"],
         ["", "localhost:54321", "ftp://x.example.com", "https://", "https://user:pw@x.example.com",
          "https://x.example.com?a=1", "https://x.example.com#f", "https://x y.com", "https://x.example.com/ "]),
    ],
)
def test_check_value(key, good, bad):
    for value in good:
        assert k.check_value(key, value) is None, value
    for value in bad:
        assert k.check_value(key, value), value


# -- the plan ------------------------------------------------------------------------------------
def _plan(**kw):
    kw.setdefault("host", HOST)
    kw.setdefault("labels", LABELS)
    kw.setdefault("now", NOW)
    kw.setdefault("existing_source", {key: "/etc/paycraft/paycraft.env" for key in (kw.get("existing") or {})})
    kw.setdefault("extra_env_label", "paycraft_config_extra_env")
    kw.setdefault("resign_hint", "run with -e paycraft_config_resign_keys=true")
    return k.plan(**kw)


def test_fresh_plan_generates_everything_valid():
    p = _plan()
    assert p.errors == []
    assert sorted(p.generated) == sorted([k.DB_PASSWORD, k.JWT_SECRET, k.ANON_KEY, k.SERVICE_ROLE_KEY,
                                          k.TOKEN_ENCRYPTION_KEY, k.OAUTH_STATE_SECRET])
    v = p.values
    assert list(v)[:10] == list(k.SECTION3)
    assert v[k.API_URL] == "http://localhost:54321" and v[k.DASHBOARD_URL] == "http://localhost:3000"
    assert v[k.STRIPE_SECRET_KEY] == "" and v[k.STRIPE_CLIENT_ID] == ""
    for key, role in k.JWT_ROLES.items():
        claims = jwt.decode(v[key], v[k.JWT_SECRET], algorithms=["HS256"], options={"verify_exp": False})
        assert claims == {"role": role, "iss": "supabase", "iat": NOW, "exp": NOW + 3650 * 86400}
    assert v["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == v["NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY"] == v[k.ANON_KEY]
    assert p.verification == {k.ANON_KEY: "ok", k.SERVICE_ROLE_KEY: "ok"}


def test_second_plan_keeps_everything_iat_exp_unchanged():
    first = _plan().values
    second = _plan(existing=dict(first), now=NOW + 86400)
    assert second.errors == [] and second.generated == [] and second.resigned == []
    assert second.values == first
    assert set(second.kept) >= {k.DB_PASSWORD, k.JWT_SECRET, k.ANON_KEY, k.SERVICE_ROLE_KEY}


def test_given_values_win_over_existing_and_empty_given_keeps():
    first = _plan().values
    given = {k.API_URL: "https://billing.example.com", k.STRIPE_SECRET_KEY: "sk_test_123", k.DB_PASSWORD: "",
             k.JWT_SECRET: ""}
    p = _plan(given=given, existing=dict(first))
    assert p.errors == []
    assert p.values[k.API_URL] == "https://billing.example.com"
    assert p.values[k.STRIPE_SECRET_KEY] == "sk_test_123"
    assert p.values[k.DB_PASSWORD] == first[k.DB_PASSWORD]
    assert p.values[k.JWT_SECRET] == first[k.JWT_SECRET]
    assert set(p.given) == {k.API_URL, k.STRIPE_SECRET_KEY}


def test_given_jwt_secret_with_kept_keys_needs_resign():
    first = _plan().values
    new_secret = "n" * 40
    p = _plan(given={k.JWT_SECRET: new_secret}, existing=dict(first))
    assert p.verification == {k.ANON_KEY: "bad_signature", k.SERVICE_ROLE_KEY: "bad_signature"}
    assert p.errors == [
        f"{HOST}: {key} in /etc/paycraft/paycraft.env is not signed by the current PAYCRAFT_JWT_SECRET, so the SDK "
        'and dashboard get "401 Unauthorized" (runbook section 7: the JWT secret changed between when the anon key '
        "was generated and now); re-sign the anon and service role keys: run with -e "
        "paycraft_config_resign_keys=true."
        for key in (k.ANON_KEY, k.SERVICE_ROLE_KEY)
    ]
    r = _plan(given={k.JWT_SECRET: new_secret}, existing=dict(first), resign=True, now=NOW + 5)
    assert r.errors == [] and r.resigned == [k.ANON_KEY, k.SERVICE_ROLE_KEY]
    for key, role in k.JWT_ROLES.items():
        claims = jwt.decode(r.values[key], new_secret, algorithms=["HS256"], options={"verify_exp": False})
        assert claims["role"] == role and claims["iat"] == NOW + 5
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(r.values[key], first[k.JWT_SECRET], algorithms=["HS256"])
    assert r.values["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == r.values[k.ANON_KEY]


def test_kept_key_statuses_wrong_role_expired_malformed():
    first = _plan().values
    existing = dict(first)
    existing[k.ANON_KEY] = first[k.SERVICE_ROLE_KEY]  # swapped
    existing[k.SERVICE_ROLE_KEY] = k.sign_jwt({"role": "service_role", "exp": NOW - 86400}, first[k.JWT_SECRET])
    p = _plan(existing=existing)
    assert p.verification == {k.ANON_KEY: "wrong_role", k.SERVICE_ROLE_KEY: "expired"}
    assert p.errors[0].startswith(f"{HOST}: PAYCRAFT_ANON_KEY in /etc/paycraft/paycraft.env carries role "
                                  "'service_role' instead of 'anon', so the SDK and dashboard get \"401 Unauthorized\"")
    expired_on = time.strftime("%Y-%m-%d", time.gmtime(NOW - 86400))
    assert p.errors[1].startswith(f"{HOST}: PAYCRAFT_SERVICE_ROLE_KEY in /etc/paycraft/paycraft.env expired on "
                                  f"{expired_on}, so")
    existing[k.ANON_KEY] = "not-a-jwt"
    p = _plan(existing=existing, resign=True)
    assert p.verification[k.ANON_KEY] == "malformed" and p.errors == []
    assert k.verify_role_key(p.values[k.ANON_KEY], first[k.JWT_SECRET], "anon", NOW)[0] == "ok"


def test_key_close_to_expiry_warns():
    first = _plan(expiry_days=10).values
    p = _plan(existing=dict(first))
    assert p.errors == []
    assert len(p.warnings) == 2 and "expires on" in p.warnings[0]


def test_given_key_that_does_not_verify_fails_even_with_resign():
    first = _plan().values
    bad = k.make_role_key("anon", OTHER, now=NOW)
    p = _plan(given={k.ANON_KEY: bad}, existing=dict(first), resign=True)
    assert p.errors == [
        f"{HOST}: paycraft_anon_key (PAYCRAFT_ANON_KEY) is not signed by the current PAYCRAFT_JWT_SECRET, so the SDK "
        'and dashboard get "401 Unauthorized" (runbook section 7: the JWT secret changed between when the anon key '
        "was generated and now); give the key signed with this secret for role anon, or leave paycraft_anon_key "
        "empty to keep or generate one."
    ]


def test_db_password_guard():
    first = _plan().values
    p = _plan(given={k.DB_PASSWORD: "a-new-password-1234"}, existing=dict(first), db_initialized=True,
              volume_name="selfhost_paycraft-db")
    assert p.errors == [
        f"{HOST}: paycraft_db_password (PAYCRAFT_DB_PASSWORD) differs from the one in /etc/paycraft/paycraft.env, but "
        "the database volume selfhost_paycraft-db already exists: Postgres keeps the password it was initialised "
        "with, so a new one written here would lock the services out. Next, to change it with the data intact: "
        f"ansible-playbook playbooks/rotate.yml -l {HOST} -e paycraft_rotate_secret=db_password "
        "-e paycraft_rotate_confirm=db_password (add --check first to see what it would change; it takes the new "
        "value from paycraft_db_password, or generates one). To keep the current password instead: leave "
        "paycraft_db_password empty. (The runbook's section 7 fix, recreating the volume, destroys the data: "
        "docker compose down; docker volume rm selfhost_paycraft-db; docker compose up -d db. This destroys "
        "all subscriptions data. Take a backup first.)"
    ]
    # same password given again: fine; not initialised: the change is allowed
    assert _plan(given={k.DB_PASSWORD: first[k.DB_PASSWORD]}, existing=dict(first), db_initialized=True).errors == []
    changed = _plan(given={k.DB_PASSWORD: "a-new-password-1234"}, existing=dict(first), db_initialized=False)
    assert changed.errors == [] and changed.values[k.DB_PASSWORD] == "a-new-password-1234"
    # volume exists but no password is known anywhere: generating one would lock Postgres out
    lost = _plan(db_initialized=True, volume_name="selfhost_paycraft-db")
    assert lost.errors == [
        f"{HOST}: the database volume selfhost_paycraft-db already exists but no PAYCRAFT_DB_PASSWORD is known (none "
        "in the env file, none given), and a new one would not match the one Postgres was initialised with: set "
        "paycraft_db_password to that password, or reset the database (runbook section 7: docker compose down; "
        "docker volume rm selfhost_paycraft-db; docker compose up -d db. This destroys all subscriptions data. Take "
        "a backup first.)"
    ]
    assert _plan(db_initialized=True, given={k.DB_PASSWORD: "the-old-password-99"}).errors == []


def test_kept_unsafe_db_password_is_a_warning_not_an_error():
    first = _plan().values
    existing = dict(first, **{k.DB_PASSWORD: "abc/def+ghi=jklmnopq"})
    p = _plan(existing=existing)
    assert p.errors == []
    assert p.values[k.DB_PASSWORD] == "abc/def+ghi=jklmnopq"
    assert p.warnings[0].startswith(f"{HOST}: PAYCRAFT_DB_PASSWORD in /etc/paycraft/paycraft.env must be at least 16")


def test_every_bad_given_value_is_reported_in_one_go():
    given = {
        k.DB_PASSWORD: "pa:ss@word",
        k.JWT_SECRET: "short",
        k.TOKEN_ENCRYPTION_KEY: "xyz",
        k.OAUTH_STATE_SECRET: "nothex",
        k.STRIPE_SECRET_KEY: "pk_live_123",
        k.STRIPE_CLIENT_ID: "cl1ent_xyz",
        k.API_URL: "localhost:54321",
        k.DASHBOARD_URL: "https://user:pw@dash.example.com",
    }
    p = _plan(given=given)
    assert p.errors == [
        f"{HOST}: paycraft_db_password (PAYCRAFT_DB_PASSWORD) must be at least 16 characters of A-Z a-z 0-9 . _ ~ - "
        "only (the compose file puts it in postgres://user:PASSWORD@db URLs, where / + = @ : ? # % break the URL).",
        f"{HOST}: paycraft_jwt_secret (PAYCRAFT_JWT_SECRET) must be at least 32 characters (as `openssl rand -base64 "
        "32` prints).",
        f"{HOST}: paycraft_token_encryption_key (PAYCRAFT_TOKEN_ENCRYPTION_KEY) must be exactly 64 hex characters "
        "(32 bytes for AES-256-GCM, as `openssl rand -hex 32` prints).",
        f"{HOST}: paycraft_oauth_state_secret (PAYCRAFT_OAUTH_STATE_SECRET) must be at least 64 hex characters (as "
        "`openssl rand -hex 32` prints).",
        f"{HOST}: paycraft_platform_stripe_secret_key (PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY) must be empty or start "
        "with sk_live_ or sk_test_ (your Stripe platform secret key; leave it blank if you only use Razorpay or "
        "Custom).",
        f"{HOST}: paycraft_platform_stripe_client_id (PAYCRAFT_PLATFORM_STRIPE_CLIENT_ID) must be empty or start with "
        "ca_ (your Stripe Connect platform OAuth client id).",
        f"{HOST}: paycraft_api_url (PAYCRAFT_API_URL) must be an http:// or https:// URL such as "
        "http://localhost:54321 (a host, an optional port and path; no credentials, query or fragment).",
        f"{HOST}: paycraft_dashboard_url (PAYCRAFT_DASHBOARD_URL) must be an http:// or https:// URL such as "
        "http://localhost:3000 (a host, an optional port and path; no credentials, query or fragment).",
    ]
    joined = "\n".join(p.errors)
    for key in k.SECRET_KEYS:
        if key in given:
            assert given[key] not in joined


def test_service_role_key_never_reaches_next_public():
    first = _plan().values
    leak = {"NEXT_PUBLIC_SERVICE_KEY": first[k.SERVICE_ROLE_KEY], "NEXT_PUBLIC_SITE": "https://x.example.com"}
    p = _plan(existing=dict(first), extra_env=leak)
    assert p.errors == [
        f"{HOST}: paycraft_config_extra_env.NEXT_PUBLIC_SERVICE_KEY holds PAYCRAFT_SERVICE_ROLE_KEY (runbook section "
        "3: PAYCRAFT_SERVICE_ROLE_KEY bypasses RLS and It MUST NOT leak into NEXT_PUBLIC_*); remove it, NEXT_PUBLIC_* "
        "values are shipped to every browser."
    ]
    # also when it sits in the existing file, or arrives from .env.example, or is embedded in a longer value
    from_file = _plan(existing=dict(first, NEXT_PUBLIC_X="Bearer " + first[k.SERVICE_ROLE_KEY]))
    assert from_file.errors == [
        f"{HOST}: NEXT_PUBLIC_X in /etc/paycraft/paycraft.env holds PAYCRAFT_SERVICE_ROLE_KEY (runbook section 3: "
        "PAYCRAFT_SERVICE_ROLE_KEY bypasses RLS and It MUST NOT leak into NEXT_PUBLIC_*); remove it, NEXT_PUBLIC_* "
        "values are shipped to every browser."
    ]
    given_key = k.make_role_key("service_role", "s" * 40, now=NOW)
    ex = _plan(given={k.JWT_SECRET: "s" * 40, k.SERVICE_ROLE_KEY: given_key},
               example={"NEXT_PUBLIC_Y": given_key}, example_label="/x/.env.example")
    assert ex.errors == [
        f"{HOST}: NEXT_PUBLIC_Y from /x/.env.example holds PAYCRAFT_SERVICE_ROLE_KEY (runbook section 3: "
        "PAYCRAFT_SERVICE_ROLE_KEY bypasses RLS and It MUST NOT leak into NEXT_PUBLIC_*); remove it, NEXT_PUBLIC_* "
        "values are shipped to every browser."
    ]


def test_mirror_conflict_and_section3_in_extra_env():
    p = _plan(extra_env={"NEXT_PUBLIC_SUPABASE_ANON_KEY": "something-else", "PAYCRAFT_JWT_SECRET": "x" * 40})
    assert p.errors == [
        f"{HOST}: paycraft_config_extra_env.NEXT_PUBLIC_SUPABASE_ANON_KEY must equal PAYCRAFT_ANON_KEY (runbook "
        "section 3: the anon key is mirrored into NEXT_PUBLIC_SUPABASE_ANON_KEY and "
        "NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY); remove it, the mirror is written for you.",
        f"{HOST}: paycraft_config_extra_env.PAYCRAFT_JWT_SECRET is a runbook section 3 variable: set "
        "paycraft_jwt_secret instead, so it is validated.",
    ]


def test_example_keys_carried_but_never_placeholder_secrets():
    example = {
        "PAYCRAFT_DB_PASSWORD": "changeme",
        "PAYCRAFT_JWT_SECRET": "super-secret-jwt-token-with-at-least-32-characters",
        "NEXT_PUBLIC_SUPABASE_ANON_KEY": "placeholder",
        "GOTRUE_DISABLE_SIGNUP": "false",
        "SMTP_PASSWORD": "changeme",
        "STUDIO_PORT": "3001",
        "KEPT": "from-example",
    }
    first = _plan().values
    p = _plan(example=example, existing=dict(first, KEPT="operator"), extra_env={"STUDIO_PORT": "4000"})
    assert p.errors == []
    assert p.from_example == ["GOTRUE_DISABLE_SIGNUP"]
    assert p.skipped_example == ["SMTP_PASSWORD"]
    assert p.values["STUDIO_PORT"] == "4000"
    assert "KEPT" not in p.values  # the file's own value stays
    assert p.values[k.DB_PASSWORD] == first[k.DB_PASSWORD]
    assert p.values["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == first[k.ANON_KEY]
    assert "changeme" not in p.values.values()


def test_invalid_extra_env_names():
    p = _plan(extra_env={"1BAD": "x", "BAD-NAME": "y", "GOOD_NAME": "z"})
    assert p.errors == [
        f"{HOST}: paycraft_config_extra_env has invalid variable names 1BAD, BAD-NAME; expected letters, digits and _ "
        "(not starting with a digit)."
    ]
    assert p.values["GOOD_NAME"] == "z" and "1BAD" not in p.values


def test_given_values_are_trimmed_like_the_runbook_asks():
    secret = "t" * 40
    anon = k.make_role_key("anon", secret, now=NOW)
    p = _plan(given={k.JWT_SECRET: secret + "\n", k.ANON_KEY: " " + anon + "\n", k.DB_PASSWORD: "\n"})
    assert p.errors == []
    assert p.values[k.JWT_SECRET] == secret and p.values[k.ANON_KEY] == anon
    assert k.DB_PASSWORD in p.generated  # whitespace only counts as empty
