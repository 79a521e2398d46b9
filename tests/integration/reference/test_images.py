"""The reference images, each run on its own or in a tiny ad-hoc network.

No compose, no fixed container names or host ports (those belong to the
end-to-end tests of the reference release): every container is named
``pcref-test-<random>-<role>``, lives on its own user-defined network and
publishes on 127.0.0.1 with a random host port. The images are built once
per session by ``reference/build-images.sh`` (a no-op when cached).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import psycopg2
import pytest
from paycraft_testlib import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
BUILD_IMAGES = REPO / "reference" / "build-images.sh"
PREFIX = os.environ.get("PAYCRAFT_IMAGE_PREFIX", "paycraft-local/")
TAG = os.environ.get("PAYCRAFT_IMAGE_TAG", "ref")
DB_PASSWORD = "pcref-" + secrets.token_hex(8)
JWT_SECRET = secrets.token_urlsafe(32)


def image(service: str) -> str:
    return f"{PREFIX}{service}:{TAG}"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 20):
    """Return (status, headers, parsed JSON or text) for one HTTP request."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - local test URL
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local test URL
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, err.headers, err.read()
    text = raw.decode()
    try:
        return status, head, json.loads(text) if text else None
    except ValueError:
        return status, head, text


def answers(url: str) -> bool:
    try:
        http("GET", url, timeout=2)
        return True
    except OSError:
        return False


class Net:
    """A user-defined network and the containers/volumes a test made on it."""

    def __init__(self) -> None:
        self.name = f"pcref-test-{secrets.token_hex(4)}"
        self.containers: list[str] = []
        self.volumes: list[str] = []
        docker("network", "create", self.name)

    def volume(self) -> str:
        name = f"{self.name}-vol{len(self.volumes)}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, role: str, img: str, *command: str, env: dict | None = None, alias: str | None = None,
            publish: int | None = None, volumes: tuple[str, ...] = ()) -> str:
        name = f"{self.name}-{role}"
        args = ["run", "-d", "--name", name, "--network", self.name, "--network-alias", alias or role]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for vol in volumes:
            args += ["-v", vol]
        if publish:
            args += ["-p", f"127.0.0.1::{publish}"]
        self.containers.append(name)
        docker(*args, img, *command)
        return name

    def remove(self, name: str) -> None:
        docker("rm", "-f", "-v", name, check=False)

    def cleanup(self) -> None:
        for name in self.containers:
            self.remove(name)
        for vol in self.volumes:
            docker("volume", "rm", "-f", vol, check=False)
        docker("network", "rm", self.name, check=False)


def host_port(container: str, port: int) -> int:
    out = docker("port", container, str(port)).stdout.split("\n")[0]
    return int(out.rsplit(":", 1)[1])


def logs(container: str) -> str:
    proc = docker("logs", container, check=False)
    return proc.stdout + proc.stderr


def start_db(net: Net, role: str = "db", password: str = DB_PASSWORD, volume: str | None = None) -> str:
    vols = (f"{volume}:/var/lib/postgresql/data",) if volume else ()
    name = net.run(role, image("db"), env={"POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres",
                                          "JWT_SECRET": JWT_SECRET}, publish=5432, volumes=vols)
    wait_for(lambda: docker("exec", name, "pg_isready", "-U", "postgres", check=False).returncode == 0,
             timeout=90, what=f"{name} to accept connections\n{logs(name)[-2000:]}")
    return name


def db_params(container: str, user: str = "postgres", password: str = DB_PASSWORD) -> dict:
    return {"host": "127.0.0.1", "port": host_port(container, 5432), "user": user, "password": password,
            "dbname": "postgres", "connect_timeout": 5}


def token(claims: dict, secret: str = JWT_SECRET) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


@pytest.fixture(scope="session")
def ref_images(docker_engine):
    """All six images, built (or found in the cache) by reference/build-images.sh."""
    proc = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"reference/build-images.sh failed:\n{proc.stderr[-4000:]}", pytrace=False)


@pytest.fixture
def net(ref_images):
    n = Net()
    yield n
    n.cleanup()


@pytest.fixture(scope="module")
def stack(ref_images):
    """db + rest + auth on one network, with a table under RLS and a few functions."""
    n = Net()
    try:
        db = start_db(n)
        with psycopg2.connect(**db_params(db)) as conn, conn.cursor() as cur:
            cur.execute("""
                CREATE TABLE public.notes (id serial PRIMARY KEY, owner uuid, body text);
                ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
                CREATE POLICY own_notes ON public.notes FOR SELECT USING (owner = auth.uid());
                INSERT INTO public.notes (owner, body) VALUES
                    ('11111111-1111-1111-1111-111111111111', 'mine'),
                    ('22222222-2222-2222-2222-222222222222', 'theirs');
                CREATE FUNCTION public.add_numbers(a int, b int) RETURNS int
                    LANGUAGE sql AS $$ SELECT a + b $$;
                CREATE FUNCTION public.whoami() RETURNS jsonb LANGUAGE sql AS $$
                    SELECT jsonb_build_object('role', auth.role(), 'uid', auth.uid(), 'db_role', current_user) $$;
                CREATE FUNCTION public.fail_on(p_reason text) RETURNS void LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'refused: %', p_reason; END $$;
            """)
        conn.close()
        common = {"PGRST_DB_URI": f"postgres://authenticator:{DB_PASSWORD}@db:5432/postgres",
                  "PGRST_DB_SCHEMAS": "public", "PGRST_DB_ANON_ROLE": "anon", "PGRST_JWT_SECRET": JWT_SECRET}
        rest = n.run("rest", image("rest"), env=common, publish=3000)
        auth = n.run("auth", image("auth"), publish=9999, env={
            "GOTRUE_API_HOST": "0.0.0.0", "GOTRUE_API_PORT": "9999",  # noqa: S104 - inside the container "API_EXTERNAL_URL": "http://localhost:54321",
            "GOTRUE_DB_DRIVER": "postgres",
            "GOTRUE_DB_DATABASE_URL": f"postgres://supabase_auth_admin:{DB_PASSWORD}@db:5432/postgres",
            "GOTRUE_SITE_URL": "http://localhost:3000", "GOTRUE_JWT_SECRET": JWT_SECRET, "GOTRUE_JWT_EXP": "3600",
            "GOTRUE_JWT_AUD": "authenticated", "GOTRUE_MAILER_AUTOCONFIRM": "true",
            "GOTRUE_DISABLE_SIGNUP": "false"})
        urls = {"rest": f"http://127.0.0.1:{host_port(rest, 3000)}",
                "auth": f"http://127.0.0.1:{host_port(auth, 9999)}"}
        for svc, url in urls.items():
            wait_for(lambda url=url: answers(url + "/"), timeout=30, what=f"the {svc} container to answer")
        yield {"net": n, "db": db, **urls}
    finally:
        n.cleanup()


# --- db ---------------------------------------------------------------------------

def test_db_bootstrap_objects_exist(stack):
    check_bootstrap(stack["db"])


def test_db17_keeps_the_same_contract(net):
    """The Postgres 17 stand-in (build-images.sh db17, Debian trixie's postgresql-17) boots the same bootstrap:
    the major-version upgrade path moves data between the two (issue #36)."""
    built = subprocess.run([str(BUILD_IMAGES), "db17"], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"reference/build-images.sh db17 failed:\n{built.stderr[-3000:]}", pytrace=False)
    name = net.run("db17", image("db17"), env={"POSTGRES_PASSWORD": DB_PASSWORD, "POSTGRES_DB": "postgres",
                                               "JWT_SECRET": JWT_SECRET}, publish=5432)
    wait_for(lambda: docker("exec", name, "pg_isready", "-U", "postgres", check=False).returncode == 0,
             timeout=90, what=f"{name} to accept connections\n{logs(name)[-2000:]}")
    with psycopg2.connect(**db_params(name)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        assert cur.fetchone()[0] == 17
    conn.close()
    check_bootstrap(name)


def check_bootstrap(db: str) -> None:
    """What the bootstrap of the reference db image makes, as supabase/postgres has it."""
    with psycopg2.connect(**db_params(db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname, rolcanlogin, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = ANY(%s)"
                    " ORDER BY rolname",
                    (["anon", "authenticated", "authenticator", "service_role", "supabase_auth_admin"],))
        assert cur.fetchall() == [
            ("anon", False, False, False), ("authenticated", False, False, False),
            ("authenticator", True, False, False), ("service_role", False, True, False),
            ("supabase_auth_admin", True, False, False)]
        cur.execute("SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'authenticator' ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == ["anon", "authenticated", "service_role"]
        cur.execute("SELECT extname, extnamespace::regnamespace::text FROM pg_extension"
                    " WHERE extname IN ('pgcrypto', 'uuid-ossp') ORDER BY 1")
        assert cur.fetchall() == [("pgcrypto", "extensions"), ("uuid-ossp", "extensions")]
        cur.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'auth'")
        assert cur.fetchone() == ("supabase_auth_admin",)
        cur.execute("SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'auth' AND table_name = 'users'")
        assert {"id", "email", "encrypted_password", "raw_user_meta_data", "created_at"} <= {
            r[0] for r in cur.fetchall()}
        cur.execute("SELECT current_setting('app.settings.jwt_secret')")
        assert cur.fetchone()[0] == JWT_SECRET
        cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": "11111111-1111-1111-1111-111111111111", "role": "authenticated"}),))
        cur.execute("SELECT auth.uid()::text, auth.role(), auth.jwt() ->> 'role'")
        assert cur.fetchone() == ("11111111-1111-1111-1111-111111111111", "authenticated", "authenticated")
        cur.execute("SELECT extensions.crypt('pw', extensions.gen_salt('bf')) LIKE '$2a$%'")
        assert cur.fetchone()[0] is True
    conn.close()
    for user in ("authenticator", "supabase_auth_admin"):
        with psycopg2.connect(**db_params(db, user=user)) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == user
        conn.close()
    out = docker("exec", db, "psql", "-U", "postgres", "-tAc", "SELECT 1").stdout.strip()
    assert out == "1"


def test_db_password_is_set_at_initdb_only(net):
    volume = net.volume()
    first = start_db(net, role="db1", password="first-" + DB_PASSWORD, volume=volume)
    assert "initialisation complete" in logs(first)
    net.remove(first)
    second = start_db(net, role="db2", password="second-" + DB_PASSWORD, volume=volume)
    assert "already initialised: POSTGRES_PASSWORD is not applied again" in logs(second)
    assert "no record of a finished bootstrap" not in logs(second)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**db_params(second, password="second-" + DB_PASSWORD))
    psycopg2.connect(**db_params(second, password="first-" + DB_PASSWORD)).close()


def test_db_refuses_an_empty_volume_without_password(net):
    name = f"{net.name}-nopw"
    proc = docker("run", "--rm", "--name", name, "--network", net.name, image("db"), check=False, timeout=60)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD is not set" in proc.stderr


# --- rest --------------------------------------------------------------------------

def test_rest_rpc_with_named_arguments(stack):
    status, _, body = http("POST", stack["rest"] + "/rpc/add_numbers", {"a": 2, "b": 40})
    assert (status, body) == (200, 42)
    status, _, body = http("POST", stack["rest"] + "/rpc/no_such_function", {})
    assert status == 404 and body["code"] == "PGRST202"
    status, _, body = http("POST", stack["rest"] + "/rpc/fail_on", {"p_reason": "nope"},
                           headers={"Authorization": f"Bearer {token({'role': 'service_role'})}"})
    assert status == 400 and body["code"] == "P0001" and body["message"] == "refused: nope"


def test_rest_select_with_filter_and_single_object(stack):
    service = {"Authorization": f"Bearer {token({'role': 'service_role'})}"}
    status, head, body = http("GET", stack["rest"] + "/notes?select=id,body&order=id.desc", headers=service)
    assert status == 200 and body == [{"id": 2, "body": "theirs"}, {"id": 1, "body": "mine"}]
    status, head, body = http("GET", stack["rest"] + "/notes?select=body&id=eq.2",
                              headers={**service, "Accept": "application/vnd.pgrst.object+json"})
    assert status == 200 and body == {"body": "theirs"}
    assert head["Content-Type"].startswith("application/vnd.pgrst.object+json")
    status, _, body = http("GET", stack["rest"] + "/notes?select=body",
                           headers={**service, "Accept": "application/vnd.pgrst.object+json"})
    assert status == 406 and body["code"] == "PGRST116"


def test_rest_applies_the_role_claim(stack):
    user = {"Authorization": "Bearer " + token({"sub": "11111111-1111-1111-1111-111111111111",
                                                "role": "authenticated"})}
    assert http("GET", stack["rest"] + "/notes?select=body")[2] == []  # anon: RLS hides every row
    assert http("GET", stack["rest"] + "/notes?select=body", headers=user)[2] == [{"body": "mine"}]
    status, _, body = http("POST", stack["rest"] + "/rpc/whoami", {}, headers=user)
    assert status == 200
    assert body == {"role": "authenticated", "uid": "11111111-1111-1111-1111-111111111111",
                    "db_role": "authenticated"}
    assert http("POST", stack["rest"] + "/rpc/whoami", {})[2]["db_role"] == "anon"


def test_rest_rejects_bad_and_expired_tokens(stack):
    forged = token({"role": "service_role"}, secret="another-secret-" + JWT_SECRET)
    status, _, body = http("GET", stack["rest"] + "/notes", headers={"Authorization": f"Bearer {forged}"})
    assert status == 401 and body["code"] == "PGRST301" and "JWSInvalidSignature" in body["message"]
    expired = token({"role": "service_role", "exp": int(time.time()) - 60})
    status, _, body = http("GET", stack["rest"] + "/notes", headers={"Authorization": f"Bearer {expired}"})
    assert status == 401 and body["code"] == "PGRST303"


# --- auth --------------------------------------------------------------------------

def test_auth_signup_token_user(stack):
    status, _, health = http("GET", stack["auth"] + "/health")
    assert status == 200 and health["name"] == "GoTrue"
    email, password = f"owner-{secrets.token_hex(3)}@example.test", "correct horse"
    status, _, session = http("POST", stack["auth"] + "/signup", {"email": email, "password": password})
    assert status == 200, session
    assert session["token_type"] == "bearer" and session["user"]["email"] == email
    claims = jwt.decode(session["access_token"], JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == session["user"]["id"] and claims["role"] == "authenticated"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(session["access_token"], "another-" + JWT_SECRET, algorithms=["HS256"], audience="authenticated")

    status, _, body = http("POST", stack["auth"] + "/signup", {"email": email, "password": password})
    assert (status, body["msg"]) == (422, "User already registered")
    status, _, body = http("POST", stack["auth"] + "/token?grant_type=password", {"email": email, "password": "x"})
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Invalid login credentials"})
    status, _, login = http("POST", stack["auth"] + "/token?grant_type=password",
                            {"email": email, "password": password})
    assert status == 200 and login["user"]["id"] == session["user"]["id"]
    status, _, user = http("GET", stack["auth"] + "/user",
                           headers={"Authorization": f"Bearer {login['access_token']}"})
    assert status == 200 and user["email"] == email

    with psycopg2.connect(**db_params(stack["db"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT encrypted_password = extensions.crypt(%s, encrypted_password) FROM auth.users"
                    " WHERE email = %s", (password, email))
        assert cur.fetchone() == (True,)
    conn.close()
    # The token is accepted by rest: the two services share the secret.
    status, _, body = http("POST", stack["rest"] + "/rpc/whoami", {},
                           headers={"Authorization": f"Bearer {login['access_token']}"})
    assert status == 200 and body["uid"] == session["user"]["id"]


# --- kong --------------------------------------------------------------------------

ECHO_SERVER = (
    "require('http').createServer((q, s) => { let b = ''; q.on('data', d => b += d); q.on('end', () => {"
    " s.setHeader('content-type', 'application/json');"
    " s.end(JSON.stringify({url: q.url, method: q.method, host: q.headers.host, body: b,"
    " prefix: q.headers['x-forwarded-prefix'] || null})); }); }).listen(8080)"
)

KONG_YML = """\
_format_version: "3.0"
_transform: true
services:
  - name: echo
    url: http://echo:8080/
    routes:
      - name: echo-all
        strip_path: true
        paths: [/echo/v1/]
    plugins:
      - name: cors
  - name: echo-based
    url: http://echo:8080/base
    routes:
      - name: echo-based
        paths: [/based/]
  - name: echo-keep
    host: echo
    port: 8080
    protocol: http
    routes:
      - name: echo-keep
        strip_path: false
        paths: [/keep/, /keep/deeper/]
  - name: rest-v1
    url: http://echo:3000/
    routes:
      - name: rest-v1-all
        paths: [/rest/v1/]
"""


def start_kong(net, tmp_path, kong_yml: str, echo: str, ready_path: str) -> tuple[str, str]:
    """An echo service and the gateway in front of it, with this declarative file: (container, base URL)."""
    net.run("echo", image("dashboard"), "node", "-e", echo)
    config = tmp_path / "kong.yml"
    config.write_text(kong_yml)
    config.chmod(0o644)
    kong = net.run("kong", image("kong"), publish=8000, volumes=(f"{config}:/home/kong/kong.yml:ro",), env={
        "KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": "/home/kong/kong.yml",
        "KONG_PROXY_LISTEN": "0.0.0.0:8000"})
    base = f"http://127.0.0.1:{host_port(kong, 8000)}"
    wait_for(lambda: http("GET", base + ready_path)[0] == 200, timeout=30,
             what=f"kong to route to the echo service\n{logs(kong)[-2000:]}")
    return kong, base


def test_kong_routes_from_declarative_file(net, tmp_path):
    kong, base = start_kong(net, tmp_path, KONG_YML, ECHO_SERVER, "/echo/v1/ping")

    status, head, body = http("POST", base + "/echo/v1/signup?x=1&y=two", {"email": "a@b.c"})
    assert status == 200
    assert body["url"] == "/signup?x=1&y=two" and body["method"] == "POST"
    assert json.loads(body["body"]) == {"email": "a@b.c"}
    assert body["prefix"] == "/echo/v1" and body["host"].startswith("echo")
    assert head["Server"].startswith("kong/")
    assert http("GET", base + "/based/rpc/x")[2]["url"] == "/base/rpc/x"
    assert http("GET", base + "/keep/deeper/z?q=1")[2]["url"] == "/keep/deeper/z?q=1"

    for path in ("/", "/echo/v1", "/nothing/here"):
        status, head, body = http("GET", base + path)
        assert (status, body) == (404, {"message": "no Route matched with those values"}), path
        assert head["Server"].startswith("kong/")
    # rest-v1 points at a host:port where nothing listens (as PayCraft's db:3000): 502, as Kong answers.
    status, _, body = http("GET", base + "/rest/v1/rpc/x")
    assert (status, body) == (502, {"message": "An invalid response was received from the upstream server"})
    assert "plugin 'cors' on service 'echo' is not supported: ignored" in logs(kong)


def test_kong_unresolvable_service_gives_502(net, tmp_path):
    config = tmp_path / "kong.yml"
    config.write_text('_format_version: "3.0"\nservices:\n  - name: gone\n    url: http://no-such-service:3000/\n'
                      "    routes:\n      - name: gone\n        paths: [/gone/]\n")
    config.chmod(0o644)
    kong = net.run("kong", image("kong"), publish=8000, volumes=(f"{config}:/home/kong/kong.yml:ro",))
    base = f"http://127.0.0.1:{host_port(kong, 8000)}"
    wait_for(lambda: answers(base + "/"), timeout=30, what=f"kong to listen\n{logs(kong)[-2000:]}")
    status, head, body = http("GET", base + "/gone/x")
    assert (status, body) == (502, {"message": "An invalid response was received from the upstream server"})
    assert head["Server"].startswith("kong/")


HEADERS_ECHO = (
    "require('http').createServer((q, s) => { s.setHeader('content-type', 'application/json');"
    " s.end(JSON.stringify({url: q.url, headers: q.headers})); }).listen(8080)"
)

KEY_AUTH_YML = """\
_format_version: "3.0"
consumers:
  - username: anon
    keyauth_credentials: [{key: ANON}]
    acls: [{group: anon}]
  - username: service_role
    keyauth_credentials: [{key: SERVICE}]
    acls: [{group: admin}]
  - username: outsider
    keyauth_credentials: [{key: OUTSIDER}]
services:
  - name: rest-v1
    url: http://echo:8080/
    routes:
      - name: rest-v1-all
        paths: [/rest/v1/]
    plugins:
      - name: key-auth
        config: {hide_credentials: true}
      - name: acl
        config: {hide_groups_header: true, allow: [admin, anon]}
  - name: functions-v1
    url: http://echo:8080/
    routes:
      - name: functions-v1-all
        paths: [/functions/v1/]
"""


def test_kong_key_auth_and_acl(net, tmp_path):
    """key-auth and acl as Supabase's kong.yml puts them on /rest/v1/: Kong's answers, real nginx."""
    keys = {name: secrets.token_urlsafe(24) for name in ("ANON", "SERVICE", "OUTSIDER")}
    text = KEY_AUTH_YML
    for name, key in keys.items():
        text = text.replace(f"key: {name}}}", f"key: {key}}}")
    kong, base = start_kong(net, tmp_path, text, HEADERS_ECHO, "/functions/v1/ping")

    status, head, body = http("GET", base + "/rest/v1/tenants")
    assert (status, body) == (401, {"message": "No API key found in request"})
    assert head["WWW-Authenticate"] == 'Key realm="kong"' and head["Server"].startswith("kong/")
    status, _, body = http("GET", base + "/rest/v1/tenants", headers={"apikey": secrets.token_urlsafe(24)})
    assert (status, body) == (401, {"message": "Unauthorized"})
    status, _, body = http("GET", base + "/rest/v1/tenants", headers={"apikey": keys["OUTSIDER"]})
    assert (status, body) == (403, {"message": "You cannot consume this service"})

    status, _, body = http("GET", base + "/rest/v1/tenants?select=id", headers={"apikey": keys["ANON"]})
    assert status == 200 and body["url"] == "/tenants?select=id"
    assert body["headers"]["x-consumer-username"] == "anon"
    assert "apikey" not in body["headers"], "hide_credentials: the upstream must not get the key"
    status, _, body = http("GET", base + f"/rest/v1/tenants?apikey={keys['SERVICE']}")
    assert status == 200 and body["headers"]["x-consumer-username"] == "service_role"

    # the functions route has no key check
    assert http("GET", base + "/functions/v1/config")[0] == 200
    # keys sent in a header stay out of the logs (a key in the query string is in the request line
    # of the access log, on Kong too)
    assert keys["ANON"] not in logs(kong) and keys["OUTSIDER"] not in logs(kong)


# --- edge-runtime --------------------------------------------------------------------

MAIN_TS = """\
Deno.serve(async (req: Request) => {
  const name = new URL(req.url).pathname.split("/")[1];
  const servicePath = `/home/deno/functions/${name}`;
  try {
    const worker = await EdgeRuntime.userWorkers.create({
      servicePath, memoryLimitMb: 150, workerTimeoutMs: 60000, noModuleCache: false,
      importMapPath: null, envVars: Object.entries(Deno.env.toObject()),
    });
    return await worker.fetch(req);
  } catch (e) {
    if (String(e).includes("not found")) {
      return Response.json({ message: "Function not found" }, { status: 404 });
    }
    return Response.json({ msg: String(e) }, { status: 500 });
  }
});
"""

HELLO_TS = """\
import { greet } from "./greet.ts";

Deno.serve({ port: 1234 }, async (req: Request) => {
  const url = new URL(req.url);
  return Response.json({
    text: greet(url.searchParams.get("name") ?? "world"),
    path: url.pathname,
    method: req.method,
    body: req.method === "POST" ? await req.json() : null,
    secret: Deno.env.get("PCREF_SECRET") ?? null,
    pid: Deno.pid,
  });
});
"""


def functions_dir(tmp_path: Path, with_main: bool = True) -> Path:
    root = tmp_path / "functions"
    (root / "hello").mkdir(parents=True)
    (root / "hello" / "index.ts").write_text(HELLO_TS)
    (root / "hello" / "greet.ts").write_text("export const greet = (n: string): string => `hello ${n}`;\n")
    if with_main:
        (root / "main").mkdir()
        (root / "main" / "index.ts").write_text(MAIN_TS)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_edge_runtime_routes_to_functions(net, tmp_path):
    root = functions_dir(tmp_path)
    edge = net.run("edge", image("edge-runtime"), "start", "--main-service", "/home/deno/functions/main",
                   publish=9000, volumes=(f"{root}:/home/deno/functions:ro",), env={"PCREF_SECRET": "s3cr3t"})
    base = f"http://127.0.0.1:{host_port(edge, 9000)}"
    wait_for(lambda: answers(base + "/"), timeout=60, what=f"the edge runtime to listen\n{logs(edge)[-2000:]}")

    status, _, body = http("GET", base + "/hello?name=paycraft")
    assert status == 200, (body, logs(edge)[-2000:])
    assert body["text"] == "hello paycraft" and body["path"] == "/hello" and body["secret"] == "s3cr3t"
    status, _, again = http("POST", base + "/hello/sub", {"n": 1})
    assert status == 200 and again["body"] == {"n": 1} and again["path"] == "/hello/sub"
    assert again["pid"] == body["pid"]  # the worker is kept warm and reused

    status, _, body = http("GET", base + "/absent")
    assert (status, body) == (404, {"message": "Function not found"})


PAYCRAFT_SHAPED_TS = """\
import { serve } from "https://deno.land/std@0.177.0/http/server.ts";
import Stripe from "https://esm.sh/stripe@14.0.0?target=deno";
import { createClient } from "https://esm.sh/@supabase/supabase-js@2";
import { shared } from "../_shared/shared.ts";

const stripe = new Stripe("sk_test_unused", { apiVersion: "2023-10-16", httpClient: Stripe.createFetchHttpClient() });
const provider = Stripe.createSubtleCryptoProvider();

serve(async (req: Request) => {
  const raw = await req.text();
  let verified = null;
  try {
    const event = await stripe.webhooks.constructEventAsync(raw, req.headers.get("stripe-signature") ?? "",
      "whsec_reference", 300, provider);
    verified = event.id;
  } catch (e) {
    verified = "refused: " + (e instanceof Error ? e.message : String(e)).slice(0, 40);
  }
  // nothing listens on 127.0.0.1:9: supabase-js answers with an error object, not a throw
  const { error } = await createClient("http://127.0.0.1:9", "key").rpc("resolve_tenant", { p_api_key: "x" });
  return Response.json({ shared: shared(), verified, rpcError: Boolean(error) });
});
"""

UNMAPPED_TS = """\
import { decode } from "https://deno.land/std@0.177.0/encoding/base64.ts";
Deno.serve(() => new Response(String(decode)));
"""


def test_edge_runtime_resolves_paycraft_imports_offline(net, tmp_path):
    """PayCraft's functions import deno.land/std and esm.sh by URL and ../_shared/ by path: the import map
    sends the URLs to the npm packages cached at build time (no network is needed, --cached-only)."""
    import hashlib
    import hmac

    root = functions_dir(tmp_path)
    for name, text in (("paycraft", PAYCRAFT_SHAPED_TS), ("unmapped", UNMAPPED_TS)):
        (root / name).mkdir()
        (root / name / "index.ts").write_text(text)
    (root / "_shared").mkdir()
    (root / "_shared" / "shared.ts").write_text('export const shared = (): string => "from _shared";\n')
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    edge = net.run("edge", image("edge-runtime"), "start", "--main-service", "/home/deno/functions/main",
                   publish=9000, volumes=(f"{root}:/home/deno/functions:ro",))
    base = f"http://127.0.0.1:{host_port(edge, 9000)}"
    wait_for(lambda: answers(base + "/"), timeout=60, what=f"the edge runtime to listen\n{logs(edge)[-2000:]}")

    raw = json.dumps({"id": "evt_offline", "object": "event"}).encode()
    t = int(time.time())
    sig = hmac.new(b"whsec_reference", f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    req = urllib.request.Request(base + "/paycraft", data=raw, method="POST",  # noqa: S310 - local URL
                                 headers={"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - local URL
        body = json.loads(resp.read())
    assert body == {"shared": "from _shared", "verified": "evt_offline", "rpcError": True}, logs(edge)[-2000:]
    status, _, body = http("POST", base + "/paycraft", {"id": "evt_forged"})
    assert status == 200 and body["verified"].startswith("refused"), body

    # a URL the map does not cover fails to boot, loudly, instead of reaching out
    status, _, body = http("GET", base + "/unmapped")
    assert status == 500, body
    assert "deno.land/std@0.177.0/encoding/base64.ts" in logs(edge)


def test_edge_runtime_without_main_exits(net, tmp_path):
    root = functions_dir(tmp_path, with_main=False)
    proc = docker("run", "--rm", "--name", f"{net.name}-nomain", "--network", net.name,
                  "-v", f"{root}:/home/deno/functions:ro", image("edge-runtime"),
                  "start", "--main-service", "/home/deno/functions/main", check=False, timeout=60)
    assert proc.returncode != 0
    assert "main service not found: /home/deno/functions/main" in proc.stderr


# --- dashboard -----------------------------------------------------------------------

def test_dashboard_runs_an_app_with_npm(net, tmp_path):
    versions = docker("run", "--rm", "--network", net.name, image("dashboard"),
                      "sh", "-c", "node --version && npm --version").stdout.split()
    assert versions[0].startswith("v") and versions[1][0].isdigit()

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({
        "name": "pcref-app", "version": "1.0.0", "private": True,
        "scripts": {"build": "node build.js", "start": "node server.js"}}))
    (app / "build.js").write_text("require('fs').writeFileSync('built.txt', 'built by npm run build');\n")
    (app / "server.js").write_text(
        "const i = process.argv.indexOf('-p'); const port = i > 0 ? Number(process.argv[i + 1]) : 8080;\n"
        "require('http').createServer((q, s) => s.end(require('fs').readFileSync('built.txt')))"
        ".listen(port);\n")
    app.chmod(0o777)
    dash = net.run("dashboard", image("dashboard"), "sh", "-c",
                   "npm install --no-audit --no-fund && npm run build && npm run start -- -p 3000",
                   publish=3000, volumes=(f"{app}:/app",))
    base = f"http://127.0.0.1:{host_port(dash, 3000)}"
    wait_for(lambda: answers(base + "/"), timeout=180, what=f"the dashboard app\n{logs(dash)[-2000:]}")
    assert http("GET", base + "/")[2] == "built by npm run build"
