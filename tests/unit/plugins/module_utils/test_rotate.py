"""module_utils/rotate.py: who reads what in the compose files, the verifiers, and rotations of the database
password and the JWT secret against a real PostgreSQL 15 (the ``pg`` fixture), data intact, reverted on failure,
no secret in any result."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import jwt
import psycopg2
import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import backup
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as ef
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as k
from ansible_collections.paycraft.selfhost.plugins.module_utils import rotate as r

REPO = Path(__file__).resolve().parents[4]
REFERENCE_COMPOSE = REPO / "reference" / "release" / "base" / "infra" / "selfhost" / "docker-compose.yaml"
OVERRIDE_TEMPLATE = REPO / "roles" / "stack" / "templates" / "compose.override.yml.j2"


# --- the compose files -------------------------------------------------------------------------------------

def reference_compose() -> dict:
    return yaml.safe_load(REFERENCE_COMPOSE.read_text())


def test_the_reference_release_names_the_roles_its_services_connect_as():
    roles, unknown = r.roles_connecting([reference_compose()])
    # db: POSTGRES_PASSWORD (POSTGRES_USER unset: postgres); the URLs of auth, rest and edge-runtime
    assert roles == {"postgres": ["db", "edge-runtime"], "supabase_auth_admin": ["auth"], "authenticator": ["rest"]}
    assert unknown == []


def test_the_services_that_read_each_secret_dependencies_first():
    compose = [reference_compose()]
    assert list(r.services_reading(compose, [k.DB_PASSWORD])) == ["db", "auth", "rest", "edge-runtime"]
    jwt_vars = r.jwt_env_changes({})
    assert list(r.services_reading(compose, jwt_vars)) == ["db", "auth", "rest", "kong", "edge-runtime", "dashboard"]
    assert r.services_reading(compose, [k.ANON_KEY])["dashboard"] == [k.ANON_KEY]


def test_a_service_added_by_another_file_counts_and_order_follows_depends_on():
    # the stack role's override adds `rest` (gap filled) when the release has none
    release = reference_compose()
    del release["services"]["rest"]
    override = {"services": {"rest": {"depends_on": {"db": {"condition": "service_healthy"}}, "environment": {
        "PGRST_DB_URI": "postgres://authenticator:${PAYCRAFT_DB_PASSWORD}@db:5432/postgres"}}}}
    assert r.roles_connecting([release])[0].get("authenticator") is None
    assert r.roles_connecting([release, override])[0]["authenticator"] == ["rest"]
    # kong depends on rest (the release's own depends_on): rest comes before kong's dependants
    assert r.service_order([release, override]) == ["db", "auth", "rest", "kong", "edge-runtime", "dashboard"]
    assert list(r.services_reading([release, override], [k.DB_PASSWORD])) == ["db", "auth", "rest", "edge-runtime"]
    assert "rest" in OVERRIDE_TEMPLATE.read_text()  # the template the override comes from still adds it


def test_references_follow_compose_syntax():
    assert r.references("a ${A} ${B:-x} ${C:?required} $D $$E $${F}") == {"A", "B", "C", "D"}


def test_roles_that_cannot_be_told_are_reported_not_guessed():
    compose = {"services": {
        "worker": {"environment": ["DB_PASS=${PAYCRAFT_DB_PASSWORD}", "PGUSER=billing", "X=1"]},
        "psql": {"environment": {"PGPASSWORD": "${PAYCRAFT_DB_PASSWORD}", "PGUSER": "reporter"}},
        "cron": {"command": ["sh", "-c", "PGPASSWORD=$PAYCRAFT_DB_PASSWORD psql"]},
        "enc": {"environment": {"URL": "postgres://us%40er:${PAYCRAFT_DB_PASSWORD}@db/x"}},
    }}
    roles, unknown = r.roles_connecting([compose])
    assert roles == {"reporter": ["psql"], "us@er": ["enc"]}
    assert unknown == ["worker: DB_PASS", "cron: (outside environment)"]


# --- verifiers ---------------------------------------------------------------------------------------------

def test_scram_verifier_is_what_postgresql_stores(pg):
    role, password = f"t_rot_v_{uuid.uuid4().hex[:8]}", "Abc.def_ghi~jkl-mnop1234"
    conn = psycopg2.connect(**pg.params())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', (password,))
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            stored = cur.fetchone()[0]
        assert stored.startswith("SCRAM-SHA-256$4096:")
        assert r.verifier_matches(stored, password, role)
        assert not r.verifier_matches(stored, password + "x", role)
        assert r.verifier_matches(r.md5_verifier(password, role), password, role)
        assert not r.verifier_matches(None, password, role)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.close()


# --- a PayCraft-shaped cluster: roles, data, env file, compose -----------------------------------------------

class Site:
    """Roles named as a release would connect (admin, auth, rest) plus one sharing the password and one not."""

    def __init__(self, pg, db_params: dict, tmp_path: Path):
        tag = uuid.uuid4().hex[:8]
        self.admin, self.auth, self.rest = f"t_rot_admin_{tag}", f"t_rot_auth_{tag}", f"t_rot_rest_{tag}"
        self.sharer, self.other, self.nologin = f"t_rot_share_{tag}", f"t_rot_other_{tag}", f"t_rot_nolog_{tag}"
        self.old = k.generate_db_password()
        self.other_password = k.generate_db_password()
        self.pg, self.dbname = pg, db_params["dbname"]
        self.tmp = tmp_path
        with self.superuser() as conn, conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{self.admin}" LOGIN SUPERUSER PASSWORD %s', (self.old,))
            for role in (self.auth, self.rest, self.sharer):
                cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', (self.old,))
            cur.execute(f'CREATE ROLE "{self.other}" LOGIN PASSWORD %s', (self.other_password,))
            cur.execute(f'CREATE ROLE "{self.nologin}" NOLOGIN PASSWORD %s', (self.old,))
        with self.superuser(self.dbname) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE tenants (id serial PRIMARY KEY, name text NOT NULL)")
            cur.execute("INSERT INTO tenants (name) SELECT 'tenant-' || g FROM generate_series(1, 500) g")
            cur.execute("CREATE SCHEMA billing")
            cur.execute("CREATE TABLE billing.products (id bigint PRIMARY KEY, tenant int, price numeric)")
            cur.execute("INSERT INTO billing.products SELECT g, g % 500 + 1, g * 1.5 FROM generate_series(1, 2000) g")
        self.secret = k.generate_jwt_secret()
        self.anon = k.make_role_key("anon", self.secret)
        self.service = k.make_role_key("service_role", self.secret)
        self.env_file = tmp_path / "etc" / "paycraft.env"
        self.env_file.parent.mkdir(mode=0o700)
        env = ef.EnvFile()
        env.add_comment("test env file")
        for key, value in ((k.DB_PASSWORD, self.old), (k.JWT_SECRET, self.secret), (k.ANON_KEY, self.anon),
                           (k.SERVICE_ROLE_KEY, self.service), ("NEXT_PUBLIC_SUPABASE_ANON_KEY", self.anon),
                           ("NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY", self.anon), (k.API_URL, "http://127.0.0.1:1"),
                           ("GOTRUE_DISABLE_SIGNUP", "false")):
            env.set(key, value)
        ef.write_atomic(str(self.env_file), env.render(), mode=0o600)
        self.compose = [{"services": {
            "db": {"environment": {"POSTGRES_USER": self.admin, "POSTGRES_PASSWORD": "${PAYCRAFT_DB_PASSWORD:?x}",
                                   "JWT_SECRET": "${PAYCRAFT_JWT_SECRET}"}},
            "auth": {"depends_on": {"db": {"condition": "service_healthy"}}, "environment": {
                "GOTRUE_DB_DATABASE_URL": f"postgres://{self.auth}:${{PAYCRAFT_DB_PASSWORD}}@db:5432/postgres",
                "GOTRUE_JWT_SECRET": "${PAYCRAFT_JWT_SECRET}"}},
            "rest": {"depends_on": ["db"], "environment": [
                f"PGRST_DB_URI=postgres://{self.rest}:${{PAYCRAFT_DB_PASSWORD}}@db:5432/postgres",
                "PGRST_JWT_SECRET=${PAYCRAFT_JWT_SECRET}"]},
            "kong": {"depends_on": ["auth", "rest"], "environment": {
                "SUPABASE_ANON_KEY": "${PAYCRAFT_ANON_KEY}", "SUPABASE_SERVICE_KEY": "${PAYCRAFT_SERVICE_ROLE_KEY}"}},
            "edge-runtime": {"depends_on": ["kong"], "environment": {
                "SUPABASE_DB_URL": f"postgresql://{self.admin}:${{PAYCRAFT_DB_PASSWORD}}@db:5432/postgres",
                "JWT_SECRET": "${PAYCRAFT_JWT_SECRET}", "SUPABASE_ANON_KEY": "${PAYCRAFT_ANON_KEY}"}},
            "dashboard": {"depends_on": ["kong"], "environment": {
                "NEXT_PUBLIC_SUPABASE_ANON_KEY": "${PAYCRAFT_ANON_KEY}",
                "SUPABASE_SERVICE_ROLE_KEY": "${PAYCRAFT_SERVICE_ROLE_KEY}"}},
        }}]
        # the admin login: its password comes from the env file (empty here), as the module does
        self.params = {"host": pg.host, "port": pg.port, "user": self.admin, "password": "", "dbname": self.dbname}

    def superuser(self, dbname: str | None = None):
        conn = psycopg2.connect(**self.pg.params(dbname))
        conn.autocommit = True
        return conn

    def login(self, role: str, password: str) -> bool:
        try:
            psycopg2.connect(host=self.pg.host, port=self.pg.port, user=role, password=password,
                             dbname=self.dbname, connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            assert "password authentication failed" in str(exc), exc
            return False
        return True

    def checksums(self) -> dict:
        out = {}
        with self.superuser(self.dbname) as conn, conn.cursor() as cur:
            for table in ('"public"."tenants"', '"billing"."products"'):
                cur.execute(backup.checksum_sql(table))
                out[table] = cur.fetchone()[0]
        return out

    def env(self) -> dict:
        return ef.EnvFile.read(str(self.env_file)).as_dict()

    def state_file(self) -> Path:
        return self.env_file.parent / "rotate.json"

    def secrets(self) -> list:
        return [self.old, self.other_password, self.secret, self.anon, self.service]

    def drop(self) -> None:
        with self.superuser() as conn, conn.cursor() as cur:
            for role in (self.auth, self.rest, self.sharer, self.other, self.nologin, self.admin):
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def site(pg, pg_db, tmp_path):
    s = Site(pg, pg_db, tmp_path)
    try:
        yield s
    finally:
        s.drop()


def assert_no_secret(site: Site, *texts, extra=()):
    blob = "\n".join(t if isinstance(t, str) else json.dumps(t, default=str) for t in texts)
    for value in [*site.secrets(), *extra]:
        assert value not in blob


pytestmark = pytest.mark.postgres


# --- the database password -----------------------------------------------------------------------------------

def test_check_mode_lists_names_only_and_changes_nothing(site, capsys):
    before = site.env_file.read_bytes()
    out = r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, check=True, host="web1")
    plan = out.as_dict()
    assert out.changed is True and out.reverted is False
    assert plan["plan"]["roles"] == [site.admin, site.auth, site.rest, site.nologin, site.sharer]
    assert plan["plan"]["roles_sharing_password"] == [site.nologin, site.sharer]  # not named by the compose files
    assert site.other not in plan["plan"]["roles"]
    assert plan["plan"]["env_keys"] == [k.DB_PASSWORD]
    assert plan["plan"]["services"] == ["db", "auth", "rest", "edge-runtime"]
    assert any("NOLOGIN" in w for w in plan["plan"]["warnings"])
    assert out.messages[0] == "check mode: secret: PAYCRAFT_DB_PASSWORD"
    assert site.env_file.read_bytes() == before and not site.state_file().exists()
    assert site.login(site.auth, site.old)
    assert_no_secret(site, plan, out.messages, capsys.readouterr().out)


def test_rotation_keeps_the_data_and_swaps_the_password(site, capsys):
    sums = site.checksums()
    out = r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, host="web1")
    new = site.env()[k.DB_PASSWORD]
    assert new != site.old and k.check_value(k.DB_PASSWORD, new) is None
    assert site.checksums() == sums
    for role in (site.admin, site.auth, site.rest, site.sharer):
        assert site.login(role, new), role
        assert not site.login(role, site.old), role
        assert out.verification[role] == {"new": "accepted", "old": "refused"}
    assert site.login(site.other, site.other_password)  # not the same password: left alone
    assert site.nologin not in out.verification  # cannot log in: not tried
    # only PAYCRAFT_DB_PASSWORD changed in the env file, which keeps its mode
    before, after = dict(site.env()), site.env()
    before[k.DB_PASSWORD] = site.old
    assert {key for key in after if after[key] != before.get(key)} == {k.DB_PASSWORD}
    assert stat.S_IMODE(site.env_file.stat().st_mode) == 0o600
    # the record stays until the smoke test passed (finish), 0600
    state = site.state_file()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and json.loads(state.read_text())["status"] == "applied"
    assert r.finish(str(site.env_file)) is True and not state.exists()
    assert_no_secret(site, out.as_dict(), out.messages, capsys.readouterr(), extra=[new])


def test_a_failure_after_the_alter_puts_the_old_password_back(site, monkeypatch, capsys):
    sums = site.checksums()
    before = site.env_file.read_bytes()

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(r, "_write_env", full_disk)
    with pytest.raises(r.RotateError) as ei:
        r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, host="web1")
    msg = str(ei.value)
    assert msg.startswith("web1: the PAYCRAFT_DB_PASSWORD rotation failed after ALTER ROLE (")
    assert "No space left on device" in msg and "The old password was put back" in msg
    assert "Next: fix the cause, then run rotate.yml again." in msg
    for role in (site.admin, site.auth, site.rest, site.sharer):
        assert site.login(role, site.old), role
    assert site.env_file.read_bytes() == before and not site.state_file().exists()
    assert site.checksums() == sums
    assert_no_secret(site, msg, capsys.readouterr())


def test_a_verification_failure_reverts_too(site, monkeypatch):
    monkeypatch.setattr(r, "verify_passwords", lambda *a, **kw: ({}, ["role x: the new password is refused"]))
    given = "Given-password_0123456789"
    with pytest.raises(r.RotateError, match="verification failed: role x: the new password is refused") as ei:
        r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, value=given, host="web1")
    assert given not in str(ei.value)
    assert site.login(site.auth, site.old) and not site.login(site.auth, given)
    assert site.env()[k.DB_PASSWORD] == site.old


def test_revert_after_a_later_failure_puts_everything_back(site, capsys):
    """What the playbook does when the recreate or the smoke test fails after the rotation."""
    before = site.env_file.read_bytes()
    r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, host="web1")
    new = site.env()[k.DB_PASSWORD]
    plan = r.revert(str(site.env_file), site.params, host="web1", check=True)
    assert plan.changed and plan.plan.roles and site.env()[k.DB_PASSWORD] == new  # check mode: nothing yet
    out = r.revert(str(site.env_file), site.params, host="web1")
    assert out.reverted and site.env_file.read_bytes() == before and not site.state_file().exists()
    for role in (site.admin, site.auth, site.rest, site.sharer):
        assert site.login(role, site.old) and not site.login(role, new), role
        assert out.verification[role] == {"new": "accepted", "old": "refused"}  # new = the old one again
    assert r.revert(str(site.env_file), site.params).changed is False  # nothing recorded any more
    assert_no_secret(site, out.as_dict(), plan.as_dict(), capsys.readouterr(), extra=[new])


def test_an_unfinished_rotation_is_refused_until_reverted(site):
    r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose)
    with pytest.raises(r.RotateError, match=r"did not finish\. Nothing was changed\. Put the old values back first"):
        r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose)
    r.revert(str(site.env_file), site.params)
    assert site.login(site.auth, site.old)


def test_the_inventory_pinning_the_old_password_is_refused(site):
    with pytest.raises(r.RotateError) as ei:
        r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, host="web1",
                 given={k.DB_PASSWORD: site.old})
    assert "paycraft_db_password in the inventory holds the current PAYCRAFT_DB_PASSWORD" in str(ei.value)
    assert str(ei.value).endswith("Nothing was changed.") and site.old not in str(ei.value)
    # the inventory holding a new one: that is the target
    target = "Vault-held-password_0123456789"
    r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, given={k.DB_PASSWORD: target})
    assert site.env()[k.DB_PASSWORD] == target and site.login(site.rest, target)


def test_a_bad_new_password_and_a_missing_role_stop_before_anything_changes(site):
    with pytest.raises(r.RotateError) as ei:
        r.rotate(r.DB_PASSWORD, str(site.env_file), site.params, site.compose, value="short/pw",
                 extra_roles=["t_rot_missing_role"], host="web1")
    assert "the new PAYCRAFT_DB_PASSWORD must be at least 16 characters" in str(ei.value)
    assert "role t_rot_missing_role (paycraft_rotate_extra_roles) does not exist" in str(ei.value)
    assert site.login(site.auth, site.old) and not site.state_file().exists()


def test_a_non_superuser_login_is_refused(site):
    with pytest.raises(r.RotateError, match="is not a superuser"):
        r.rotate(r.DB_PASSWORD, str(site.env_file), dict(site.params, user=site.auth), site.compose)


# --- the JWT secret ----------------------------------------------------------------------------------------

def test_jwt_rotation_resigns_the_keys_and_updates_the_database_setting(site, capsys):
    with site.superuser() as conn, conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{site.dbname}" SET "app.settings.jwt_secret" TO %s', (site.secret,))
    plan = r.rotate(r.JWT_SECRET, str(site.env_file), site.params, site.compose, check=True, host="web1")
    assert plan.plan.env_keys == [k.JWT_SECRET, k.ANON_KEY, k.SERVICE_ROLE_KEY, "NEXT_PUBLIC_SUPABASE_ANON_KEY",
                                  "NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY"]
    assert plan.plan.settings == [f"database {site.dbname}: app.settings.jwt_secret"]
    assert plan.plan.services == ["db", "auth", "rest", "kong", "edge-runtime", "dashboard"]
    assert site.env()[k.JWT_SECRET] == site.secret

    out = r.rotate(r.JWT_SECRET, str(site.env_file), site.params, site.compose, host="web1")
    env = site.env()
    new = env[k.JWT_SECRET]
    assert new != site.secret and k.check_value(k.JWT_SECRET, new) is None
    for key, role in k.JWT_ROLES.items():
        assert jwt.decode(env[key], new, algorithms=["HS256"])["role"] == role
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(getattr(site, "anon" if role == "anon" else "service"), new, algorithms=["HS256"])
    assert env["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == env["NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY"] == env[k.ANON_KEY]
    assert env[k.DB_PASSWORD] == site.old and site.login(site.auth, site.old)
    assert out.verification[f"database {site.dbname}: app.settings.jwt_secret"] == "updated"
    assert out.verification[f"old {k.ANON_KEY}"] == "refused"
    with site.superuser(site.dbname) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('app.settings.jwt_secret')")
        assert cur.fetchone()[0] == new
    assert_no_secret(site, out.as_dict(), plan.as_dict(), capsys.readouterr(),
                     extra=[new, env[k.ANON_KEY], env[k.SERVICE_ROLE_KEY]])

    # a later failure (smoke with the new anon key): everything back
    back = r.revert(str(site.env_file), site.params)
    assert back.reverted and site.env()[k.JWT_SECRET] == site.secret and site.env()[k.ANON_KEY] == site.anon
    with site.superuser(site.dbname) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('app.settings.jwt_secret')")
        assert cur.fetchone()[0] == site.secret


def test_jwt_failure_after_the_setting_changed_puts_it_back(site, monkeypatch):
    with site.superuser() as conn, conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{site.dbname}" SET "app.settings.jwt_secret" TO %s', (site.secret,))
    before = site.env_file.read_bytes()
    monkeypatch.setattr(r, "_write_env", lambda path, text: (_ for _ in ()).throw(OSError(13, "Permission denied")))
    with pytest.raises(r.RotateError, match=r"rotation failed .*Permission denied.*The old secret was put back"):
        r.rotate(r.JWT_SECRET, str(site.env_file), site.params, site.compose)
    assert site.env_file.read_bytes() == before and not site.state_file().exists()
    with site.superuser(site.dbname) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('app.settings.jwt_secret')")
        assert cur.fetchone()[0] == site.secret


def test_jwt_keys_pinned_in_the_inventory_are_refused(site):
    with pytest.raises(r.RotateError) as ei:
        r.rotate(r.JWT_SECRET, str(site.env_file), site.params, site.compose, host="web1",
                 given={k.ANON_KEY: site.anon, k.JWT_SECRET: ""})
    assert "paycraft_anon_key is set in the inventory" in str(ei.value) and site.anon not in str(ei.value)


def test_jwt_plan_without_a_database_setting(site):
    out = r.rotate(r.JWT_SECRET, str(site.env_file), site.params, site.compose, check=True)
    assert out.plan.settings == [] and "database settings" not in "\n".join(out.messages)


def test_no_secret_in_an_env_file_that_does_not_exist(tmp_path):
    with pytest.raises(r.RotateError, match="does not exist: nothing to rotate"):
        r.rotate(r.DB_PASSWORD, str(tmp_path / "nope.env"), {}, [])
    assert os.listdir(tmp_path) == []
