"""paycraft.selfhost.paycraft_smoke run by ansible -vvv (ad hoc) and ansible-playbook -vvv against real servers.

The ad-hoc runs pass the key through a variable: on a failed ad-hoc task ansible-core itself echoes the
literal ``-a`` string (the operator's own command line), which no module can mask.

One playbook run covers: a healthy stack (normal and check mode), a failing one (Function not found),
a server that echoes the api key back in its error, and bad parameters. Asserted: changed false, the
structured result, the failure message text, and that neither key appears anywhere in the -vvv output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from smoke_servers import ANON_KEY, SUITE_CONFIG, Dashboard, FunctionNotFound, Stack

API_KEY = "pk_test_ansible_7d41e0c2b9"  # unique, so any occurrence in the output is a leak
OTHER_KEY = "pk_test_unknown_55aa01f3"


class Tenant(Stack):
    api_key = API_KEY

PLAYBOOK = """
- name: Smoke probes through Ansible
  hosts: localhost
  gather_facts: false
  vars:
    fast: {{timeout: 1, interval: 0.2, request_timeout: 2}}
  tasks:
    - name: Healthy stack
      paycraft.selfhost.paycraft_smoke:
        api_url: {healthy}
        api_key: {api_key}
        anon_key: {anon_key}
        dashboard_url: {dashboard}
        db_host: {db_host}
        db_port: {db_port}
        env_file: {env_file}
        timeout: 5
      register: healthy

    - name: Healthy stack in check mode
      paycraft.selfhost.paycraft_smoke:
        api_url: {healthy}
        api_key: {api_key}
        anon_key: {anon_key}
        dashboard_url: {dashboard}
        db_host: {db_host}
        db_port: {db_port}
        env_file: {env_file}
        timeout: 5
      check_mode: true
      register: healthy_check

    - name: Function not found
      paycraft.selfhost.paycraft_smoke:
        api_url: {broken}
        api_key: {api_key}
        anon_key: {anon_key}
        probes: [suite_config, gateway]
        timeout: "{{{{ fast.timeout }}}}"
        interval: "{{{{ fast.interval }}}}"
      register: not_found
      ignore_errors: true

    - name: Unknown api key echoed by the server
      paycraft.selfhost.paycraft_smoke:
        api_url: {healthy}
        api_key: {other_key}
        probes: [suite_config]
      register: echoed
      ignore_errors: true

    - name: Missing api key
      paycraft.selfhost.paycraft_smoke:
        probes: [suite_config]
      register: invalid
      ignore_errors: true

    - name: Save the registered results
      ansible.builtin.copy:
        content: "{{{{ {{'healthy': healthy, 'healthy_check': healthy_check, 'not_found': not_found,
                    'echoed': echoed, 'invalid': invalid}} | to_json }}}}"
        dest: {out}
        mode: "0600"
"""


@pytest.mark.postgres
def test_module_through_ansible_playbook(http_server, pg, tmp_path):
    healthy, broken, dashboard = http_server(Tenant), http_server(FunctionNotFound), http_server(Dashboard)
    out = tmp_path / "results.json"
    playbook = tmp_path / "smoke.yml"
    env_file = tmp_path / "paycraft.env"
    env_file.write_text(f"PAYCRAFT_DB_PASSWORD={pg.password}\n")
    env_file.chmod(0o600)
    playbook.write_text(PLAYBOOK.format(
        env_file=env_file, healthy=healthy.url, broken=broken.url, dashboard=dashboard.url,
        db_host=pg.host, db_port=pg.port,
        api_key=API_KEY, anon_key=ANON_KEY, other_key=OTHER_KEY, out=out,
    ))
    binary = Path(sys.executable).parent / "ansible-playbook"
    env = {**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(Path(__file__).resolve().parents[3] / ".venv" / "collections"))
    proc = subprocess.run([str(binary), "-i", "localhost,", "-c", "local", str(playbook), "-vvv"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    results = json.loads(out.read_text())

    # the keys reached the servers ...
    assert {"apiKey": [API_KEY]} in [s["query"] for s in healthy.seen]
    assert ANON_KEY in [s["headers"].get("apikey") for s in healthy.seen]
    assert {"apiKey": [OTHER_KEY]} in [s["query"] for s in healthy.seen]
    # ... and never the output, even at -vvv, nor the registered results
    for secret in (API_KEY, OTHER_KEY, ANON_KEY, pg.password):
        assert secret not in output
        assert secret not in out.read_text()

    for name in ("healthy", "healthy_check"):
        result = results[name]
        assert result["changed"] is False
        assert not result.get("failed")
        assert result["suite_config"] == SUITE_CONFIG
        assert set(result["probes"]) == {"suite_config", "gateway", "auth", "postgres", "dashboard"}
        assert all(p["ok"] and p["latency_ms"] >= 0 for p in result["probes"].values())
        assert result["probes"]["postgres"]["status"] == "logged in"  # with the password of the env file
        assert result["summary"].startswith("smoke: 5/5 probes passed (suite_config ")
    assert results["healthy"]["summary"] in output

    failed = results["not_found"]
    assert failed["failed"] is True and failed["changed"] is False
    lines = failed["msg"].splitlines()
    assert lines[0] == failed["summary"]
    assert lines[0].startswith("smoke: 1/2 probes passed (suite_config FAILED after ")
    assert lines[1].startswith('suite_config: HTTP 404 {"message": "Function not found"} — likely cause: '
                               "The edge runtime has no config function to serve (runbook section 7, "
                               "'Edge function returns 404 for /functions/v1/config'). Next: "
                               "ls ../../supabase/functions/config; docker logs paycraft_edge_runtime --tail 100")
    assert len(lines) == 2
    assert failed["probes"]["gateway"]["ok"] is True
    assert failed["probes"]["suite_config"]["cause_id"] == "function_not_found"
    assert failed["suite_config"] is None

    echoed = results["echoed"]
    assert echoed["probes"]["suite_config"]["status"] == 401
    assert "likely cause: No tenant owns the API key the probe sent. Next: open " in echoed["msg"]

    invalid = results["invalid"]
    assert invalid["failed"] is True and invalid["changed"] is False
    assert "api_key is required when the suite_config probe runs" in invalid["msg"]


def _adhoc(args, extra, env_over=None):
    binary = Path(sys.executable).parent / "ansible"
    env = {**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(Path(__file__).resolve().parents[3] / ".venv" / "collections"))
    cmd = [str(binary), "localhost", "-i", "localhost,", "-c", "local", "-m", "paycraft.selfhost.paycraft_smoke",
           "-a", args, "-vvv"]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).parent)
    output = proc.stdout + proc.stderr
    match = re.search(r"^localhost \| (SUCCESS|FAILED!) => ", proc.stdout, re.MULTILINE)
    assert match, output[-3000:]
    result, _ = json.JSONDecoder().raw_decode(proc.stdout[match.end():])
    return proc.returncode, result, output


def test_module_ad_hoc_failure(http_server):
    """The healthy path through Ansible is the playbook test's; here the failing ad-hoc run at -vvv."""
    broken = http_server(FunctionNotFound)
    extra = {"smoke_api_key": API_KEY, "smoke_anon_key": ANON_KEY}
    keys = "api_key={{ smoke_api_key }} anon_key={{ smoke_anon_key }} probes=suite_config,gateway"

    code, result, output = _adhoc(f"{keys} api_url={broken.url} timeout=1 interval=0.2", extra)
    assert code == 2 and "localhost | FAILED! => " in output
    assert result["changed"] is False
    assert result["invocation"]["module_args"]["api_key"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert result["probes"]["gateway"]["ok"] is True
    assert result["probes"]["suite_config"]["cause_id"] == "function_not_found"
    assert result["probes"]["suite_config"]["runbook"] == (
        "runbook section 7, 'Edge function returns 404 for /functions/v1/config'")
    assert result["msg"].splitlines()[1].startswith('suite_config: HTTP 404 {"message": "Function not found"}')

    assert {"apiKey": [API_KEY]} in [s["query"] for s in broken.seen]
    assert ANON_KEY in [s["headers"].get("apikey") for s in broken.seen]
    for secret in (API_KEY, ANON_KEY):
        assert secret not in output
