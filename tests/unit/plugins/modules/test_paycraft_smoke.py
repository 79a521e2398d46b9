"""paycraft_smoke module face: documentation matches the argument spec; parameters and failures as JSON."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke
from ansible_collections.paycraft.selfhost.plugins.modules import paycraft_smoke

DOC = yaml.safe_load(paycraft_smoke.DOCUMENTATION)
RETURN = yaml.safe_load(paycraft_smoke.RETURN)


def test_documented_options_are_the_argument_spec():
    options = DOC["options"]
    assert set(options) == set(paycraft_smoke.ARGUMENT_SPEC)
    for name, spec in paycraft_smoke.ARGUMENT_SPEC.items():
        doc = options[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name
        assert doc.get("elements") == spec.get("elements"), name
        assert doc["description"], name


def test_keys_are_no_log():
    assert paycraft_smoke.ARGUMENT_SPEC["api_key"]["no_log"] is True
    assert paycraft_smoke.ARGUMENT_SPEC["anon_key"]["no_log"] is True
    assert paycraft_smoke.ARGUMENT_SPEC["db_password"]["no_log"] is True


def test_attributes_and_return_are_documented():
    assert DOC["attributes"]["check_mode"]["support"] == "full"
    assert DOC["attributes"]["diff_mode"]["support"] == "none"
    assert {"summary", "probes", "suite_config", "msg"} <= set(RETURN)
    assert set(RETURN["probes"]["contains"]) == {"ok", "attempts", "latency_ms", "status", "detail", "cause_id",
                                                 "cause", "explanation", "runbook", "next"}
    yaml.safe_load(paycraft_smoke.EXAMPLES)


def _run(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        paycraft_smoke.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def test_missing_api_key_is_a_clear_error(capsys):
    code, result = _run({"probes": ["suite_config", "gateway"]}, capsys)
    assert code == 1 and result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("paycraft_smoke: invalid parameters: api_key is required when the suite_config")


def test_unknown_probe_is_rejected_by_the_spec(capsys):
    code, result = _run({"probes": ["kong"]}, capsys)
    assert code == 1 and "value of probes must be one or more of" in result["msg"]


def test_failed_probe_fails_with_the_message_and_keeps_the_result(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, result = _run({"probes": ["postgres"], "db_port": port, "timeout": 0, "request_timeout": 1,
                         "db_password": "unused-pw-8c1e", "_ansible_check_mode": True}, capsys)
    assert code == 1 and result["changed"] is False
    assert result["msg"].splitlines() == [
        "smoke: 0/1 probes passed (postgres FAILED after 1 attempt)",
        "postgres: connection refused — likely cause: " + smoke.CAUSES["postgres_no_response"]["heading"]
        + " (runbook section 7, 'migrations-bootstrap.sh aborts with \"could not connect\"' and "
        "'Postgres container exits during boot'). "
        "Next: docker exec paycraft_db pg_isready -U postgres; docker logs paycraft_db --tail 50",
    ]
    assert result["probes"]["postgres"]["status"] == "no response"
    assert result["suite_config"] is None


def test_the_postgres_password_comes_from_the_env_file(capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_file = tmp_path / "paycraft.env"
    env_file.write_text("PAYCRAFT_DB_PASSWORD=from-the-env-file-5d2c\n")
    code, result = _run({"probes": ["postgres"], "db_port": port, "timeout": 0, "request_timeout": 1,
                         "env_file": str(env_file)}, capsys)
    assert code == 1 and result["probes"]["postgres"]["status"] == "no response"  # validated: the password was read
    assert "from-the-env-file-5d2c" not in json.dumps(result)
    code, result = _run({"probes": ["postgres"], "db_port": port, "timeout": 0,
                         "env_file": str(tmp_path / "missing.env")}, capsys)
    assert code == 1 and "cannot read the database password from" in result["msg"]


def test_webhook_functions_are_probed_and_counted_after_the_probes(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, result = _run({"probes": ["gateway"], "api_url": f"http://127.0.0.1:{port}", "timeout": 0,
                         "request_timeout": 1, "webhook_functions": ["stripe-webhook"]}, capsys)
    assert code == 1
    assert result["msg"].splitlines()[0] == (
        "smoke: 0/2 probes passed (gateway FAILED after 1 attempt, stripe-webhook FAILED after 1 attempt)")
    assert result["probes"]["stripe-webhook"]["cause_id"] == "gateway_down"


def test_a_bad_webhook_function_name_is_a_clear_error(capsys):
    code, result = _run({"probes": ["gateway"], "webhook_functions": ["../config"]}, capsys)
    assert code == 1
    assert "webhook_functions ['../config']: each must be the name of a directory under supabase/functions" in (
        result["msg"])
