"""playbooks/doctor.yml on a live stack, faults injected for real, one at a time.

One disposable Docker-in-Docker host (named ``paycraft-pytest-doctor-*``) runs the reference release
v1.0.0 brought up by hand as the runbook's section 2 says (tests/integration/reference/conftest_release.py).
The doctor runs through Ansible on that host (``community.docker.docker`` connection), as an operator
runs it: its module reads the host's own /proc, docker engine, files and ports.

Sequence: healthy (in --check mode: all OK) -> a process holds 54321 -> the config function removed
from disk -> the config function fails to import -> PAYCRAFT_DB_PASSWORD changed after the volume was
created -> an anon key signed by another secret -> Postgres stopped -> the ledger row of 030 deleted
and the tenancy trigger dropped -> everything restored: all OK again. Each fault is named by its check
with the runbook's fix.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paycraft_testlib import missing, wait_for

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "integration" / "reference"))

from conftest_release import (  # noqa: E402
    API_PORT,
    CONTAINERS,
    DASHBOARD_PORT,
    DB_PORT,
    SERVICES,
    compose,
    container_state,
    docker,
    http,
    logs,
    make_release,
    migrations_bootstrap,
    missing_images,
    runbook_stack,
    wait_http,
)

pytestmark = pytest.mark.docker
PLAYBOOK = REPO / "playbooks" / "doctor.yml"
# The pid of the http.server this test starts on the host, from its /proc.
FIND_PID = ("import os\nfor p in os.listdir('/proc'):\n  if p.isdigit():\n    try: a = open(f'/proc/{p}/cmdline', 'rb')"
            ".read().split(b'\\0')\n    except OSError: continue\n    if b'http.server' in a: print(p)")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The stack up on a DinD host of its own; yields the stack dict plus ``doctor(check=False)``."""
    from paycraft_dind import DindHost, _controller_env, prerequisites

    prerequisites()
    if shutil.which("ansible-playbook") is None:
        missing("ansible-playbook")
    absent = missing_images()
    if absent:
        missing(f"the reference images {absent} (reference/build-images.sh)")
    base = tmp_path_factory.getbasetemp()
    origin = tmp_path_factory.mktemp("doctor-release") / "paycraft.git"
    make_release(origin)
    with DindHost(base, name=f"paycraft-pytest-doctor-{secrets.token_hex(3)}") as host:
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        root = tmp_path_factory.mktemp("doctor-stack")
        with runbook_stack(host, origin, root, "v1.0.0") as stack:
            wait_http(host.url(DASHBOARD_PORT) + "/", timeout=300, what="the dashboard")
            selfhost = stack["selfhost"]
            inventory = root / "inventory.yml"
            inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: {
                "ansible_connection": "community.docker.docker",
                "ansible_python_interpreter": "/usr/bin/python3",
                "paycraft_env_file": str(selfhost / ".env"),
                "paycraft_selfhost_dir": str(selfhost),
                "paycraft_migrations_dir": str(selfhost.parent.parent / "server" / "migrations"),
            }}}}))

            def doctor(*extra):
                env = {**_controller_env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                       "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")}
                proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(PLAYBOOK), *extra],
                                      env=env, capture_output=True, text=True, timeout=600)
                try:
                    report = json.loads(proc.stdout)
                except ValueError:
                    raise AssertionError(f"doctor.yml exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}") \
                        from None
                task = next(t for t in report["plays"][0]["tasks"]
                            if "Runbook section 7" in t["task"]["name"])
                res = task["hosts"][host.name]
                assert "results" in res, f"the doctor module failed: {res.get('msg')}\n{proc.stderr[-2000:]}"
                return proc.returncode, res

            stack["doctor"] = doctor
            yield stack


def failing(res) -> dict:
    """{check or 'check subject': line} of the FAIL lines (printed: the report an operator sees, with -s)."""
    out = {}
    for r, text in zip(res["results"], res["lines"], strict=True):
        if r["status"] == "fail":
            out[(r["check"] + " " + r["subject"]).strip()] = text
            print(text)
    return out


def assert_all_ok(rc, res):
    assert rc == 0, res["lines"]
    assert [r for r in res["results"] if r["status"] != "ok"] == [], "\n".join(res["lines"])
    assert len(res["results"]) == 9  # 3 ports + 6 checks


def test_doctor_names_each_fault_and_reports_ok_when_healthy(live):
    host, selfhost, doctor = live["host"], live["selfhost"], live["doctor"]
    env_file = selfhost / ".env"
    env_text = env_file.read_text()

    # --- healthy, in check mode: every line OK, nothing changed
    rc, res = doctor("--check")
    assert_all_ok(rc, res)
    assert res["changed"] is False
    # the reference release makes tenants as PayCraft does (provision_app, provision_tenant): green, no trigger asked
    tenancy = next(line for line in res["lines"] if line.startswith("OK   tenant_trigger"))
    assert "this release makes tenants through provision_app() and provision_tenant()" in tenancy, tenancy
    print("\n".join(res["lines"]))

    # --- Port already in use: kong stopped, a process listens on 54321 in its place
    compose(host, selfhost, "stop", "kong")
    subprocess.run(["docker", "exec", "-d", host.name, "python3", "-m", "http.server", str(API_PORT)], check=True)
    wait_for(lambda: subprocess.run(["docker", "exec", host.name, "python3", "-c",
                                     f"import socket; socket.create_connection(('127.0.0.1', {API_PORT}), 1)"],
                                    capture_output=True).returncode == 0, timeout=30, what="http.server on 54321")
    pid = subprocess.run(["docker", "exec", host.name, "python3", "-c", FIND_PID], capture_output=True, text=True,
                         check=True).stdout.strip()
    rc, res = doctor()
    bad = failing(res)
    assert rc == 2
    assert re.search(rf"FAIL ports 54321: held by process python3 \(pid {pid}: \S*python3 -m http.server "
                     rf"{API_PORT}\), not paycraft_kong\. Fix: kill {pid} or stop it, or rebind PayCraft's port "
                     r"in docker-compose.yaml \(kong.ports\[0\]\)", bad["ports 54321"]), bad["ports 54321"]
    assert bad["ports 54321"].endswith("(runbook section 7, 'Port already in use')")
    subprocess.run(["docker", "exec", host.name, "python3", "-c", f"import os; os.kill({pid}, 15)"], check=True)
    compose(host, selfhost, "start", "kong")

    # --- /functions/v1/config 404: the function missing on disk
    config = selfhost.parent.parent / "supabase" / "functions" / "config"
    parked = config.with_name("config.parked")
    config.rename(parked)
    try:
        rc, res = doctor()
    finally:
        parked.rename(config)
    bad = failing(res)
    assert list(bad) == ["config_function"], bad
    assert f"the config function is not on disk: {config}/index.ts is missing" in bad["config_function"]
    assert "git pull && ./migrations-bootstrap.sh" in bad["config_function"]

    # --- ... or the runtime's import error, from its log
    index = config / "index.ts"
    original = index.read_text()
    index.write_text('import { suiteConfig } from "./suite_config.ts";\n' + original)
    compose(host, selfhost, "restart", "edge-runtime")
    try:
        wait_for(lambda: "listening" in logs(host, CONTAINERS["edge-runtime"], 5), timeout=60, what="edge runtime")
        rc, res = doctor()
    finally:
        index.write_text(original)
        compose(host, selfhost, "restart", "edge-runtime")
    bad = failing(res)
    assert list(bad) == ["config_function"], bad
    assert ("the runtime failed to import it; its log: worker boot error: /home/deno/functions/config: Module not "
            'found "file:///home/deno/functions/config/suite_config.ts"') in bad["config_function"]

    # --- Postgres: PAYCRAFT_DB_PASSWORD changed after the volume was created, the stack re-upped with it
    old = re.search(r"^PAYCRAFT_DB_PASSWORD=(.*)$", env_text, re.M).group(1)
    env_file.write_text(env_text.replace(f"PAYCRAFT_DB_PASSWORD={old}", "PAYCRAFT_DB_PASSWORD=rotated" + "x" * 24))
    compose(host, selfhost, "up", "-d")

    def refused():
        # auth and rest connect on demand: a SuiteConfig request makes rest log in with the new password
        http("GET", f"{live['api']}/functions/v1/config?apiKey=x", timeout=10)
        return "password authentication failed" in logs(host, CONTAINERS["db"])

    wait_for(refused, timeout=120, interval=2, what="the refused logins of rest in the db log")
    rc, res = doctor()
    bad = failing(res)
    assert "postgres" in bad, res["lines"]
    assert re.search(r"FAIL postgres: Postgres refuses PAYCRAFT_DB_PASSWORD of \S+ for user postgres; docker logs "
                     r"paycraft_db shows 'password authentication failed' \([^)]*authenticator x\d+[^)]*\): "
                     r"the password changed after the paycraft-db volume was created\. Fix: put the password the "
                     r"volume was created with back into the env file, or take a backup first, then docker compose "
                     r"down; docker volume rm selfhost_paycraft-db; docker compose up -d db", bad["postgres"])
    # the SuiteConfig is never blamed on an import: rest cannot log in. The config function, as PayCraft's, answers
    # 401 invalid_apiKey for any failure of resolve_tenant, so the config_function check may see no failure at all
    assert "failed to import" not in bad.get("config_function", ""), bad
    assert "rotated" not in "\n".join(res["lines"]) and old not in "\n".join(res["lines"])
    env_file.write_text(env_text)
    compose(host, selfhost, "up", "-d")
    wait_http(f"{live['api']}/auth/v1/health", ok=lambda r: r.status == 200, timeout=120, what="auth again")

    # --- 401: the anon key signed by another secret
    from ansible_collections.paycraft.selfhost.plugins.module_utils import keys

    anon = re.search(r"^PAYCRAFT_ANON_KEY=(.*)$", env_text, re.M).group(1)
    env_file.write_text(env_text.replace(anon, keys.make_role_key("anon", secrets.token_urlsafe(32))))
    try:
        rc, res = doctor()
    finally:
        env_file.write_text(env_text)
    bad = failing(res)
    assert list(bad) == ["anon_key"], bad
    assert "PAYCRAFT_ANON_KEY is not signed by PAYCRAFT_JWT_SECRET (the JWT secret changed after the key " \
           "was generated)" in bad["anon_key"]
    assert "paycraft_config_resign_keys=true" in bad["anon_key"]

    # --- migrations "could not connect": Postgres down
    compose(host, selfhost, "stop", "db")
    try:
        rc, res = doctor()
    finally:
        compose(host, selfhost, "start", "db")
    bad = failing(res)
    assert bad["migrations_connect"].startswith(f"FAIL migrations_connect: Postgres on 127.0.0.1:{DB_PORT}: no "
                                                "response ("), bad
    assert "Fix: wait 30 seconds and retry ./migrations-bootstrap.sh; if it persists: docker exec paycraft_db " \
           "pg_isready -U postgres" in bad["migrations_connect"]
    assert bad["postgres"].startswith("FAIL postgres: paycraft_db is exited ("), bad
    wait_for(lambda: container_state(host, CONTAINERS["db"]).get("Health", {}).get("Status") == "healthy",
             timeout=120, what="paycraft_db healthy again")

    # --- No tenant for a new user: the release makes tenants through provision_app (PayCraft's 048, no signup
    # trigger); a revoked grant, then the function dropped and its ledger row deleted
    def psql(sql):
        docker(host, "exec", CONTAINERS["db"], "psql", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
               "-c", sql)

    psql("REVOKE EXECUTE ON FUNCTION public.provision_app(text) FROM authenticated, PUBLIC")
    rc, res = doctor()
    bad = failing(res)
    assert list(bad) == ["tenant_trigger"], bad
    assert bad["tenant_trigger"].startswith(
        "FAIL tenant_trigger: provision_app() exists in paycraft_db but the role authenticated may not execute it"), bad
    psql("DELETE FROM _paycraft_migrations WHERE version = '048_multi_app_tenant_admins'; "
         "DROP FUNCTION public.provision_app(text)")
    rc, res = doctor()
    bad = failing(res)
    assert list(bad) == ["tenant_trigger"], bad
    assert "but provision_app() missing in paycraft_db; 048_multi_app_tenant_admins not in _paycraft_migrations." \
        in bad["tenant_trigger"], bad
    assert "Fix: re-run ./migrations-bootstrap.sh" in bad["tenant_trigger"]
    migrations_bootstrap(selfhost, host=host)

    # --- everything restored: all OK again (a normal run)
    wait_http(f"{live['api']}/functions/v1/config?apiKey=x", ok=lambda r: r.status < 500, timeout=120,
              what="the config function again")
    rc, res = doctor()
    assert_all_ok(rc, res)
