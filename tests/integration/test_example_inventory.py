"""inventories/example: the production fleet an operator copies.

Its hosts do not exist (documentation addresses), so the test checks what can be
checked honestly without them:

* the vault file is really encrypted, and opens with the example's password file;
* ``ansible-inventory --graph`` shows paycraft_canary and paycraft_main under
  paycraft, and the per-host values (URLs, the pinned release) land on the right hosts;
* every vaulted value resolves through the group_vars that reference it
  (``ansible -m debug`` templates them on the controller, without a connection);
* ``ansible-playbook --syntax-check playbooks/site.yml``;
* ``ansible-playbook --check --tags validate playbooks/site.yml`` with the
  inventory's variables, on one disposable container standing in for all three
  hosts: only the connection is replaced (docker connection, root, no sudo);
  every role's validation and the summary run on each host's own variables. A
  broken setting stops that run with the host named.

The install phases (Docker, source, stack) are not run in check mode: they would
reach the internet (Docker's apt repository, GitHub, the fleet's registry).
The Molecule scenario ``fleet`` runs the real install on disposable hosts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from paycraft_dind import install_pyc_cache
from paycraft_testlib import missing

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "inventories" / "example"
HOSTS = EXAMPLE / "hosts.yml"
PASSWORD = EXAMPLE / "vault-password.example"
VAULT = EXAMPLE / "group_vars" / "paycraft" / "vault.yml"
HOST_IMAGE = "paycraft-local/host:bookworm"
FLEET = ["billing-eu-1.example.com", "billing-eu-2.example.com", "billing-us-1.example.com"]


def _run(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, **(env or {})))


def _ansible(tool: str, *args: object, vault: bool = True) -> subprocess.CompletedProcess:
    extra = ["--vault-password-file", PASSWORD] if vault else []
    return _run(BIN / tool, "-i", HOSTS, *extra, *args)


def test_vault_file_is_really_encrypted():
    text = VAULT.read_text()
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256\n"), "vault.yml must be encrypted with ansible-vault"
    assert "vault_paycraft" not in text and "sk_test_" not in text
    res = _ansible("ansible-inventory", "--list", vault=False)
    assert res.returncode != 0
    assert "vault" in (res.stderr + res.stdout).lower()


def test_graph_has_canary_and_main_under_paycraft():
    res = _ansible("ansible-inventory", "--graph")
    assert res.returncode == 0, res.stderr
    expected = (
        "  |--@paycraft:\n"
        "  |  |--@paycraft_canary:\n"
        "  |  |  |--billing-eu-1.example.com\n"
        "  |  |--@paycraft_main:\n"
        "  |  |  |--billing-eu-2.example.com\n"
        "  |  |  |--billing-us-1.example.com\n"
    )
    assert expected in res.stdout, res.stdout


def test_vaulted_values_resolve_and_per_host_values_apply():
    template = (
        "{{ [paycraft_version, paycraft_api_url, paycraft_dashboard_url,"
        " paycraft_platform_stripe_secret_key[:8], paycraft_platform_stripe_client_id[:3],"
        " paycraft_docker_registry_logins[0].registry, paycraft_docker_registry_logins[0].username,"
        " paycraft_docker_registry_logins[0].password | length > 0,"
        " paycraft_docker_registry_ca_certs['registry.billing.example.com:5000'][:27],"
        " paycraft_image_registry] | to_json }}"
    )
    res = _run(BIN / "ansible", "paycraft", "-i", HOSTS, "--vault-password-file", PASSWORD,
               "-m", "ansible.builtin.debug", "-a", f"msg={template}", "-o")
    assert res.returncode == 0, res.stdout + res.stderr
    values = {}
    for line in res.stdout.splitlines():
        host, _, rest = line.partition(" | SUCCESS => ")
        if rest:
            values[host.strip()] = json.loads(json.loads(rest)["msg"])
    assert sorted(values) == FLEET, res.stdout
    for host, (version, api, dash, sk, ca, reg, user, has_pw, cert, image_registry) in values.items():
        short = host.split(".")[0].removeprefix("billing-")
        assert api == f"https://api.{short}.billing.example.com"
        assert dash == f"https://dashboard.{short}.billing.example.com"
        assert version == ("v1.0.0" if host == "billing-us-1.example.com" else "v1.1.0"), host
        assert (sk, ca) == ("sk_test_", "ca_")
        assert (reg, user, has_pw) == ("registry.billing.example.com:5000", "paycraft-fleet", True)
        assert cert == "-----BEGIN CERTIFICATE-----"
        assert image_registry == "registry.billing.example.com:5000"


def test_site_syntax_check():
    res = _ansible("ansible-playbook", "--syntax-check", REPO / "playbooks" / "site.yml")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def stand_in_host(docker_engine):
    """One disposable bare Debian container that stands in for every host of the example."""
    if subprocess.run(["docker", "image", "inspect", HOST_IMAGE], capture_output=True).returncode != 0:
        missing(f"image {HOST_IMAGE} (tests/hosts/build.sh)")
    name = f"paycraft-fleet-example-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--label", "owner=paycraft-tests",
                    HOST_IMAGE, "sleep", "infinity"], check=True, capture_output=True)
    try:
        install_pyc_cache(name)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _check_site(host: str, *args: object) -> subprocess.CompletedProcess:
    # only how Ansible reaches the host changes; every PayCraft setting is the inventory's
    return _ansible(
        "ansible-playbook", REPO / "playbooks" / "site.yml", "--check", "--tags", "validate",
        "-e", "ansible_connection=community.docker.docker", "-e", f"ansible_host={host}",
        "-e", "ansible_user=root", "-e", "ansible_become=false",
        "-e", "ansible_python_interpreter=/usr/bin/python3", *args,
    )


def test_site_check_validates_every_host_with_its_own_values(stand_in_host):
    if shutil.which("docker") is None:
        missing("docker CLI")
    res = _check_site(stand_in_host)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for host in FLEET:
        assert re.search(rf"^{re.escape(host)}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out, re.M), out
    # each host's validation ran (not skipped) and its summary names its own URL and release
    assert out.count("TASK [paycraft.selfhost.source : Check that paycraft_version names a release]") == 1
    assert "PayCraft v1.0.0 (?) on billing-us-1.example.com" in out
    assert "PayCraft v1.1.0 (?) on billing-eu-1.example.com" in out
    assert "Gateway (SDK supabaseUrl): https://api.eu-2.billing.example.com" in out
    assert "sk_test_51" not in out and "example-registry-password" not in out


def test_site_check_stops_on_a_broken_setting(stand_in_host):
    res = _check_site(stand_in_host, "-l", "billing-us-1.example.com", "-e", "paycraft_api_url=")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Preflight failed on billing-us-1.example.com" in out, out
    assert "billing-us-1.example.com: paycraft_api_url (PAYCRAFT_API_URL) must not be empty" in out, out
