"""The reference release, v1.0.0 and its successors.

* Without Docker (``postgres``): the generated repository (deterministic,
  idempotent), generate-keys.sh, and the release's migrations applied by its
  own migrations-bootstrap.sh to a database bootstrapped like the db image:
  PayCraft's tenancy contracts (provision_app, provision_tenant,
  resolve_tenant, rotate_api_key, tenant_admins and the RLS around them), the
  v1.1.0 upgrade and the broken migration of v1.1.1.
* With Docker (``docker``): the runbook by hand on v1.0.0 — images built,
  repository cloned by ``file://``, ``.env`` from openssl, ``docker compose
  up``, the release's migrations-bootstrap.sh, then the request path
  through Kong on 54321 and the dashboard on 3000. The stack runs inside a
  disposable Docker-in-Docker host (``dind_host``), under the runbook's names;
  54321 and 3000 are reached through the ports that host publishes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jwt
import pytest
from conftest_release import (  # noqa: F401 - fixtures
    CONTAINERS,
    MIGRATIONS_V1_0_0,
    MIGRATIONS_V1_1_0,
    MIGRATIONS_V1_1_4,
    checkout,
    clone_release,
    compose,
    container_state,
    db_bootstrap,
    docker,
    fixture_images,
    fixture_origin,
    fixture_ref_host,
    fixture_supa_db,
    http,
    logs,
    make_release,
    migrations_bootstrap,
    path_without,
    run,
    runbook_stack,
    signup,
    summary,
    wait_http,
    write_env,
)

# --- the generated repository -------------------------------------------


def refs(repo: Path) -> str:
    return run(["git", "for-each-ref", "--format=%(refname) %(objectname)"], cwd=repo).stdout


def test_release_is_deterministic_and_idempotent(origin, tmp_path):
    other = tmp_path / "again.git"
    make_release(other)
    assert refs(other) == refs(origin), "two generations gave different commit ids"
    tags = run(["git", "tag", "-l"], cwd=origin).stdout.split()
    assert tags == ["v1.0.0", "v1.1.0", "v1.1.1-broken-migration", "v1.1.2-broken-function",
                    "v1.1.3-auth-image", "v1.1.4-webhooks", "v1.2.0-upstream-shape"]
    for tag in tags:
        assert run(["git", "cat-file", "-t", tag], cwd=origin).stdout.strip() == "tag", f"{tag} is not annotated"
    head_before = (origin / ".git" / "HEAD").stat().st_mtime_ns
    again = make_release(origin)
    assert "up to date" in again.stdout
    assert (origin / ".git" / "HEAD").stat().st_mtime_ns == head_before
    assert refs(origin) == refs(other)


def test_release_refuses_a_foreign_destination(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me\n")
    proc = run(["bash", str(Path(__file__).resolve().parents[3] / "reference" / "make-release.sh"), str(dest)],
               check=False)
    assert proc.returncode != 0
    assert "was not made by this script" in proc.stderr
    assert (dest / "precious.txt").read_text() == "keep me\n"


def test_v1_0_0_layout(origin, tmp_path):
    clone = clone_release(origin, tmp_path / "paycraft", "v1.0.0")
    selfhost = clone / "infra" / "selfhost"
    for name in ("docker-compose.yaml", ".env.example", "kong.yml", "generate-keys.sh",
                 "migrations-bootstrap.sh", "README.md"):
        assert (selfhost / name).is_file(), name
    for name in ("generate-keys.sh", "migrations-bootstrap.sh"):
        assert os.access(selfhost / name, os.X_OK), f"{name} is not executable"
    migrations = sorted(p.name for p in (clone / "server" / "migrations").glob("*.sql"))
    assert len(migrations) == MIGRATIONS_V1_0_0
    assert {"014_tenants.sql", "015_resolve_tenant.sql", "018_dashboard_auth.sql", "023_tenant_provisioning.sql",
            "040_tenants_rls_select_policy.sql", "048_multi_app_tenant_admins.sql"} <= set(migrations)
    functions = clone / "supabase" / "functions"
    assert (functions / "main" / "index.ts").is_file()
    config = (functions / "config" / "index.ts").read_text()
    # PayCraft's import shapes: std's serve and supabase-js by URL, helpers from ../_shared/
    assert 'from "https://deno.land/std@0.208.0/http/server.ts"' in config
    assert 'from "https://esm.sh/@supabase/supabase-js@2"' in config
    assert 'from "../_shared/respond.ts"' in config and (functions / "_shared" / "respond.ts").is_file()
    assert '"resolve_tenant"' in config
    pkg = json.loads((clone / "dashboard" / "package.json").read_text())
    assert set(pkg["scripts"]) >= {"build", "start"}
    assert not pkg.get("dependencies") and not pkg.get("devDependencies")


def test_generate_keys_signs_with_the_jwt_secret(origin, tmp_path):
    clone = clone_release(origin, tmp_path / "paycraft", "v1.0.0")
    selfhost = clone / "infra" / "selfhost"
    secret = base64.b64encode(os.urandom(32)).decode()
    (selfhost / ".env").write_text(f"PAYCRAFT_DB_PASSWORD=x\nPAYCRAFT_JWT_SECRET={secret}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCRAFT_")}
    out = run(["./generate-keys.sh"], cwd=selfhost, env=env).stdout
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert set(lines) == {"PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY"}
    now = time.time()
    for key, role in (("PAYCRAFT_ANON_KEY", "anon"), ("PAYCRAFT_SERVICE_ROLE_KEY", "service_role")):
        claims = jwt.decode(lines[key], secret, algorithms=["HS256"])
        assert claims["role"] == role
        assert claims["iss"] == "supabase"
        assert abs(claims["iat"] - now) < 300
        assert claims["exp"] - claims["iat"] >= 10 * 365 * 24 * 3600
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(lines[key], secret + "x", algorithms=["HS256"])
    (selfhost / ".env").write_text("PAYCRAFT_DB_PASSWORD=x\n")
    proc = run(["./generate-keys.sh"], cwd=selfhost, env=env, check=False)
    assert proc.returncode != 0 and "PAYCRAFT_JWT_SECRET is empty" in proc.stderr
    assert proc.stdout == ""


# --- migrations on a real PostgreSQL (no Docker) ---------------------------


def connect(params):
    import psycopg2

    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def query(conn, sql, args=None, role=None, claims=None):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            if role:
                cur.execute(f"SET LOCAL ROLE {role}")
            if claims is not None:
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else None
            cur.execute("COMMIT")
            return rows
        except Exception:
            cur.execute("ROLLBACK")
            raise


def new_user(conn, email):
    """What GoTrue does on /signup: insert into auth.users as supabase_auth_admin."""
    return query(conn, "INSERT INTO auth.users (email, encrypted_password, raw_user_meta_data) "
                       "VALUES (%s, extensions.crypt('pw', extensions.gen_salt('bf')), '{}') RETURNING id",
                 (email,), role="supabase_auth_admin")[0][0]


def as_user(uid):
    """A signed-in user's request: PostgREST's role and JWT claims."""
    return {"role": "authenticated", "claims": {"sub": str(uid), "role": "authenticated"}}


def provision_app(conn, uid, name):
    """What the dashboard does after a signup: POST /rest/v1/rpc/provision_app with the user's session."""
    return query(conn, "SELECT public.provision_app(%s)", (name,), **as_user(uid))[0][0]


@pytest.mark.postgres
def test_v1_0_0_migrations_apply_once_with_the_release_script(origin, tmp_path, supa_db):
    clone = clone_release(origin, tmp_path / "paycraft", "v1.0.0")
    selfhost = clone / "infra" / "selfhost"
    first = migrations_bootstrap(selfhost, supa_db)
    assert summary(first.stdout) == (MIGRATIONS_V1_0_0, 0)
    applied = re.findall(r"^apply (\S+)$", first.stdout, re.M)
    assert applied == sorted(p.stem for p in (clone / "server" / "migrations").glob("*.sql"))
    second = migrations_bootstrap(selfhost, supa_db)
    conn = connect(supa_db)
    ledger = [r[0] for r in query(conn, "SELECT version FROM _paycraft_migrations ORDER BY version")]
    # seen once under load (CI rehearsal, 2026-11-30): the second run applied one file again; the
    # message keeps what each run said and the ledger, to tell which next time
    assert summary(second.stdout) == (0, MIGRATIONS_V1_0_0), (
        f"first run:\n{first.stdout}\n{first.stderr}\nsecond run:\n{second.stdout}\n{second.stderr}\nledger: {ledger}")
    assert "apply " not in second.stdout
    assert ledger == applied
    tables = {r[0] for r in query(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                        "AND rowsecurity")}
    assert tables == {"tenants", "tenant_admins", "products", "providers", "paywall"}
    # PayCraft has neither an api_keys table nor a tenancy trigger on auth.users
    assert query(conn, "SELECT to_regclass('public.api_keys')") == [(None,)]
    assert query(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass "
                       "AND NOT tgisinternal") == [(0,)]
    # PayCraft's signatures, exactly
    signatures = dict(query(conn, "SELECT p.proname, pg_get_function_identity_arguments(p.oid) || ' -> ' || "
                                  "pg_get_function_result(p.oid) FROM pg_proc p "
                                  "WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY(%s)",
                            (["resolve_tenant", "provision_tenant", "provision_app", "rotate_api_key",
                              "tenant_admins_list_for_user"],)))
    assert signatures == {
        "resolve_tenant": "p_api_key text -> uuid",
        "provision_tenant": "p_user_id uuid, p_app_name text, p_email text -> jsonb",
        "provision_app": "p_app_name text -> jsonb",
        "rotate_api_key": "p_user_id uuid, p_mode text -> jsonb",
        "tenant_admins_list_for_user": " -> TABLE(tenant_id uuid, role text)",
    }
    # the ledger is not API surface
    with pytest.raises(Exception, match="permission denied"):
        query(conn, "SELECT * FROM _paycraft_migrations", role="authenticated")


@pytest.mark.postgres
def test_provisioning_keys_and_rls(origin, tmp_path, supa_db):
    import psycopg2

    clone = clone_release(origin, tmp_path / "paycraft", "v1.0.0")
    migrations_bootstrap(clone / "infra" / "selfhost", supa_db)
    conn = connect(supa_db)
    alice, bob = new_user(conn, "alice@acme.test"), new_user(conn, "bob@other.test")
    # a signup alone makes no tenant: the dashboard provisions one
    assert query(conn, "SELECT count(*) FROM tenants") == [(0,)]

    app = provision_app(conn, alice, "Alice App")
    tenant = app["tenant_id"]
    assert set(app) == {"tenant_id", "name", "api_key_test", "api_key_live", "webhook_url"}
    assert app["name"] == "Alice App"
    assert re.fullmatch(r"pk_test_[0-9a-f]{48}", app["api_key_test"])
    assert re.fullmatch(r"pk_live_[0-9a-f]{48}", app["api_key_live"])
    assert app["webhook_url"] == f"/functions/v1/stripe-webhook/{tenant}"
    row = query(conn, "SELECT owner_email, status, plan, webhook_secret_test, webhook_secret_live FROM tenants")
    assert row[0][:3] == ("alice@acme.test", "active", "free")
    assert re.fullmatch(r"whsec_test_[0-9a-f]{48}", row[0][3]) and re.fullmatch(r"whsec_live_[0-9a-f]{48}", row[0][4])
    assert query(conn, "SELECT user_id, role FROM tenant_admins WHERE tenant_id = %s", (tenant,)) == [(alice, "owner")]
    with pytest.raises(psycopg2.errors.RaiseException, match="unauthenticated"):
        query(conn, "SELECT public.provision_app('anon app')", role="anon")

    # provision_tenant: the older RPC, idempotent per user
    bobs = query(conn, "SELECT public.provision_tenant(%s, 'Bob App', 'bob@other.test')", (bob,), **as_user(bob))[0][0]
    assert set(bobs) == {"tenant_id", "api_key_test", "api_key_live", "webhook_url"}
    again = query(conn, "SELECT public.provision_tenant(%s, 'Bob App 2', 'bob@other.test')", (bob,),
                  **as_user(bob))[0][0]
    assert again == bobs
    assert query(conn, "SELECT count(*) FROM tenant_admins WHERE user_id = %s", (bob,)) == [(1,)]

    # RLS: each admin reads its own tenant (keys included) and its own tenant_admins rows; anon nothing
    assert query(conn, "SELECT id, api_key_test FROM tenants", **as_user(alice)) == [(tenant, app["api_key_test"])]
    assert query(conn, "SELECT id FROM tenants", **as_user(bob)) == [(bobs["tenant_id"],)]
    assert query(conn, "SELECT id FROM tenants", role="anon") == []
    assert query(conn, "SELECT user_id FROM tenant_admins", **as_user(alice)) == [(alice,)]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        query(conn, "INSERT INTO tenants (name, api_key_test, api_key_live, owner_email) "
                    "VALUES ('x', 'pk_test_00', 'pk_live_00', 'x@x')", **as_user(alice))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        query(conn, "INSERT INTO tenant_admins (tenant_id, user_id, role) VALUES (%s, %s, 'admin')",
              (tenant, bob), **as_user(bob))

    # a second app of the same account: a second tenant
    second = provision_app(conn, alice, "Alice Second")
    assert second["tenant_id"] != tenant
    listed = query(conn, "SELECT tenant_id, role FROM public.tenant_admins_list_for_user()", **as_user(alice))
    assert sorted(listed) == sorted([(tenant, "owner"), (second["tenant_id"], "owner")])

    # resolve_tenant: either key of an active tenant; NULL for no key; an exception otherwise
    for role in ("service_role", "anon"):
        for key in (app["api_key_test"], app["api_key_live"]):
            assert query(conn, "SELECT public.resolve_tenant(%s)", (key,), role=role) == [(tenant,)]
    assert query(conn, "SELECT public.resolve_tenant('')", role="service_role") == [(None,)]
    for bad in ("pk_test_" + "0" * 48, "garbage"):
        with pytest.raises(psycopg2.errors.RaiseException, match="Invalid or inactive API key"):
            query(conn, "SELECT public.resolve_tenant(%s)", (bad,), role="service_role")
    query(conn, "UPDATE tenants SET status = 'suspended' WHERE id = %s", (second["tenant_id"],))
    with pytest.raises(psycopg2.errors.RaiseException, match="Invalid or inactive API key"):
        query(conn, "SELECT public.resolve_tenant(%s)", (second["api_key_test"],), role="service_role")

    # rotate_api_key: a new key of the mode; the old one resolves no more
    rotated = query(conn, "SELECT public.rotate_api_key(%s, 'test')", (bob,), **as_user(bob))[0][0]
    assert rotated["mode"] == "test" and re.fullmatch(r"pk_test_[0-9a-f]{48}", rotated["new_key"])
    assert query(conn, "SELECT public.resolve_tenant(%s)", (rotated["new_key"],),
                 role="service_role") == [(bobs["tenant_id"],)]
    with pytest.raises(psycopg2.errors.RaiseException):
        query(conn, "SELECT public.resolve_tenant(%s)", (bobs["api_key_test"],), role="service_role")
    assert query(conn, "SELECT public.rotate_api_key(%s, 'test')", (str(uuid.uuid4()),),
                 **as_user(bob))[0][0] == {"error": "unauthorized"}
    assert "error" in query(conn, "SELECT public.rotate_api_key(%s, 'prod')", (bob,), **as_user(bob))[0][0]

    # products and providers: the tenant's admins write and read them, nobody else
    query(conn, "INSERT INTO products (tenant_id, sku, name, price_cents) VALUES (%s, 'pro.monthly', 'Pro', 499)",
          (tenant,), **as_user(alice))
    assert query(conn, "SELECT sku FROM products", **as_user(alice)) == [("pro.monthly",)]
    assert query(conn, "SELECT sku FROM products", **as_user(bob)) == []
    assert query(conn, "SELECT sku FROM products", role="anon") == []
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        query(conn, "INSERT INTO products (tenant_id, sku, name, price_cents) VALUES (%s, 'x', 'X', 1)",
              (tenant,), **as_user(bob))
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(conn, "INSERT INTO providers (tenant_id, kind, config) VALUES (%s, 'custom', "
                    "'{\"secret_key\": \"sk_live_x\"}')", (tenant,))


@pytest.mark.postgres
def test_upgrade_to_v1_1_0_backfills_and_v1_1_1_fails_part_way(origin, tmp_path, supa_db):
    import psycopg2

    clone = clone_release(origin, tmp_path / "paycraft", "v1.0.0")
    selfhost = clone / "infra" / "selfhost"
    migrations_bootstrap(selfhost, supa_db)
    conn = connect(supa_db)
    owner = new_user(conn, "owner@eu.test")
    tenant = provision_app(conn, owner, "EU App")["tenant_id"]
    query(conn, "INSERT INTO products (tenant_id, sku, name, price_cents, metadata) VALUES "
                "(%s, 'pro', 'Pro', 999, '{\"currency\": \"eur\"}'), (%s, 'lite', 'Lite', 199, '{}')",
          (tenant, tenant))
    query(conn, "INSERT INTO paywall (tenant_id, config) VALUES (%s, '{\"trial_days\": 7}')", (tenant,))
    created = query(conn, "SELECT created_at FROM tenants WHERE id = %s", (tenant,))[0][0]

    checkout(clone, "v1.1.0")
    up = migrations_bootstrap(selfhost, supa_db)
    assert summary(up.stdout) == (MIGRATIONS_V1_1_0 - MIGRATIONS_V1_0_0, MIGRATIONS_V1_0_0)
    assert query(conn, "SELECT default_currency FROM tenants WHERE id = %s", (tenant,)) == [("EUR",)]
    assert query(conn, "SELECT sku, currency FROM products ORDER BY sku") == [("lite", "EUR"), ("pro", "EUR")]
    assert query(conn, "SELECT features ->> 'trials' FROM paywall WHERE tenant_id = %s", (tenant,)) == [("true",)]
    # 053 (PayCraft's 065): the keys' rotation times, backfilled with the tenant's creation
    assert query(conn, "SELECT api_key_test_rotated_at, api_key_live_rotated_at FROM tenants WHERE id = %s",
                 (tenant,)) == [(created, created)]
    # a tenant created after the upgrade gets the defaults
    later = new_user(conn, "later@us.test")
    later_tenant = provision_app(conn, later, "US App")["tenant_id"]
    assert query(conn, "SELECT default_currency FROM tenants WHERE id = %s", (later_tenant,)) == [("USD",)]

    checkout(clone, "v1.1.1-broken-migration")
    before = query(conn, "SELECT version FROM _paycraft_migrations ORDER BY version")
    broken = migrations_bootstrap(selfhost, supa_db, check=False)
    assert broken.returncode != 0
    assert "apply 060_products_archived_at" in broken.stdout
    assert "apply 061_provider_kinds" in broken.stdout
    assert "✅" not in broken.stdout
    assert "061_provider_kinds" in broken.stderr and "null value" in broken.stderr
    after = [r[0] for r in query(conn, "SELECT version FROM _paycraft_migrations ORDER BY version")]
    assert after == [r[0] for r in before] + ["060_products_archived_at"]
    assert query(conn, "SELECT to_regclass('public.provider_kinds')") == [(None,)], "061 left a table behind"
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(conn, "INSERT INTO providers (tenant_id, kind) VALUES (%s, 'paypal')", (tenant,))
    # retried, it fails the same way: the ledger keeps pointing at 061
    again = migrations_bootstrap(selfhost, supa_db, check=False)
    assert again.returncode != 0 and "apply 061_provider_kinds" in again.stdout
    assert "apply 060" not in again.stdout


@pytest.mark.postgres
def test_v1_1_4_webhook_secrets_rls_and_rpcs(origin, tmp_path, supa_db):
    import psycopg2

    clone = clone_release(origin, tmp_path / "paycraft", "v1.1.4-webhooks")
    up = migrations_bootstrap(clone / "infra" / "selfhost", supa_db)
    assert summary(up.stdout) == (MIGRATIONS_V1_1_4, 0)
    conn = connect(supa_db)
    alice, bob = new_user(conn, "alice@hooks.test"), new_user(conn, "bob@hooks.test")
    as_alice, as_bob = as_user(alice), as_user(bob)
    tenant = provision_app(conn, alice, "Alice Hooks")["tenant_id"]
    bob_tenant = provision_app(conn, bob, "Bob Hooks")["tenant_id"]

    # the owner writes its tenant's secret (what POST /rest/v1/webhook_secrets does) ...
    query(conn, "INSERT INTO webhook_secrets (tenant_id, provider, secret) VALUES (%s, 'stripe', %s)",
          (tenant, "whsec_" + "a" * 32), **as_alice)
    # ... sees that it is set, never its value; another tenant's owner and anon can do neither
    assert query(conn, "SELECT provider, enabled FROM webhook_secrets", **as_alice) == [("stripe", True)]
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        query(conn, "SELECT secret FROM webhook_secrets", **as_alice)
    assert query(conn, "SELECT provider FROM webhook_secrets", **as_bob) == []
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
        query(conn, "INSERT INTO webhook_secrets (tenant_id, provider, secret) VALUES (%s, 'razorpay', %s)",
              (tenant, "b" * 32), **as_bob)
    for sql in ("SELECT provider FROM webhook_secrets", "SELECT * FROM webhook_events"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(conn, sql, role="anon")
    query(conn, "INSERT INTO webhook_secrets (tenant_id, provider, secret) VALUES (%s, 'stripe', %s)",
          (bob_tenant, "whsec_" + "b" * 32), **as_bob)
    query(conn, "UPDATE webhook_secrets SET enabled = false WHERE provider = 'stripe'", **as_bob)

    # the functions' RPCs: service_role only; every enabled secret of a provider, or one tenant's
    rows = query(conn, "SELECT tenant_id, secret FROM webhook_secrets_for('stripe')", role="service_role")
    assert rows == [(tenant, "whsec_" + "a" * 32)]
    assert query(conn, "SELECT count(*) FROM webhook_secrets_for('stripe', %s)", (bob_tenant,),
                 role="service_role") == [(0,)]
    for role in ("anon", "authenticated"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(conn, "SELECT * FROM webhook_secrets_for('stripe')", role=role)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(conn, "SELECT record_webhook_event(%s, 'stripe', 'evt_1')", (tenant,), role=role)
    first = query(conn, "SELECT record_webhook_event(%s, 'stripe', 'evt_1', 'invoice.paid')", (tenant,),
                  role="service_role")[0][0]
    again = query(conn, "SELECT record_webhook_event(%s, 'stripe', 'evt_1', 'invoice.paid')", (tenant,),
                  role="service_role")[0][0]
    assert (first, again) == ({"recorded": True, "duplicate": False}, {"recorded": False, "duplicate": True})
    assert query(conn, "SELECT event_id, event_type FROM webhook_events", **as_alice) == [("evt_1", "invoice.paid")]
    assert query(conn, "SELECT event_id FROM webhook_events", **as_bob) == []


# --- the runbook by hand on Docker (v1.0.0) ---------------------------------


@pytest.fixture(scope="module")
def stack(ref_host, origin, tmp_path_factory):
    """v1.0.0 up by hand on the DinD host, as runbook section 2 does it; torn down with -v."""
    with runbook_stack(ref_host, origin, tmp_path_factory.mktemp("stack"), "v1.0.0") as up:
        yield up


def functions_ready(stack):
    wait_http(f"{stack['api']}/functions/v1/config", ok=lambda r: r.status == 400, timeout=180,
              what="the config function behind Kong (edge runtime up)")


@pytest.mark.docker
def test_postgres_healthy_and_migrations_applied(stack, tmp_path):
    assert summary(stack["bootstrap"].stdout) == (MIGRATIONS_V1_0_0, 0)
    # without a local psql the script falls back to docker exec, and skips everything
    host = stack["host"]
    again = migrations_bootstrap(stack["selfhost"], extra_env={"PATH": path_without("psql", tmp_path / "bin")},
                                 host=host)
    assert summary(again.stdout) == (0, MIGRATIONS_V1_0_0)
    out = docker(host, "exec", CONTAINERS["db"], "pg_isready", "-U", "postgres").stdout
    assert "accepting connections" in out
    volumes = docker(host, "volume", "ls", "-q").stdout.split()
    assert "selfhost_paycraft-db" in volumes
    ledger = docker(host, "exec", CONTAINERS["db"], "psql", "-U", "postgres", "-tAc",
                    "SELECT count(*) FROM _paycraft_migrations").stdout.strip()
    assert ledger == str(MIGRATIONS_V1_0_0)


def provisioned(api: str, anon: str, who: str) -> tuple[dict, dict]:
    """Sign up, then provision an app as PayCraft's dashboard does: (the user's headers, provision_app's answer)."""
    session = signup(api, f"{who}-{uuid.uuid4().hex[:8]}@acme.test", "correct horse battery", anon)
    auth = {"apikey": anon, "Authorization": f"Bearer {session['access_token']}"}
    r = http("POST", f"{api}/rest/v1/rpc/provision_app", {"p_app_name": f"{who} app"}, headers=auth)
    assert r.status == 200, r.text
    return auth, r.json_body


@pytest.mark.docker
def test_signup_provision_app_then_config_through_kong(stack):
    api = stack["api"]
    functions_ready(stack)
    anon = stack["env"]["PAYCRAFT_ANON_KEY"]
    auth, app = provisioned(api, anon, "owner")
    key = app["api_key_test"]
    assert re.fullmatch(r"pk_test_[0-9a-f]{48}", key)
    assert app["webhook_url"] == f"/functions/v1/stripe-webhook/{app['tenant_id']}"
    # the owner reads its tenant under RLS, as the dashboard's settings page does
    tenants = http("GET", f"{api}/rest/v1/tenants?select=id,api_key_test,api_key_live", headers=auth)
    assert tenants.status == 200 and tenants.json_body == [
        {"id": app["tenant_id"], "api_key_test": key, "api_key_live": app["api_key_live"]}]
    admins = http("GET", f"{api}/rest/v1/tenant_admins?select=tenant_id,role", headers=auth)
    assert admins.json_body == [{"tenant_id": app["tenant_id"], "role": "owner"}]

    for k in (key, app["api_key_live"]):
        r = http("GET", f"{api}/functions/v1/config?apiKey={k}")
        assert r.status == 200, r.text
        assert r.headers.get("content-type", "").startswith("application/json")
        assert r.headers.get("cache-control") == "private, max-age=3600"
        cfg = r.json_body
        assert set(cfg) >= {"tenant_id", "plan", "products", "providers", "paywall", "locale", "cache_ttl_seconds"}
        assert cfg["tenant_id"] == app["tenant_id"]
        assert cfg["cache_ttl_seconds"] == 3600 and cfg["plan"] == "free"

    # a product the owner adds through rest shows up in the SuiteConfig
    w = http("POST", f"{api}/rest/v1/products", {"tenant_id": app["tenant_id"], "sku": "pro.monthly",
                                                  "name": "Pro", "price_cents": 499}, headers=auth)
    assert w.status == 201, w.text
    r = http("GET", f"{api}/functions/v1/config?apiKey={key}", headers={"Accept-Language": "en-IN"})
    assert [p["sku"] for p in r.json_body["products"]] == ["pro.monthly"] and r.json_body["locale"] == "IN"

    # a second account sees its own tenant only; anon sees none
    other_auth, other = provisioned(api, anon, "other")
    seen = http("GET", f"{api}/rest/v1/tenants?select=id", headers=other_auth)
    assert seen.json_body == [{"id": other["tenant_id"]}]
    assert http("GET", f"{api}/rest/v1/products?select=sku", headers=other_auth).json_body == []
    anon_seen = http("GET", f"{api}/rest/v1/tenants?select=id", headers={"apikey": anon,
                                                                        "Authorization": f"Bearer {anon}"})
    assert anon_seen.status == 200 and anon_seen.json_body == []


@pytest.mark.docker
def test_config_errors_and_unknown_function(stack):
    api = stack["api"]
    functions_ready(stack)
    r = http("GET", f"{api}/functions/v1/config")
    assert (r.status, r.json_body) == (400, {"error": "missing_apiKey"})
    r = http("POST", f"{api}/functions/v1/config?apiKey=pk_test_x", {})
    assert (r.status, r.text) == (405, "Method not allowed")
    r = http("GET", f"{api}/functions/v1/config?apiKey=pk_test_{'0' * 48}")
    assert (r.status, r.json_body) == (401, {"error": "invalid_apiKey"})
    r = http("GET", f"{api}/functions/v1/config?apiKey=garbage")
    assert (r.status, r.json_body) == (401, {"error": "invalid_apiKey"})
    r = http("GET", f"{api}/functions/v1/nope")
    assert (r.status, r.json_body) == (404, {"message": "Function not found"})
    r = http("GET", f"{api}/")
    assert r.status == 404 and "no Route matched" in r.text


@pytest.mark.docker
def test_service_key_signed_with_another_secret_fails(stack):
    """PayCraft's config function answers 401 invalid_apiKey whatever made resolve_tenant fail: a
    service role key signed with another secret looks like an unknown SDK key from outside. The
    reference says why in the edge runtime's log (PGRST301 from rest)."""
    api = stack["api"]
    functions_ready(stack)
    selfhost = stack["selfhost"]
    anon = stack["env"]["PAYCRAFT_ANON_KEY"]
    _, app = provisioned(api, anon, "keys")
    key = app["api_key_test"]
    now = int(time.time())
    wrong = jwt.encode({"role": "service_role", "iss": "supabase", "iat": now, "exp": now + 3600},
                       "a-different-secret-" + uuid.uuid4().hex, algorithm="HS256")
    env_file = selfhost / ".env"
    original = env_file.read_text()
    try:
        env_file.write_text(re.sub(r"^PAYCRAFT_SERVICE_ROLE_KEY=.*$", f"PAYCRAFT_SERVICE_ROLE_KEY={wrong}",
                                   original, flags=re.M))
        compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--force-recreate", "edge-runtime")
        r = wait_http(f"{api}/functions/v1/config?apiKey={key}", ok=lambda r: r.status not in (502, 503, 504),
                      timeout=120, what="the recreated edge runtime")
        assert (r.status, r.json_body) == (401, {"error": "invalid_apiKey"}), r.text
        assert "config: resolve_tenant failed: PGRST301" in logs(stack["host"], CONTAINERS["edge-runtime"])
        # rest itself says why, as PostgREST does
        direct = http("POST", f"{api}/rest/v1/rpc/resolve_tenant", {"p_api_key": key},
                      headers={"apikey": wrong, "Authorization": f"Bearer {wrong}"})
        assert direct.status == 401
    finally:
        env_file.write_text(original)
        compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--force-recreate", "edge-runtime")
    r = wait_http(f"{api}/functions/v1/config?apiKey={key}", ok=lambda r: r.status == 200, timeout=120,
                  what="the edge runtime with the right key again")
    assert r.json_body["tenant_id"] == app["tenant_id"]


@pytest.mark.docker
def test_dashboard_answers_on_3000(stack):
    dashboard = stack["dashboard"]
    r = wait_http(f"{dashboard}/", ok=lambda r: r.status == 200, timeout=180,
                  what="the dashboard (npm install && npm run build && npm run start -- -p 3000)")
    assert "PayCraft Dashboard" in r.text
    assert stack["env"]["PAYCRAFT_SERVICE_ROLE_KEY"] not in r.text
    health = http("GET", f"{dashboard}/api/health")
    assert health.status == 200
    assert health.json_body["status"] == "ok" and health.json_body["version"] == "1.0.0"
    assert health.json_body["serviceRoleConfigured"] is True
    assert stack["env"]["PAYCRAFT_SERVICE_ROLE_KEY"] not in health.text
    state = container_state(stack["host"], CONTAINERS["dashboard"])
    assert state.get("Running"), logs(stack["host"], CONTAINERS["dashboard"])


# --- the later tags on the same stack (runs last: it moves the checkout) ----


def config_for(api: str, key: str, ok) -> object:
    return wait_http(f"{api}/functions/v1/config?apiKey={key}", ok=ok, timeout=120,
                     what="the config function after the edge runtime was recreated")


@pytest.mark.docker
def test_later_tags_on_the_running_stack(stack):
    api = stack["api"]
    dashboard = stack["dashboard"]
    selfhost = stack["selfhost"]
    clone = selfhost.parent.parent
    anon = stack["env"]["PAYCRAFT_ANON_KEY"]
    _, app = provisioned(api, anon, "upgrade")
    key = app["api_key_test"]

    # runbook section 8 on v1.1.0
    checkout(clone, "v1.1.0")
    boot = migrations_bootstrap(selfhost, host=stack["host"])
    assert summary(boot.stdout) == (MIGRATIONS_V1_1_0 - MIGRATIONS_V1_0_0, MIGRATIONS_V1_0_0)
    compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--build", "dashboard", "edge-runtime")
    # That command leaves unchanged services running: the old dashboard build
    # and the warm config worker keep serving until the containers are recreated.
    assert http("GET", f"{dashboard}/api/health").json_body["version"] == "1.0.0"
    compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--force-recreate", "dashboard", "edge-runtime")
    r = config_for(api, key, lambda r: r.status == 200)
    assert r.headers.get("x-paycraft-config-version") == "2"
    assert r.json_body["currency"] == "USD" and r.json_body["schema_version"] == 2
    assert "paywall" in r.json_body and "features" in r.json_body
    wait_http(f"{dashboard}/api/health", ok=lambda r: r.status == 200 and r.json_body["version"] == "1.1.0",
              timeout=180, what="the v1.1.0 dashboard")

    # v1.1.1: the bootstrap fails part-way; the running stack keeps serving
    checkout(clone, "v1.1.1-broken-migration")
    broken = migrations_bootstrap(selfhost, check=False, host=stack["host"])
    assert broken.returncode != 0 and "061_provider_kinds" in broken.stderr
    assert config_for(api, key, lambda r: r.status == 200).json_body["schema_version"] == 2

    # v1.1.2: the config function answers 200 without `paywall`
    checkout(clone, "v1.1.2-broken-function")
    compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--force-recreate", "edge-runtime")
    r = config_for(api, key, lambda r: r.status == 200)
    assert "paywall" not in r.json_body and "paywall" in r.json_body["ui"]


# --- v1.1.4: the webhook functions on the same stack (runs after the later tags) ---


def post_raw(url: str, raw: bytes, headers=None, method="POST"):
    """A request with exactly these body bytes (the signatures cover the raw body)."""
    req = urllib.request.Request(url, data=raw if method == "POST" else None, method=method,  # noqa: S310
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - local test URLs
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def stripe_header(secret: str, raw: bytes, t: int | None = None, extra: str = "") -> str:
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={t},{extra}v1={sig}"


@pytest.mark.docker
def test_v1_1_4_webhooks_on_the_running_stack(stack):
    api = stack["api"]
    selfhost = stack["selfhost"]
    clone = selfhost.parent.parent
    anon = stack["env"]["PAYCRAFT_ANON_KEY"]

    # the collection's smoke probe on the release before (v1.1.2): the route has no function behind it
    from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke

    probe = {"api_url": api, "probes": ["gateway"], "webhook_functions": ["stripe-webhook", "razorpay-webhook"],
             "timeout": 0, "request_timeout": 10.0}
    before = smoke.run_probes(probe)
    assert before["summary"].startswith("smoke: 1/3 probes passed"), before["message"]
    assert before["probes"]["stripe-webhook"]["cause_id"] == "webhook_not_found"

    checkout(clone, "v1.1.4-webhooks")
    boot = migrations_bootstrap(selfhost, host=stack["host"])
    assert re.findall(r"^apply (\S+)$", boot.stdout, re.M) == ["070_webhook_secrets", "071_webhook_events"]
    assert summary(boot.stdout) == (MIGRATIONS_V1_1_4 - MIGRATIONS_V1_1_0, MIGRATIONS_V1_1_0)
    compose(stack["host"], selfhost, "up", "-d", "--no-deps", "--force-recreate", "edge-runtime")
    stripe_url, razorpay_url = f"{api}/functions/v1/stripe-webhook", f"{api}/functions/v1/razorpay-webhook"
    r = wait_http(stripe_url, ok=lambda r: r.status == 405, timeout=120, what="stripe-webhook (GET -> 405)")
    assert r.json_body["error"] == "method_not_allowed"

    # two tenants, each with its own Stripe secret; the first also with a Razorpay one (set by the owner)
    secrets = {}
    for who in ("first", "second"):
        auth, app = provisioned(api, anon, f"hooks-{who}")
        tenant = app["tenant_id"]
        secrets[who] = {"tenant": tenant, "auth": auth, "stripe": "whsec_" + uuid.uuid4().hex,
                        "razorpay": uuid.uuid4().hex}
        rows = [{"tenant_id": tenant, "provider": "stripe", "secret": secrets[who]["stripe"]}]
        if who == "first":
            rows.append({"tenant_id": tenant, "provider": "razorpay", "secret": secrets[who]["razorpay"]})
        w = http("POST", f"{api}/rest/v1/webhook_secrets", rows, headers=auth)
        assert w.status == 201, w.text
    first = secrets["first"]
    assert http("GET", f"{api}/rest/v1/webhook_secrets?select=secret", headers=first["auth"]).status in (401, 403)
    listed = http("GET", f"{api}/rest/v1/webhook_secrets?select=provider&order=provider", headers=first["auth"])
    assert listed.json_body == [{"provider": "razorpay"}, {"provider": "stripe"}]

    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    raw = json.dumps({"id": event_id, "type": "invoice.paid", "object": "event"}).encode()
    # what the smoke probe sends: an unsigned POST, no apikey -> the function's own 400
    for url in (stripe_url, razorpay_url):
        status, body = post_raw(url, b"{}")
        assert status == 400 and body["error"] == "missing_signature", (url, status, body)
    assert post_raw(stripe_url, raw, {"Stripe-Signature": "garbage"})[1]["error"] == "invalid_signature"
    bad = stripe_header("whsec_" + "0" * 32, raw)
    assert post_raw(stripe_url, raw, {"Stripe-Signature": bad})[1]["error"] == "invalid_signature"
    stale = stripe_header(first["stripe"], raw, t=int(time.time()) - 600)
    status, body = post_raw(stripe_url, raw, {"Stripe-Signature": stale})
    assert (status, body["error"]) == (400, "timestamp_out_of_tolerance")
    # a body changed after signing
    good = stripe_header(first["stripe"], raw)
    assert post_raw(stripe_url, raw + b" ", {"Stripe-Signature": good})[1]["error"] == "invalid_signature"

    status, body = post_raw(stripe_url, raw, {"Stripe-Signature": good})
    assert status == 200, body
    assert body == {"received": True, "provider": "stripe", "event_id": event_id, "type": "invoice.paid",
                    "duplicate": False}
    assert post_raw(stripe_url, raw, {"Stripe-Signature": good})[1]["duplicate"] is True
    # the second tenant's secret, with a stale v1= from a rolled secret first; narrowed by the
    # per-tenant path provision_app hands out (/functions/v1/stripe-webhook/<tenant_id>)
    other = json.dumps({"id": event_id, "type": "charge.succeeded"}).encode()
    rolled = stripe_header(secrets["second"]["stripe"], other, extra="v1=" + "ab" * 32 + ",")
    assert post_raw(stripe_url, other, {"Stripe-Signature": rolled}) == (200, {
        "received": True, "provider": "stripe", "event_id": event_id, "type": "charge.succeeded",
        "duplicate": False})
    wrong_tenant = post_raw(f"{stripe_url}/{secrets['second']['tenant']}", raw, {"Stripe-Signature": good})
    assert wrong_tenant[0] == 400 and wrong_tenant[1]["error"] == "invalid_signature"
    assert post_raw(f"{stripe_url}/not-a-tenant", raw, {"Stripe-Signature": good})[1]["error"] == "invalid_tenant"
    late = json.dumps({"id": event_id + "_2", "type": "invoice.paid"}).encode()
    status, body = post_raw(f"{stripe_url}/{first['tenant']}", late,
                            {"Stripe-Signature": stripe_header(first["stripe"], late)})
    assert status == 200 and body["event_id"] == event_id + "_2", body

    payment = json.dumps({"entity": "event", "event": "payment.captured", "payload": {}}).encode()
    signature = hmac.new(first["razorpay"].encode(), payment, hashlib.sha256).hexdigest()
    status, body = post_raw(razorpay_url, payment, {"X-Razorpay-Signature": "0" * 64})
    assert (status, body["error"]) == (400, "invalid_signature")
    status, body = post_raw(f"{razorpay_url}/{secrets['second']['tenant']}", payment,
                            {"X-Razorpay-Signature": signature})
    assert (status, body["error"]) == (400, "invalid_signature"), "the second tenant has no Razorpay secret"
    status, body = post_raw(f"{razorpay_url}/{first['tenant']}", payment, {"X-Razorpay-Signature": signature,
                                                                         "X-Razorpay-Event-Id": "rzp_evt_1"})
    assert status == 200, body
    assert body["received"] is True and body["event_id"] == "rzp_evt_1" and body["type"] == "payment.captured"

    # each tenant sees its own deliveries
    seen = http("GET", f"{api}/rest/v1/webhook_events?select=provider,event_id,event_type&order=provider,event_id",
                headers=first["auth"]).json_body
    assert seen == [{"provider": "razorpay", "event_id": "rzp_evt_1", "event_type": "payment.captured"},
                    {"provider": "stripe", "event_id": event_id, "event_type": "invoice.paid"},
                    {"provider": "stripe", "event_id": event_id + "_2", "event_type": "invoice.paid"}]
    seen = http("GET", f"{api}/rest/v1/webhook_events?select=event_type", headers=secrets["second"]["auth"])
    assert seen.json_body == [{"event_type": "charge.succeeded"}]
    # the collection's smoke probe passes on the real functions, without an apikey
    after = smoke.run_probes(probe)
    assert after["ok"] and after["summary"].startswith("smoke: 3/3 probes passed"), after["message"]
    assert after["probes"]["razorpay-webhook"]["detail"] == (
        "HTTP 400 missing_signature (the function refuses an unsigned POST)")
    # no secret in the edge runtime's log
    log = logs(stack["host"], CONTAINERS["edge-runtime"])
    for who in secrets.values():
        assert who["stripe"] not in log and who["razorpay"] not in log
