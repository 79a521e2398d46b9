"""v1.2.0-upstream-shape: PayCraft's own current release, defects included.

Following the runbook on it by hand, an operator meets three defects:

1. ``server/migrations`` is a symlink to ``../supabase/migrations``, which the
   release does not contain: ``./migrations-bootstrap.sh`` reports
   ``0 applied`` and success, and the database stays empty.
2. There is no ``supabase/functions/main``: the edge runtime exits with
   ``main service not found`` and keeps restarting.
3. ``kong.yml`` routes ``/rest/v1/`` to ``http://db:3000/``, where nothing
   listens (the compose file has no PostgREST service): Kong answers 502.

The stack runs under the runbook's names inside a disposable Docker-in-Docker
host (``dind_host``), never on the controller's engine.
"""

from __future__ import annotations

import re

import pytest
import yaml
from conftest_release import (  # noqa: F401 - fixtures
    CONTAINERS,
    clone_release,
    compose,
    container_state,
    docker,
    fixture_images,
    fixture_origin,
    fixture_ref_host,
    fixture_supa_db,
    http,
    logs,
    migrations_bootstrap,
    run,
    runbook_stack,
    summary,
    wait_http,
    write_env,
)
from paycraft_testlib import wait_for

TAG = "v1.2.0-upstream-shape"


@pytest.fixture
def checkout(origin, tmp_path):
    return clone_release(origin, tmp_path / "paycraft", TAG)


def test_the_three_defects_are_in_the_tree(checkout):
    migrations = checkout / "server" / "migrations"
    assert migrations.is_symlink()
    assert str(migrations.readlink()) == "../supabase/migrations"
    assert not migrations.exists(), "the symlink must dangle, as upstream's does"
    assert not (checkout / "supabase" / "migrations").exists()

    functions = checkout / "supabase" / "functions"
    assert (functions / "config" / "index.ts").is_file()
    assert not (functions / "main").exists()

    selfhost = checkout / "infra" / "selfhost"
    compose_file = yaml.safe_load((selfhost / "docker-compose.yaml").read_text())
    assert "rest" not in compose_file["services"]
    assert set(compose_file["services"]) == {"db", "auth", "kong", "edge-runtime", "dashboard"}
    kong = yaml.safe_load((selfhost / "kong.yml").read_text())
    rest = next(s for s in kong["services"] if s["name"] == "rest-v1")
    assert rest["url"] == "http://db:3000/"
    assert "add a `rest` service" in (selfhost / "kong.yml").read_text()


@pytest.mark.postgres
def test_defect_1_bootstrap_reports_success_on_nothing(checkout, supa_db):
    import psycopg2

    proc = migrations_bootstrap(checkout / "infra" / "selfhost", supa_db)
    assert proc.returncode == 0
    assert summary(proc.stdout) == (0, 0)
    assert "apply " not in proc.stdout
    with psycopg2.connect(**supa_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.tenants'), to_regclass('public.tenant_admins'), "
                    "(SELECT count(*) FROM _paycraft_migrations)")
        assert cur.fetchone() == (None, None, 0)


# --- by hand on Docker ----------------------------------------------------


@pytest.fixture(scope="module")
def upstream_stack(ref_host, origin, tmp_path_factory):
    with runbook_stack(ref_host, origin, tmp_path_factory.mktemp("upstream"), TAG, check_bootstrap=False) as up:
        yield up


def psql(stack, sql: str) -> str:
    return docker(stack["host"], "exec", CONTAINERS["db"], "psql", "-U", "postgres", "-tAc", sql).stdout.strip()


@pytest.mark.docker
def test_stack_defect_1_zero_migrations_and_an_empty_database(upstream_stack):
    boot = upstream_stack["bootstrap"]
    assert boot.returncode == 0, boot.stderr
    assert summary(boot.stdout) == (0, 0)
    assert psql(upstream_stack, "SELECT to_regclass('public.tenants') IS NULL "
                                "AND to_regprocedure('public.provision_app(text)') IS NULL") == "t"
    assert psql(upstream_stack, "SELECT count(*) FROM _paycraft_migrations") == "0"


@pytest.mark.docker
def test_stack_defect_2_edge_runtime_has_no_main_service(upstream_stack):
    name = CONTAINERS["edge-runtime"]
    host = upstream_stack["host"]

    def failed():
        state = container_state(host, name)
        restarted = state.get("Restarting") or (not state.get("Running") and state.get("ExitCode", 0) != 0)
        return restarted and "main service not found" in logs(host, name)

    wait_for(failed, timeout=120, what=f"{name} to exit with 'main service not found'")
    assert re.search(r"main service not found: /home/deno/functions/main", logs(host, name))
    r = wait_http(f"{upstream_stack['api']}/functions/v1/config?apiKey=pk_test_local", ok=lambda r: r.status >= 500,
                  timeout=30)
    assert r.status in (502, 503), r.text


@pytest.mark.docker
def test_stack_defect_3_rest_route_points_at_nothing(upstream_stack):
    anon = upstream_stack["env"]["PAYCRAFT_ANON_KEY"]
    api = upstream_stack["api"]
    wait_http(f"{api}/auth/v1/health", ok=lambda r: r.status == 200, timeout=60, what="auth behind Kong")
    r = http("GET", f"{api}/rest/v1/tenants?select=id", headers={"apikey": anon, "Authorization": f"Bearer {anon}"})
    assert r.status == 502, r.text
    assert r.json_body == {"message": "An invalid response was received from the upstream server"}
    names = docker(upstream_stack["host"], "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert CONTAINERS["rest"] not in names
