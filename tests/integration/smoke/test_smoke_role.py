"""The smoke role through a real ansible-playbook, against real HTTP servers and the real PostgreSQL fixture.

The gateway is ``TenantStack``: GoTrue's signup/token, PostgREST (tenant_admins/tenants, provision_app,
provision_tenant, or the older api_keys, by ``contract``) and the config function over one in-memory
"database" that the tests reset or restore behind the role's back. Asserted: the key is found through the
release's own contract and idempotently (an existing tenant first), the role says which contract it used,
and the saved smoke key is checked, not trusted. A refused key (api_key_unknown) makes the role sign in
again and re-provision it, or sign up again when the user is gone, then retry the probes once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from smoke_servers import ANON_KEY, Dashboard, TenantStack

REPO = Path(__file__).resolve().parents[3]
EMAIL = "smoke@paycraft-selfhost.invalid"


def tenant_stack(http_server, contract="api_keys"):
    gateway = http_server(type(f"TenantStack_{contract}", (TenantStack,), {"contract": contract}))
    gateway.server.db = {"users": {}, "keys": {}, "signups": 0}
    return gateway


@pytest.fixture
def stack(http_server):
    return tenant_stack(http_server)


def run_role(tmp_path, gateway, dashboard, pg, functions=("config", "main"), **extra):
    """Run the role; ``functions`` are the directories of the checkout's supabase/functions."""
    for name in functions:
        (tmp_path / "src" / "supabase" / "functions" / name).mkdir(parents=True, exist_ok=True)
    env_file = tmp_path / "paycraft.env"
    env_file.write_text(f"PAYCRAFT_DB_PASSWORD={pg.password}\n")
    env_file.chmod(0o600)
    role_vars = {
        "paycraft_config_dir": str(tmp_path),
        "paycraft_source_dest": str(tmp_path / "src"),
        "paycraft_env_file": str(env_file),
        "paycraft_smoke_credentials_file": str(tmp_path / "smoke-user.json"),
        "paycraft_smoke_api_url": gateway.url,
        "paycraft_smoke_dashboard_url": dashboard.url,
        "paycraft_smoke_db_host": pg.host,
        "paycraft_smoke_db_port": pg.port,
        "paycraft_smoke_anon_key": ANON_KEY,
        "paycraft_smoke_timeout": 5,
        **extra,
    }
    play = [{"name": "smoke", "hosts": "localhost", "gather_facts": False,
             "roles": [{"role": "paycraft.selfhost.smoke"}],
             # what the summaries of site.yml and upgrade.yml print for the release's webhook functions
             "post_tasks": [{"name": "urls", "ansible.builtin.copy": {
                 "content": "{{ paycraft_smoke_webhook_urls | default('undefined') | to_json }}",
                 "dest": str(tmp_path / "webhook-urls.json"), "mode": "0600"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "vars.json").write_text(json.dumps(role_vars))
    env = {**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def flat(output):
    """The output with the callback's line breaks undone."""
    return " ".join(output.split())


def saved(tmp_path):
    return json.loads((tmp_path / "smoke-user.json").read_text())


USED = {
    "provision_app": "found through provision_app(p_app_name), a new tenant for the smoke user",
    "provision_tenant": "found through provision_tenant(p_user_id, p_app_name, p_email)",
    "api_keys": "found through the key that the signup trigger put in public.api_keys (the older reference shape)",
}
EXISTING = "found through the existing tenant of the smoke user (tenant_admins -> tenants.api_key_test)"


@pytest.mark.postgres
@pytest.mark.parametrize("contract", ["provision_app", "provision_tenant", "api_keys"])
def test_first_run_provisions_then_a_refused_saved_key_is_reprovisioned(tmp_path, http_server, pg, contract):
    stack = tenant_stack(http_server, contract)
    dashboard = http_server(Dashboard)
    db = stack.server.db

    # 1. first run: sign up, find the key through the release's contract, save it, 5/5
    rc, output = run_role(tmp_path, stack, dashboard, pg)
    assert rc == 0, output[-4000:]
    assert "smoke: 5/5 probes passed" in output
    assert USED[contract] in flat(output), output[-4000:]
    first_key = saved(tmp_path)["api_key"]
    assert first_key == db["keys"][EMAIL] and db["signups"] == 1
    assert saved(tmp_path)["contract"] == contract
    assert db.get("created", 0) == (0 if contract == "api_keys" else 1)
    if contract != "api_keys":
        assert saved(tmp_path)["tenant_id"] == db["tenants"][EMAIL]
        assert saved(tmp_path)["webhook_pattern"] == "/functions/v1/<name>/<tenant_id>"

    # 1b. the key is lost from the file (the password is kept): the user's existing tenant is found, no new one
    credentials = saved(tmp_path)
    del credentials["api_key"]
    (tmp_path / "smoke-user.json").write_text(json.dumps(credentials))
    rc, output = run_role(tmp_path, stack, dashboard, pg)
    assert rc == 0, output[-4000:]
    assert saved(tmp_path)["api_key"] == first_key
    assert db.get("created", 0) == (0 if contract == "api_keys" else 1), "a second tenant was made"
    if contract != "api_keys":
        assert EXISTING in flat(output), output[-4000:]

    # 2. a restore gives the tenant another key: the saved key is refused, the role signs in and reads the new one
    db["keys"][EMAIL] = "pk_test_restored_key_0001"
    rc, output = run_role(tmp_path, stack, dashboard, pg, paycraft_smoke_use_saved_key=True)
    assert rc == 0, output[-4000:]
    assert "is unknown to the database" in output
    assert "smoke: 5/5 probes passed" in output
    assert saved(tmp_path)["api_key"] == "pk_test_restored_key_0001"
    assert db["signups"] == 1  # signed in, not signed up

    # 3. a reset: the user is gone; the role signs up again and the retry passes
    db["users"].clear()
    db["keys"].clear()
    db.get("tenants", {}).clear()
    rc, output = run_role(tmp_path, stack, dashboard, pg, paycraft_smoke_use_saved_key=True)
    assert rc == 0, output[-4000:]
    assert db["signups"] == 2
    assert saved(tmp_path)["api_key"] == db["keys"][EMAIL] != "pk_test_restored_key_0001"
    assert "smoke: 5/5 probes passed" in output
    for secret in (pg.password, db["keys"][EMAIL], first_key, saved(tmp_path)["password"]):
        assert secret not in output
    assert (tmp_path / "smoke-user.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.postgres
def test_a_release_with_no_tenancy_contract_stops_with_the_next_command(tmp_path, http_server, pg):
    stack = tenant_stack(http_server, "none")
    rc, output = run_role(tmp_path, stack, http_server(Dashboard), pg)
    assert rc != 0
    assert "has none of the tenancy contracts the smoke test knows" in flat(output), output[-4000:]
    assert "SELECT version FROM _paycraft_migrations" in flat(output)
    assert "Tenant not auto-created on first signup" not in output


@pytest.mark.postgres
def test_an_empty_api_keys_table_quotes_the_runbook_trigger_entry(tmp_path, http_server, pg):
    class _NoTrigger(TenantStack):
        contract = "api_keys"

        def _new_tenant(self, email):  # the trigger is gone: signup makes no tenant
            return None

    stack = http_server(_NoTrigger)
    stack.server.db = {"users": {}, "keys": {}, "signups": 0}
    rc, output = run_role(tmp_path, stack, http_server(Dashboard), pg)
    assert rc != 0
    assert "Tenant not auto-created on first signup" in flat(output), output[-4000:]
    assert "handle_new_user_tenancy()" in output


@pytest.mark.postgres
def test_an_operator_key_that_is_refused_is_not_replaced(tmp_path, stack, http_server, pg):
    rc, output = run_role(tmp_path, stack, http_server(Dashboard), pg, paycraft_smoke_api_key="pk_test_operator_0042")
    assert rc != 0
    assert "No tenant owns the API key the probe sent" in output
    assert "is unknown to the database" not in output
    assert stack.server.db["signups"] == 0


def test_the_role_refuses_a_probe_set_without_suite_config(tmp_path, stack, http_server, pg):
    rc, output = run_role(tmp_path, stack, http_server(Dashboard), pg,
                          paycraft_smoke_probes=["gateway", "postgres"])
    assert rc != 0
    assert "it must include\nsuite_config" in output or "it must include suite_config" in output
    assert stack.server.seen == []


@pytest.mark.postgres
def test_a_release_with_webhook_functions_gets_a_probe_for_each(tmp_path, stack, http_server, pg):
    dashboard = http_server(Dashboard)
    rc, output = run_role(tmp_path, stack, dashboard, pg,
                          functions=("config", "main", "stripe-webhook", "razorpay-webhook"),
                          paycraft_api_url="https://api.billing.example.com")
    assert rc == 0, output[-4000:]
    assert "smoke: 7/7 probes passed" in output
    # the public URL of each, for the summaries (the operator sets it at the provider)
    urls = json.loads((tmp_path / "webhook-urls.json").read_text())
    assert urls == ["Webhook URL (set at Razorpay): https://api.billing.example.com/functions/v1/razorpay-webhook",
                    "Webhook URL (set at Stripe): https://api.billing.example.com/functions/v1/stripe-webhook"], output
    assert ", razorpay-webhook " in output and ", stripe-webhook " in output
    posts = sorted(s["path"] for s in stack.seen if s.get("method") == "POST" and "/functions/v1/" in s["path"])
    assert posts == ["/functions/v1/razorpay-webhook", "/functions/v1/stripe-webhook"]
    # turned off: the five only
    rc, output = run_role(tmp_path, stack, dashboard, pg, paycraft_smoke_webhooks=False,
                          paycraft_smoke_use_saved_key=True)
    assert rc == 0, output[-4000:]
    assert "smoke: 5/5 probes passed" in output


@pytest.mark.postgres
def test_per_tenant_webhook_paths_are_probed_and_printed_as_a_pattern(tmp_path, http_server, pg):
    """PayCraft's provision_app hands out /functions/v1/stripe-webhook/<tenant_id>: the probes use the smoke
    tenant's path, the summary says the paths are per tenant and prints the pattern."""
    stack = tenant_stack(http_server, "provision_app")
    dashboard = http_server(Dashboard)
    functions = ("config", "main", "stripe-webhook", "razorpay-webhook")
    rc, output = run_role(tmp_path, stack, dashboard, pg, functions=functions,
                          paycraft_api_url="https://api.billing.example.com")
    assert rc == 0, output[-4000:]
    assert "smoke: 7/7 probes passed" in output
    tenant = stack.server.db["tenants"][EMAIL]
    posts = sorted(s["path"] for s in stack.seen if s.get("method") == "POST" and "/functions/v1/" in s["path"])
    assert posts == [f"/functions/v1/razorpay-webhook/{tenant}", f"/functions/v1/stripe-webhook/{tenant}"]
    urls = json.loads((tmp_path / "webhook-urls.json").read_text())
    assert urls[0].startswith("Webhook URLs are per tenant on this release"), urls
    assert "https://api.billing.example.com/functions/v1/<name>/<tenant_id>" in urls[0]
    assert urls[1:] == [
        "Webhook URL (set at Razorpay): https://api.billing.example.com/functions/v1/razorpay-webhook/<tenant_id>",
        "Webhook URL (set at Stripe): https://api.billing.example.com/functions/v1/stripe-webhook/<tenant_id>"]

    # a later run with the saved key: the release's migration says the paths are per tenant, the saved
    # tenant id is probed
    migrations = tmp_path / "src" / "server" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "048_multi_app_tenant_admins.sql").write_text(
        "-- returns\n  RETURN jsonb_build_object(\n"
        "    'webhook_url', format('/functions/v1/stripe-webhook/%s', v_tenant_id));\n")
    stack.server.seen.clear()
    rc, output = run_role(tmp_path, stack, dashboard, pg, functions=functions, paycraft_smoke_use_saved_key=True,
                          paycraft_migrations_dir=str(migrations))
    assert rc == 0, output[-4000:]
    posts = sorted(s["path"] for s in stack.seen if s.get("method") == "POST" and "/functions/v1/" in s["path"])
    assert posts == [f"/functions/v1/razorpay-webhook/{tenant}", f"/functions/v1/stripe-webhook/{tenant}"]
    assert json.loads((tmp_path / "webhook-urls.json").read_text())[0].startswith("Webhook URLs are per tenant")

    # an operator's key: no smoke tenant to take the id from, the route is probed with the nil UUID
    stack.server.seen.clear()
    rc, output = run_role(tmp_path, stack, dashboard, pg, functions=functions,
                          paycraft_smoke_api_key=stack.server.db["keys"][EMAIL],
                          paycraft_migrations_dir=str(migrations))
    assert rc == 0, output[-4000:]
    posts = sorted(s["path"] for s in stack.seen if s.get("method") == "POST" and "/functions/v1/" in s["path"])
    assert posts == ["/functions/v1/razorpay-webhook/00000000-0000-0000-0000-000000000000",
                     "/functions/v1/stripe-webhook/00000000-0000-0000-0000-000000000000"]
    assert not [s for s in stack.seen if s["path"].startswith(("/auth/v1/signup", "/rest/v1/rpc/"))]


class _OpenGateway(TenantStack):
    """A gateway without Kong's key check: /auth/v1/ answers a request with no apikey."""

    key_check = False


@pytest.mark.postgres
def test_an_open_gateway_fails_the_smoke_test_unless_the_key_check_is_off(tmp_path, http_server, pg):
    gateway = http_server(_OpenGateway)
    gateway.server.db = {"users": {}, "keys": {}, "signups": 0}
    dashboard = http_server(Dashboard)
    # paycraft_stack_key_check is on by default, and the smoke test follows it
    rc, output = run_role(tmp_path, gateway, dashboard, pg)
    assert rc != 0, output[-4000:]
    assert "The gateway lets requests through without an API key" in output, output[-4000:]
    assert "site.yml --tags stack" in output
    # an operator who turned the check off (paycraft_stack_key_check: false): the same gateway passes
    rc, output = run_role(tmp_path, gateway, dashboard, pg, paycraft_stack_key_check=False,
                          paycraft_smoke_use_saved_key=True)
    assert rc == 0, output[-4000:]
    assert "smoke: 5/5 probes passed" in output
