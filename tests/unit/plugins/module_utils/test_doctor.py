"""Unit tests of plugins/module_utils/doctor.py: each runbook section 7 check on real inputs.

* ports: a socket this test really listens on (found through the live /proc/net/tcp);
* postgres / migrations_connect: the session's real PostgreSQL cluster (login refused with a
  changed password; pg_isready over the wire on a live and on a closed port);
* config_function / dashboard_npm / postgres logs: output captured from the reference images
  (doctor_inputs/README.md says how), replayed as the docker CLI printed it;
* tenant_trigger: the two tenancy shapes (a signup trigger; PayCraft's provisioning RPCs) applied to a real
  database, read with psql.

The integration test (tests/integration/doctor) runs the same checks through Ansible on a
Docker-in-Docker host with the stack up and faults injected for real.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import doctor as d
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as k
from paycraft_testlib import free_port

INPUTS = Path(__file__).parent / "doctor_inputs"
NOW = 1_800_000_000.0


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".123456789Z"


def container(running=True, started_ago=600, env=None, status=None, restarts=0, exit_code=0):
    return {
        "State": {"Status": status or ("running" if running else "exited"), "Running": running,
                  "Restarting": status == "restarting", "ExitCode": exit_code,
                  "StartedAt": iso(NOW - started_ago), "FinishedAt": iso(NOW - 30) if not running else
                  "0001-01-01T00:00:00Z", "Error": ""},
        "RestartCount": restarts,
        "Config": {"Env": [f"{a}={b}" for a, b in (env or {}).items()]},
    }


class Docker:
    """The docker CLI's answers for one scenario (inspect / logs / top / ps / exec), as it prints them."""

    def __init__(self, containers=None, logs=None, top=None, ps=None, exec_=None):
        self.containers = containers or {}
        self.log_text = logs or {}
        self.top = top or {}
        self.ps = ps or {}
        self.exec_ = exec_
        self.calls = []

    def __call__(self, argv, cwd=None, timeout=None):
        self.calls.append(argv)
        assert argv[0] == "docker"
        cmd = argv[1]
        if cmd == "inspect":
            name = argv[-1]
            if name in self.containers:
                return 0, json.dumps([self.containers[name]]), ""
            return 1, "[]", f"Error: No such container: {name}"
        if cmd == "logs":
            return 0, "", self.log_text.get(argv[-1], "")
        if cmd == "top":
            return 0, self.top.get(argv[2], "PID COMMAND\n"), ""
        if cmd == "ps":
            port = int(argv[argv.index("--filter") + 1].split("=")[1])
            return 0, "".join(f"{n}\n" for n in self.ps.get(port, [])), ""
        if cmd == "exec":
            return self.exec_(argv)
        raise AssertionError(f"unexpected docker call {argv}")


def write_env(path: Path, **values) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return path


def doctor(tmp_path, runner, **params):
    params.setdefault("env_file", str(tmp_path / "none.env"))
    params.setdefault("selfhost_dir", str(tmp_path / "release" / "infra" / "selfhost"))
    return d.Doctor(params, runner, now=lambda: NOW)


def only(results):
    assert len(results) == 1, results
    return results[0]


# ------------------------------------------------------------------ the report line


def test_line_names_status_subject_fix_and_runbook_entry():
    res = d.result("ports", d.FAIL, "held by process python3 (pid 7).", "kill 7.", "54321")
    assert d.line(res) == ("FAIL ports 54321: held by process python3 (pid 7). Fix: kill 7. "
                           "(runbook section 7, 'Port already in use')")
    assert d.line(d.result("postgres", d.OK, "fine.")) == \
        "OK   postgres: fine. (runbook section 7, 'Postgres container exits during boot')"


def test_every_section_7_entry_is_a_check():
    assert list(d.RUNBOOK.values()) == [
        "Port already in use", "Postgres container exits during boot",
        "Edge function returns 404 for /functions/v1/config", 'migrations-bootstrap.sh aborts with "could not connect"',
        "Dashboard build hangs at npm install", 'SDK throws "401 Unauthorized" from a self-hosted backend',
        "Tenant not auto-created on first signup"]
    assert all(hasattr(d.Doctor, f"check_{c}") for c in d.CHECKS)


def test_docker_times():
    epoch = calendar.timegm((2026, 11, 29, 2, 10, 11, 0, 0, 0))
    assert d.parse_docker_time("2026-11-29T02:10:11.123456789Z") == epoch
    assert d.parse_docker_time("2026-11-29T03:10:11+01:00") == epoch
    assert d.parse_docker_time("0001-01-01T00:00:00Z") is None


# ------------------------------------------------------------------ ports


def test_port_held_by_a_process_names_it_and_its_pid(tmp_path):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        runner = Docker(containers={"paycraft_kong": container(running=False, exit_code=1)})
        res = only(doctor(tmp_path, runner, ports={port: "kong"}).check_ports())
    assert res["status"] == d.FAIL and res["subject"] == str(port)
    assert f"(pid {os.getpid()}: " in res["message"]
    assert res["message"].endswith("not paycraft_kong.")
    assert f"kill {os.getpid()}" in res["fix"] and "kong.ports[0]" in res["fix"]
    assert "docker compose up -d kong" in res["fix"]


def test_port_published_by_another_container(tmp_path):
    port = free_port()
    runner = Docker(ps={port: ["supabase_kong_demo"]}, containers={"paycraft_kong": container(running=False)})
    res = only(doctor(tmp_path, runner, ports={port: "kong"}).check_ports())
    assert res["status"] == d.FAIL
    assert res["message"] == "held by container supabase_kong_demo, not paycraft_kong."
    assert res["fix"].startswith("docker stop supabase_kong_demo (often a stale Supabase CLI stack: supabase stop)")


def test_port_published_by_its_own_container_is_ok_and_a_free_port_names_the_stopped_container(tmp_path):
    port, other = free_port(), free_port()
    runner = Docker(ps={port: ["paycraft_db"]},
                    containers={"paycraft_dashboard": container(running=False, exit_code=137)})
    ok, stopped = doctor(tmp_path, runner, ports={port: "db", other: "dashboard"}).check_ports()
    assert ok["status"] == d.OK and ok["message"] == "published by paycraft_db."
    assert stopped["status"] == d.FAIL
    assert stopped["message"] == "free; paycraft_dashboard is exited (exit code 137, stopped 30 s ago)."


# ------------------------------------------------------------------ postgres


@pytest.fixture
def db_logs():
    return (INPUTS / "db-password-failed.log").read_text()


def test_changed_password_is_found_by_logging_in_and_in_the_logs(tmp_path, pg, db_logs):
    env = write_env(tmp_path / "paycraft.env", PAYCRAFT_DB_PASSWORD="changed-after-the-volume-1234")
    runner = Docker(containers={"paycraft_db": container()}, logs={"paycraft_db": db_logs})
    res = only(doctor(tmp_path, runner, env_file=str(env), db_host=pg.host, db_port=pg.port).check_postgres())
    assert res["status"] == d.FAIL
    assert "refuses PAYCRAFT_DB_PASSWORD" in res["message"]
    assert "'password authentication failed' (postgres x1, supabase_auth_admin x1)" in res["message"]
    assert "the password changed after the paycraft-db volume was created" in res["message"]
    assert "docker volume rm selfhost_paycraft-db" in res["fix"] and "backup" in res["fix"]
    assert "changed-after" not in d.line(res)


def test_right_password_is_ok(tmp_path, pg):
    env = write_env(tmp_path / "paycraft.env", PAYCRAFT_DB_PASSWORD=pg.password)
    runner = Docker(containers={"paycraft_db": container()}, logs={"paycraft_db": ""})
    res = only(doctor(tmp_path, runner, env_file=str(env), db_host=pg.host, db_port=pg.port).check_postgres())
    assert res["status"] == d.OK, res
    assert res["message"] == "paycraft_db logs in with the env file's password (running (up 10 min))."


def test_restarting_on_a_foreign_volume_quotes_the_log(tmp_path):
    runner = Docker(containers={"paycraft_db": container(running=True, status="restarting", restarts=7,
                                                          exit_code=2)},
                    logs={"paycraft_db": (INPUTS / "db-foreign-volume.log").read_text()})
    port = free_port()
    res = only(doctor(tmp_path, runner, db_port=port).check_postgres())
    assert res["status"] == d.FAIL
    assert res["message"].startswith("paycraft_db is restarting (exit code 2, 7 restart(s)).")
    assert 'could not access the server configuration file "/var/lib/postgresql/data/postgresql.conf"' \
        in res["message"]
    assert res["fix"].startswith("the volume selfhost_paycraft-db holds a data directory this Postgres cannot use")


# ------------------------------------------------------------------ migrations "could not connect"


def test_could_not_connect_on_a_closed_port(tmp_path):
    port = free_port()

    def exec_(argv):
        assert argv[2:] == ["paycraft_db", "pg_isready", "-U", "postgres"]
        return 2, "/var/run/postgresql:5432 - no response\n", ""

    runner = Docker(exec_=exec_, logs={"paycraft_db": "2026-11-29 02:06:21.984 UTC [1] LOG:  database system "
                                       "is shut down\n"})
    res = only(doctor(tmp_path, runner, db_port=port).check_migrations_connect())
    assert res["status"] == d.FAIL
    assert res["message"].startswith(f"Postgres on 127.0.0.1:{port}: no response (")
    assert "inside paycraft_db: /var/run/postgresql:5432 - no response" in res["message"]
    assert res["fix"].startswith("wait 30 seconds and retry ./migrations-bootstrap.sh")


def test_accepting_connections_is_ok(tmp_path, pg):
    res = only(doctor(tmp_path, Docker(), db_host=pg.host, db_port=pg.port).check_migrations_connect())
    assert res["status"] == d.OK


# ------------------------------------------------------------------ config function


def release(tmp_path, with_config=True):
    functions = tmp_path / "release" / "supabase" / "functions"
    (functions / "main").mkdir(parents=True)
    (functions / "main" / "index.ts").write_text("// main\n")
    if with_config:
        (functions / "config").mkdir()
        (functions / "config" / "index.ts").write_text('import { suiteConfig } from "./suite_config.ts";\n')
    (tmp_path / "release" / "infra" / "selfhost").mkdir(parents=True)
    return functions


def test_config_function_missing_on_disk(tmp_path):
    functions = release(tmp_path, with_config=False)
    res = only(doctor(tmp_path, Docker()).check_config_function())
    assert res["status"] == d.FAIL
    assert res["message"].startswith(f"the config function is not on disk: {functions}/config/index.ts is missing")
    assert "git pull && ./migrations-bootstrap.sh" in res["fix"]


def test_config_function_import_error_comes_from_the_runtime_log(tmp_path):
    release(tmp_path)
    runner = Docker(containers={"paycraft_edge_runtime": container()},
                    logs={"paycraft_edge_runtime": (INPUTS / "edge-runtime-import-error.log").read_text()})
    dr = d.Doctor({"selfhost_dir": str(tmp_path / "release" / "infra" / "selfhost")}, runner, now=lambda: NOW,
                  http=lambda url, timeout: (500, '{"msg":"worker boot error: /home/deno/functions/config exited '
                                                  'before it served requests (see the log above)"}'))
    res = only(dr.check_config_function())
    assert res["status"] == d.FAIL
    assert "the runtime failed to import it; its log: worker boot error: /home/deno/functions/config: Module not " \
           'found "file:///home/deno/functions/config/suite_config.ts".' in res["message"]


def test_config_function_answering_is_ok_and_a_stopped_runtime_is_named(tmp_path):
    release(tmp_path)
    sh = str(tmp_path / "release" / "infra" / "selfhost")
    up = Docker(containers={"paycraft_edge_runtime": container()})
    ok = only(d.Doctor({"selfhost_dir": sh}, up, now=lambda: NOW,
                       http=lambda url, t: (400, '{"error":"missing_apiKey"}')).check_config_function())
    assert ok["status"] == d.OK and ok["message"].endswith("answers 400 (the function runs).")
    down = Docker(containers={"paycraft_edge_runtime": container(running=False, exit_code=1)},
                  logs={"paycraft_edge_runtime": (INPUTS / "edge-runtime-import-error.log").read_text()})
    res = only(d.Doctor({"selfhost_dir": sh}, down, now=lambda: NOW).check_config_function())
    assert res["status"] == d.FAIL
    assert res["message"].startswith("paycraft_edge_runtime is exited (exit code 1, stopped 30 s ago); its log: ")
    assert "docker compose up -d edge-runtime" in res["fix"]


# ------------------------------------------------------------------ dashboard npm install


def test_npm_install_processes_from_docker_top():
    top = (INPUTS / "dashboard-top-npm-install.txt").read_text()
    assert d.npm_install_processes(top) == [(5200, "npm install")]
    assert d.npm_install_processes("PID COMMAND\n4611 node /usr/bin/npm run build\n") == []
    assert d.npm_install_processes("PID COMMAND\n12 node /usr/bin/npm install --no-audit\n") == \
        [(12, "node /usr/bin/npm install --no-audit")]


@pytest.mark.parametrize(("age", "status"), [(600, d.FAIL), (60, d.WARN)])
def test_dashboard_at_npm_install(tmp_path, age, status):
    port = free_port()  # nothing listens: the dashboard does not answer, for real
    runner = Docker(containers={"paycraft_dashboard": container(started_ago=age)},
                    top={"paycraft_dashboard": (INPUTS / "dashboard-top-npm-install.txt").read_text()})
    res = only(doctor(tmp_path, runner, ports={port: "dashboard"}, timeout=1).check_dashboard_npm())
    assert res["status"] == status
    if status == d.FAIL:
        assert res["message"] == (f"paycraft_dashboard has sat at npm install for 10 min (npm install, pid 5200); "
                                  f"nothing answers on port {port}.")
        assert res["fix"].endswith("dashboard && npm install --no-audit --no-fund; then docker compose up -d "
                                   "dashboard (the mounted node_modules is reused).")
    else:
        assert "runs npm install since 60 s (pid 5200)" in res["message"]


# ------------------------------------------------------------------ anon key / 401


SECRET = "a-jwt-secret-of-the-stack-0123456789abcdef"


def keyed_env(tmp_path, anon=None, secret=SECRET):
    anon = anon or k.make_role_key("anon", secret, now=int(NOW))
    service = k.make_role_key("service_role", secret, now=int(NOW))
    return write_env(tmp_path / "paycraft.env", PAYCRAFT_JWT_SECRET=SECRET, PAYCRAFT_ANON_KEY=anon,
                     PAYCRAFT_SERVICE_ROLE_KEY=service), anon


def test_anon_key_signed_by_the_secret_and_used_by_the_containers_is_ok(tmp_path):
    env, anon = keyed_env(tmp_path)
    runner = Docker(containers={"paycraft_kong": container(env={"SUPABASE_ANON_KEY": anon}),
                                "paycraft_auth": container(env={"GOTRUE_JWT_SECRET": SECRET})})
    res = only(doctor(tmp_path, runner, env_file=str(env), sdk_anon_key=anon).check_anon_key())
    assert res["status"] == d.OK, res


def test_anon_key_signed_by_another_secret(tmp_path):
    env, _ = keyed_env(tmp_path, anon=k.make_role_key("anon", "another-secret-0123456789abcdef", now=int(NOW)))
    res = only(doctor(tmp_path, Docker(), env_file=str(env)).check_anon_key())
    assert res["status"] == d.FAIL
    assert res["message"].startswith("PAYCRAFT_ANON_KEY is not signed by PAYCRAFT_JWT_SECRET (the JWT secret "
                                     "changed after the key was generated)")
    assert "paycraft_config_resign_keys=true" in res["fix"] and "./generate-keys.sh" in res["fix"]
    assert SECRET not in d.line(res)


def test_sdk_key_with_a_trailing_newline_and_stale_containers(tmp_path):
    env, anon = keyed_env(tmp_path)
    res = only(doctor(tmp_path, Docker(), env_file=str(env), sdk_anon_key=anon + "\n").check_anon_key())
    assert res["status"] == d.FAIL
    assert res["message"].endswith("differs only by surrounding whitespace (a trailing newline).")
    assert anon not in d.line(res)
    old = Docker(containers={"paycraft_kong": container(env={"SUPABASE_ANON_KEY": "an.older.key"})})
    stale = only(doctor(tmp_path, old, env_file=str(env)).check_anon_key())
    assert stale["status"] == d.FAIL
    assert stale["message"].startswith("paycraft_kong runs with another PAYCRAFT_ANON_KEY (SUPABASE_ANON_KEY)")


# ------------------------------------------------------------------ tenant on signup


# The two ways a release makes a tenant, as migrations written here (the reference release moves on: these
# stay). The older reference shape: a signup trigger. PayCraft's (018 tenant_admins, 023/039
# provision_tenant, 048 provision_app, each granted to authenticated): RPCs the dashboard calls, no trigger.
TRIGGER_SHAPE = {
    "030_create_tenants_trigger.sql": """
CREATE TABLE public.tenants (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner uuid);
CREATE OR REPLACE FUNCTION public.handle_new_user_tenancy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.tenants (owner) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER on_auth_user_created_tenancy AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user_tenancy();
""",
}
RPC_SHAPE = {
    "014_tenants.sql": """
CREATE TABLE public.tenants (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text,
  api_key_test text UNIQUE, api_key_live text UNIQUE);
""",
    "018_dashboard_auth.sql": """
CREATE TABLE IF NOT EXISTS public.tenant_admins (tenant_id uuid REFERENCES public.tenants (id), user_id uuid,
  role text, UNIQUE (tenant_id, user_id));
""",
    "023_tenant_provisioning.sql": """
CREATE OR REPLACE FUNCTION public.provision_tenant(p_user_id uuid, p_app_name text, p_email text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN RETURN '{}'::jsonb; END $$;
REVOKE ALL ON FUNCTION public.provision_tenant(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.provision_tenant(uuid, text, text) TO authenticated;
""",
    "048_multi_app_tenant_admins.sql": """
CREATE OR REPLACE FUNCTION provision_app(p_app_name TEXT)
RETURNS JSONB LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN RETURN '{}'::jsonb; END $$;
REVOKE ALL ON FUNCTION provision_app(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION provision_app(TEXT) TO authenticated;
""",
}


@pytest.fixture
def tenancy_db(pg_db, tmp_path):
    """A database with auth.users and the ledger; ``apply(shape)`` writes the shape's migrations into a directory
    (returned), applies them with psql and records them in the ledger, as migrations-bootstrap.sh does."""
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    env = {**os.environ, "PGPASSWORD": pg_db["password"]}
    base = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg_db["host"], "-p", str(pg_db["port"]),
            "-U", pg_db["user"], "-d", pg_db["dbname"]]
    subprocess.run([*base, "-c", "CREATE SCHEMA auth; CREATE TABLE auth.users (id uuid PRIMARY KEY, email text, "
                    "raw_user_meta_data jsonb);"
                    "DO $$ BEGIN CREATE ROLE anon; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
                    "DO $$ BEGIN CREATE ROLE authenticated; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
                    "CREATE EXTENSION IF NOT EXISTS pgcrypto;"
                    "CREATE TABLE _paycraft_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL "
                    "DEFAULT now());"],
                   env=env, check=True, capture_output=True)

    def apply(shape):
        mdir = tmp_path / "migrations"
        mdir.mkdir(exist_ok=True)
        for name, sql in shape.items():
            (mdir / name).write_text(sql)
            proc = subprocess.run([*base, "-1", "-f", str(mdir / name)], env=env, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            subprocess.run([*base, "-c", f"INSERT INTO _paycraft_migrations(version) VALUES ('{name[:-4]}')"],
                           env=env, check=True, capture_output=True)
        return str(mdir)

    def exec_(argv):
        # `docker exec paycraft_db psql -U postgres -d postgres ARGS` -> the same psql ARGS on the test database
        assert argv[2:4] == ["paycraft_db", "psql"]
        rest = argv[argv.index("-d") + 2:]
        p = subprocess.run([*base[:-4], "-U", pg_db["user"], "-d", pg_db["dbname"], *rest], env=env,
                           capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    return {"exec": exec_, "apply": apply,
            "psql": lambda sql: subprocess.run([*base, "-c", sql], env=env, check=True, capture_output=True)}


def test_tenant_trigger_ok_then_dropped_then_ledger_row_deleted(tmp_path, tenancy_db):
    runner = Docker(containers={"paycraft_db": container()}, exec_=tenancy_db["exec"])
    mdir = tenancy_db["apply"](TRIGGER_SHAPE)

    def check():
        return only(doctor(tmp_path, runner, migrations_dir=mdir).check_tenant_trigger())

    assert check()["status"] == d.OK
    tenancy_db["psql"]("DROP TRIGGER on_auth_user_created_tenancy ON auth.users")
    dropped = check()
    assert dropped["status"] == d.FAIL
    assert dropped["message"] == ("030_create_tenants_trigger is in _paycraft_migrations, but auth.users has no "
                                  "enabled trigger calling handle_new_user_tenancy(): it was dropped after the "
                                  "migration ran.")
    tenancy_db["psql"]("DELETE FROM _paycraft_migrations WHERE version = '030_create_tenants_trigger'")
    gone = check()
    assert gone["status"] == d.FAIL
    assert gone["message"] == ("030_create_tenants_trigger is not in _paycraft_migrations; auth.users has no "
                               "trigger calling handle_new_user_tenancy() either.")
    assert gone["fix"].startswith("re-run ./migrations-bootstrap.sh")


def test_paycraft_s_provisioning_rpcs_are_green_without_a_signup_trigger(tmp_path, tenancy_db):
    """Real PayCraft has no signup trigger: the runbook's stale entry must not make the check fail."""
    runner = Docker(containers={"paycraft_db": container()}, exec_=tenancy_db["exec"])
    mdir = tenancy_db["apply"](RPC_SHAPE)

    def check():
        return only(doctor(tmp_path, runner, migrations_dir=mdir).check_tenant_trigger())

    res = check()
    assert res["status"] == d.OK, res
    assert res["message"].startswith("this release makes tenants through provision_app() and provision_tenant() "
                                     "(migrations 018_dashboard_auth, 023_tenant_provisioning, "
                                     "048_multi_app_tenant_admins in _paycraft_migrations)")
    assert "No signup trigger is expected" in res["message"]

    # a revoked grant: a signed-in user gets no tenant
    tenancy_db["psql"]("REVOKE EXECUTE ON FUNCTION provision_app(text) FROM authenticated")
    revoked = check()
    assert revoked["status"] == d.FAIL
    assert revoked["message"].startswith("provision_app() exists in paycraft_db but the role authenticated may not")
    assert "GRANT EXECUTE ON FUNCTION public.provision_app TO authenticated" in revoked["fix"]
    tenancy_db["psql"]("GRANT EXECUTE ON FUNCTION provision_app(text) TO authenticated")

    # the function gone and its migration out of the ledger (a restore of an older dump)
    tenancy_db["psql"]("DROP FUNCTION provision_app(text); "
                       "DELETE FROM _paycraft_migrations WHERE version = '048_multi_app_tenant_admins'")
    gone = check()
    assert gone["status"] == d.FAIL
    assert gone["message"].endswith("but provision_app() missing in paycraft_db; 048_multi_app_tenant_admins not "
                                    "in _paycraft_migrations.")
    assert gone["fix"].startswith("re-run ./migrations-bootstrap.sh")
    assert "trigger" not in gone["message"] + gone["fix"]


def test_a_release_with_neither_fails_with_the_fix(tmp_path):
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    (mdir / "001_subscriptions.sql").write_text("CREATE TABLE subscriptions (id int);\n")
    res = only(doctor(tmp_path, Docker(), migrations_dir=str(mdir)).check_tenant_trigger())
    assert res["status"] == d.FAIL
    assert "neither the signup trigger's handle_new_user_tenancy() nor a provisioning RPC" in res["message"]
    assert "upgrade.yml" in res["fix"]


def test_the_tenancy_objects_are_found_in_paycraft_s_spellings(tmp_path):
    mdir = tmp_path / "m"
    mdir.mkdir()
    (mdir / "018_a.sql").write_text("CREATE TABLE IF NOT EXISTS public.tenant_admins (id uuid);")
    (mdir / "039_b.sql").write_text("CREATE OR REPLACE FUNCTION provision_tenant(\n  p_user_id UUID)")
    (mdir / "048_c.sql").write_text('create function public."provision_app"(p_app_name text)')
    (mdir / "049_d.sql").write_text("-- calls provision_app(...) but creates nothing")
    owners = doctor(tmp_path, Docker())._tenancy_owners(str(mdir), sorted(p.name for p in mdir.iterdir()))
    assert owners == {"tenant_admins": "018_a", "provision_tenant": "039_b", "provision_app": "048_c"}


def test_another_server_on_the_gateway_port_is_not_blamed_on_the_runtime(tmp_path):
    """A real HTTP server (python -m http.server's handler) answers the probe in Kong's place."""
    import functools
    import http.server
    import threading

    release(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runner = Docker(containers={"paycraft_edge_runtime": container()})
        res = only(doctor(tmp_path, runner, api_url=f"http://127.0.0.1:{server.server_port}").check_config_function())
    finally:
        server.shutdown()
        server.server_close()
    assert res["status"] == d.FAIL
    assert res["message"].startswith("GET /functions/v1/config answers 404 <!DOCTYPE HTML> <html lang=\"en\">")
    assert res["message"].endswith("not the gateway's or the runtime's answer: something else holds the gateway's "
                                   "port.")
    assert "\n" not in d.line(res)


def test_a_function_that_loads_but_fails_is_not_called_an_import_error(tmp_path):
    """Answer and log line as the integration run saw them with PAYCRAFT_DB_PASSWORD changed."""
    release(tmp_path)
    log = ('config: get_suite_config failed: 503 {"code":"PGRST000","details":"connection to server at \\"db\\" '
           '(172.18.0.2), port 5432 failed: FATAL:  password authentication failed for user \\"authenticator\\"\\n",'
           '"hint":null,"message":"Database connection error. Retrying the connection."}\n')
    runner = Docker(containers={"paycraft_edge_runtime": container()}, logs={"paycraft_edge_runtime": log})
    dr = d.Doctor({"selfhost_dir": str(tmp_path / "release" / "infra" / "selfhost")}, runner, now=lambda: NOW,
                  http=lambda url, t: (502, '{"error":"upstream_error","status":503,"code":"PGRST000"}'))
    res = only(dr.check_config_function())
    assert res["status"] == d.FAIL
    assert res["message"].startswith('GET /functions/v1/config answers 502 {"error":"upstream_error","status":503,'
                                     '"code":"PGRST000"}: the function loads but fails; its log: config: '
                                     "get_suite_config failed: 503")
    assert "import" not in res["message"]
    assert res["fix"].endswith("see the postgres line.")


def test_a_service_role_key_in_the_anon_slot(tmp_path):
    service = k.make_role_key("service_role", SECRET, now=int(NOW))
    env, _ = keyed_env(tmp_path, anon=service)
    res = only(doctor(tmp_path, Docker(), env_file=str(env)).check_anon_key())
    assert res["status"] == d.FAIL
    assert res["message"].startswith("PAYCRAFT_ANON_KEY is a service_role key, not anon")
