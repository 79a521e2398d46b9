"""The alert rules (roles/monitoring/files/rules): Prometheus's own promtool checks and runs their tests.

promtool comes from Debian's prometheus package (scripts/prepare.sh puts it in .venv/bin). Beside
promtool's verdict, this file checks what promtool does not: every alert fires in a test and stays
silent in another, every alert names its host and carries a runbook line, and every metric of the
collection's own that a rule reads is one that module_utils/metrics.py writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import metrics, operation

REPO = Path(__file__).resolve().parents[3]
RULES_DIR = REPO / "roles" / "monitoring" / "files" / "rules"
RULES = RULES_DIR / "paycraft.rules.yml"
TESTS = RULES_DIR / "paycraft.rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool") or str(REPO / ".venv" / "bin" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.fail("promtool is missing: scripts/prepare.sh puts it in .venv/bin (from Debian's prometheus package)")
    return found


def alerts() -> list:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules():
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout


def test_promtool_runs_the_rules_unit_tests():
    res = subprocess.run([promtool(), "test", "rules", TESTS.name], capture_output=True, text=True, cwd=RULES_DIR)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_every_alert_fires_in_a_test_and_stays_silent_in_another():
    fired, silent = set(), set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts no test sees fire"
    # an alert with no `for:` that reads a value set once (a failed run) is silent before it: still tested
    assert names - silent == set(), "alerts no test sees stay silent"
    assert (fired | silent) - names == set(), "tests of alerts that do not exist"


def test_every_alert_names_its_host_and_the_next_command():
    for rule in alerts():
        annotations = rule.get("annotations") or {}
        for key in ("summary", "runbook"):
            assert "$labels.host" in annotations.get(key, ""), f"{rule['alert']}: its {key} does not name the host"
        assert re.search(r"ansible-playbook|docker|cat |du |find ", annotations["runbook"]), \
            f"{rule['alert']}: its runbook line names no command"
        assert (rule.get("labels") or {}).get("severity") in ("critical", "warning"), rule["alert"]


def test_the_collections_own_metrics_the_rules_read_are_the_ones_it_writes(tmp_path):
    """Every paycraft_* series a rule reads is a family metrics.py writes (a renamed metric fails here)."""
    record = operation.new_state("upgrade", "v1.0.0", "v1.1.0", {"run_id": "r1"})
    record.update(status="done", finished_at="2026-12-07T10:05:00Z")
    (tmp_path / "operation.json").write_text(yaml.safe_dump(record))  # JSON is YAML; json.load reads it too
    families = metrics.collect({"operation_file": str(tmp_path / "none.json"), "containers": False})
    families += metrics.operation_families(record)
    families += metrics.lock_families("held", {"operation": "backup", "since": "2026-12-07T09:00:00Z"})
    families += metrics.backup_families([{"created_at": "2026-12-07T02:00:00Z", "size": 1}],
                                        {"state": "ok", "pending": []})
    families += metrics.result_families({"backup": {"ok": True, "at": "2026-12-07T02:00:00Z"}})
    families += metrics.container_families([{"Name": "/paycraft_db", "State": {"Running": True}}])
    written = {f.name for f in families if f.samples}
    exprs = "\n".join(re.sub(r'"[^"]*"', '""', r["expr"]) for r in alerts())  # label values are not metrics
    read = set(re.findall(r"\bpaycraft_[a-z_]+", exprs))
    assert read, "the rules read none of the collection's metrics"
    assert read - written == set(), "rules read metrics that metrics.py does not write"
