"""module_utils/monitoring.py: Prometheus's and Alertmanager's configuration, checked by their own tools.

``promtool check config`` and ``amtool check-config`` (Debian's packages, put in .venv/bin by
scripts/prepare.sh) read what the library writes, with the real rule file; a configuration they refuse
fails here. The relabelling that keeps the smoke key out of the labels is checked with Python's regex
engine, anchored as Prometheus anchors it (promtool 2.42 has no relabelling tester).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import monitoring as m

REPO = Path(__file__).resolve().parents[4]
RULES = REPO / "roles" / "monitoring" / "files" / "rules" / "paycraft.rules.yml"


def tool(name: str) -> str:
    found = shutil.which(name) or str(REPO / ".venv" / "bin" / name)
    if not os.access(found, os.X_OK):
        pytest.fail(f"{name} is missing: scripts/prepare.sh puts it in .venv/bin (from Debian's packages)")
    return found


def fleet() -> list:
    return [
        {"host": "billing-1", "node": "10.0.0.11:9100", "postgres": "10.0.0.11:9187",
         "probes": {"gateway": "http://10.0.0.11:54321/auth/v1/health",
                    "config": "http://10.0.0.11:54321/functions/v1/config?apiKey=pk_test_smoke",
                    "dashboard": "http://10.0.0.11:3000/"}},
        {"host": "billing-2", "node": "10.0.0.12:9100", "postgres": "10.0.0.12:9187",
         "probes": {"gateway": "https://pay.example.test/auth/v1/health"}},
    ]


def check_config(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True)


def test_a_fleet_config_passes_promtool_with_the_real_rules(tmp_path):
    (tmp_path / "scrape.pw").write_text("secret\n")
    (tmp_path / "ca.pem").write_text("")
    config = m.prometheus_config(fleet(), "127.0.0.1:9115", ["127.0.0.1:9093"], [str(RULES)],
                                 scrape_auth={"username": "prometheus", "password_file": str(tmp_path / "scrape.pw"),
                                              "ca_file": str(tmp_path / "ca.pem")})
    res = check_config(tmp_path, config)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "rules found" in res.stdout
    text = yaml.safe_dump(config)
    assert "secret" not in text
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {m.JOB_NODE, m.JOB_POSTGRES, m.JOB_BLACKBOX}
    assert jobs[m.JOB_NODE]["scheme"] == "https"
    assert jobs[m.JOB_NODE]["basic_auth"] == {"username": "prometheus", "password_file": str(tmp_path / "scrape.pw")}
    assert "basic_auth" not in jobs[m.JOB_BLACKBOX]  # the blackbox exporter sits beside Prometheus


def test_every_target_carries_its_host_and_every_probe_its_endpoint():
    config = m.prometheus_config(fleet(), "127.0.0.1:9115", [], ["rules.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for job in (m.JOB_NODE, m.JOB_POSTGRES):
        assert {sc["labels"]["host"] for sc in jobs[job]["static_configs"]} == {"billing-1", "billing-2"}
    probes = {(sc["labels"]["host"], sc["labels"]["endpoint"]) for sc in jobs[m.JOB_BLACKBOX]["static_configs"]}
    assert probes == {("billing-1", "gateway"), ("billing-1", "config"), ("billing-1", "dashboard"),
                      ("billing-2", "gateway")}
    assert "alerting" not in config


def test_the_smoke_key_stays_out_of_the_instance_label():
    """The probed URL carries ?apiKey=: the relabelling keeps the URL without its query as the instance."""
    import re

    config = m.prometheus_config(fleet(), "127.0.0.1:9115", [], [])
    relabel = next(j for j in config["scrape_configs"] if j["job_name"] == m.JOB_BLACKBOX)["relabel_configs"]
    step = next(r for r in relabel if r.get("target_label") == "instance")
    url = "http://10.0.0.11:54321/functions/v1/config?apiKey=pk_test_smoke"
    # Prometheus anchors relabel regexes at both ends and replaces with $1 by default
    assert re.fullmatch(step["regex"], url).group(1) == "http://10.0.0.11:54321/functions/v1/config"


def test_the_rules_read_the_job_names_this_config_writes():
    import re

    read = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    written = {j["job_name"] for j in m.prometheus_config(fleet(), "127.0.0.1:9115", [], [])["scrape_configs"]}
    assert read, "the rules name no job"
    assert read - written == set()


@pytest.mark.parametrize("hosts, blackbox, match", [
    ([], "127.0.0.1:9115", "no PayCraft host to monitor"),
    ([{"host": "a", "node": "a:9100"}, {"host": "a"}], "127.0.0.1:9115", "a is listed twice"),
    ([{"host": "a", "node": "a"}], "127.0.0.1:9115", "a: node: 'a' is not host:port"),
    ([{"host": "a", "probes": {"config": "ftp://a/x"}}], "127.0.0.1:9115", "is not an http"),
    ([{"host": "a", "probes": {"config": "http://a/x"}}], "nowhere", "blackbox: 'nowhere' is not host:port"),
    ([{"node": "a:9100"}], "127.0.0.1:9115", "a monitored host without a name"),
])
def test_bad_input_is_refused_with_what_to_fix(hosts, blackbox, match):
    with pytest.raises(m.MonitoringError, match=match):
        m.prometheus_config(hosts, blackbox, [], [])


def test_durations_are_checked():
    with pytest.raises(m.MonitoringError, match="scrape_interval: '15' is not a Prometheus duration"):
        m.prometheus_config(fleet(), "127.0.0.1:9115", [], [], scrape_interval="15")


def test_a_scrape_user_without_a_password_file_is_refused():
    with pytest.raises(m.MonitoringError, match="password_file"):
        m.prometheus_config(fleet(), "127.0.0.1:9115", [], [], scrape_auth={"username": "prometheus"})


def test_the_blackbox_config_is_what_the_scrape_asks_for(tmp_path):
    config = m.blackbox_config()
    module = next(j for j in m.prometheus_config(fleet(), "127.0.0.1:9115", [], [])["scrape_configs"]
                  if j["job_name"] == m.JOB_BLACKBOX)["params"]["module"][0]
    assert config["modules"][module]["prober"] == "http"


def check_am(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([tool("amtool"), "check-config", str(path)], capture_output=True, text=True)


def test_mail_and_a_webhook_pass_amtool_and_the_password_stays_in_its_file(tmp_path):
    (tmp_path / "smtp.pw").write_text("s3cret-relay-password\n")
    config = m.alertmanager_config(
        {"host": "smtp.example.test", "port": 587, "user": "alerts", "sender": "alerts@example.test"},
        ["ops@example.test", "oncall@example.test"], ["http://127.0.0.1:8099/hooks/paycraft"],
        group_by=["alertname", "host"], password_file=str(tmp_path / "smtp.pw"))
    res = check_am(tmp_path, config)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "s3cret" not in yaml.safe_dump(config)
    assert config["global"]["smtp_smarthost"] == "smtp.example.test:587"
    assert config["global"]["smtp_auth_password_file"] == str(tmp_path / "smtp.pw")
    receiver = config["receivers"][0]
    assert receiver["email_configs"][0]["to"] == "ops@example.test, oncall@example.test"
    assert receiver["slack_configs"][0]["api_url"] == "http://127.0.0.1:8099/hooks/paycraft"
    assert "runbook" in receiver["slack_configs"][0]["text"]


def test_a_webhook_alone_needs_no_smtp(tmp_path):
    config = m.alertmanager_config(None, [], ["https://chat.example.test/hooks/abc"])
    assert check_am(tmp_path, config).returncode == 0
    assert "global" not in config


def test_amtool_refuses_what_the_library_must_not_write(tmp_path):
    """The check is real: amtool fails on a route to a receiver that does not exist."""
    config = m.alertmanager_config(None, [], ["https://chat.example.test/hooks/abc"])
    config["route"]["receiver"] = "nobody"
    assert check_am(tmp_path, config).returncode != 0


@pytest.mark.parametrize("args, match", [
    ((None, [], []), "alerts go nowhere"),
    ((None, ["ops@example.test"], []), "alert mail needs paycraft_smtp_host"),
    (({"host": "smtp.example.test", "sender": "a@example.test", "user": "u"}, ["ops@example.test"], []),
     "needs the password in a file"),
    ((None, [], ["chat.example.test/hook"]), "is not an http"),
])
def test_alertmanager_bad_input(args, match):
    with pytest.raises(m.MonitoringError, match=match):
        m.alertmanager_config(*args)
