# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus's and Alertmanager's configuration for PayCraft hosts (issue #35).

One monitoring host scrapes every PayCraft host of the fleet (or a single host scrapes itself). Per
PayCraft host, ``host_targets`` describes what runs there:

    {"host": "billing-1",                    the inventory hostname: the `host` label of every series
     "node": "billing-1:9100",               node_exporter (with the textfile collector)
     "postgres": "billing-1:9187",           postgres_exporter
     "probes": {"gateway": "http://billing-1:54321/auth/v1/health",
                "config": "http://billing-1:54321/functions/v1/config?apiKey=...",
                "dashboard": "http://billing-1:3000/"}}

The blackbox exporter runs beside Prometheus and probes the URLs (the usual relabelling: the URL
becomes the ``target`` parameter, the exporter is the address). Exporters reached over a network
use the exporter toolkit's TLS and basic auth: ``scrape_auth`` gives Prometheus the user, the
password file and the CA.

The alert rules are roles/monitoring/files/rules/paycraft.rules.yml; the job names here are the
ones they read (``paycraft_blackbox``, ``paycraft_postgres``, ``paycraft_node``).

Pure Python, no Ansible import; the output is checked by promtool and amtool in the unit tests.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

JOB_NODE = "paycraft_node"
JOB_POSTGRES = "paycraft_postgres"
JOB_BLACKBOX = "paycraft_blackbox"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class MonitoringError(Exception):
    pass


def _duration(name: str, value: str) -> str:
    if not _DURATION.match(str(value)):
        raise MonitoringError(f"{name}: {value!r} is not a Prometheus duration (such as 15s, 1m, 1h30m)")
    return str(value)


def _hostport(what: str, value: str) -> str:
    if not _HOSTPORT.match(str(value)):
        raise MonitoringError(f"{what}: {value!r} is not host:port")
    return str(value)


def _auth(scrape_auth: dict | None) -> dict:
    """The scrape config's TLS and basic auth towards exporters (exporter toolkit web config on their side)."""
    if not scrape_auth:
        return {}
    out = {}
    if scrape_auth.get("username"):
        if not scrape_auth.get("password_file"):
            raise MonitoringError("scrape_auth: a username needs password_file (the password stays out of the config)")
        out["basic_auth"] = {"username": scrape_auth["username"], "password_file": scrape_auth["password_file"]}
    if scrape_auth.get("ca_file"):
        out["scheme"] = "https"
        out["tls_config"] = {"ca_file": scrape_auth["ca_file"]}
        if scrape_auth.get("server_name"):
            out["tls_config"]["server_name"] = scrape_auth["server_name"]
    return out


def _static(targets: list) -> list:
    return [{"targets": [address], "labels": {"host": host}} for host, address in targets]


def prometheus_config(hosts: list, blackbox: str, alertmanagers: list, rule_files: list,
                      scrape_interval: str = "15s", evaluation_interval: str = "15s",
                      scrape_auth: dict | None = None, external_labels: dict | None = None) -> dict:
    """prometheus.yml as a dict: a job per exporter kind, every target labelled with its host."""
    if not hosts:
        raise MonitoringError("no PayCraft host to monitor: the paycraft group is empty, or no host has monitoring on")
    seen = set()
    node, postgres, probes = [], [], []
    for h in hosts:
        name = str(h.get("host") or "")
        if not name:
            raise MonitoringError(f"a monitored host without a name: {sorted(h)}")
        if name in seen:
            raise MonitoringError(f"{name} is listed twice")
        seen.add(name)
        if h.get("node"):
            node.append((name, _hostport(f"{name}: node", h["node"])))
        if h.get("postgres"):
            postgres.append((name, _hostport(f"{name}: postgres", h["postgres"])))
        for endpoint, url in sorted((h.get("probes") or {}).items()):
            if urlsplit(str(url)).scheme not in ("http", "https"):
                raise MonitoringError(f"{name}: probe {endpoint}: {url!r} is not an http(s) URL")
            probes.append({"targets": [str(url)], "labels": {"host": name, "endpoint": endpoint}})
    auth = _auth(scrape_auth)
    jobs = []
    if node:
        jobs.append(dict({"job_name": JOB_NODE, "static_configs": _static(node)}, **auth))
    if postgres:
        jobs.append(dict({"job_name": JOB_POSTGRES, "static_configs": _static(postgres)}, **auth))
    if probes:
        jobs.append({
            "job_name": JOB_BLACKBOX,
            "metrics_path": "/probe",
            "params": {"module": ["paycraft_http_2xx"]},
            "static_configs": probes,
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                # the probed URL may carry the smoke key (?apiKey=): the instance label keeps only its path
                {"source_labels": ["__param_target"], "regex": r"([^?]*).*", "target_label": "instance"},
                {"target_label": "__address__", "replacement": _hostport("blackbox", blackbox)},
            ],
        })
    config = {
        "global": {"scrape_interval": _duration("scrape_interval", scrape_interval),
                   "evaluation_interval": _duration("evaluation_interval", evaluation_interval)},
        "rule_files": list(rule_files),
        "scrape_configs": jobs,
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [_hostport("alertmanager", a) for a in alertmanagers]}]}]}
    return config


def blackbox_config(timeout: str = "5s") -> dict:
    """blackbox.yml: one HTTP module that wants a 2xx (the config endpoint answers JSON with 200)."""
    return {"modules": {"paycraft_http_2xx": {
        "prober": "http",
        "timeout": _duration("timeout", timeout),
        "http": {"valid_status_codes": [], "preferred_ip_protocol": "ip4", "follow_redirects": True},
    }}}


def alertmanager_config(smtp: dict | None, mail_to: list, webhook_urls: list, group_by: list | None = None,
                        group_wait: str = "30s", group_interval: str = "5m", repeat_interval: str = "4h",
                        password_file: str = "") -> dict:
    """alertmanager.yml: mail through the SMTP relay (the password from a file, never inline) and webhooks that
    take Slack's JSON; one route with the grouping the inventory sets."""
    receiver = {"name": "paycraft"}
    if mail_to:
        if not smtp or not smtp.get("host") or not smtp.get("sender"):
            raise MonitoringError("alert mail needs paycraft_smtp_host and paycraft_smtp_sender")
        mail = {"to": ", ".join(mail_to), "send_resolved": True,
                "headers": {"Subject": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} on '
                                       '{{ .CommonLabels.host }}'}}
        receiver["email_configs"] = [mail]
    if webhook_urls:
        for url in webhook_urls:
            if urlsplit(str(url)).scheme not in ("http", "https"):
                raise MonitoringError(f"webhook {url!r} is not an http(s) URL")
        # Slack-compatible JSON (Slack, Mattermost, Rocket.Chat and most chat bridges take it)
        receiver["slack_configs"] = [{
            "api_url": str(u), "send_resolved": True,
            "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} on {{ .CommonLabels.host }}',
            "text": '{{ range .Alerts }}{{ .Annotations.summary }}\nNext: {{ .Annotations.runbook }}\n{{ end }}',
        } for u in webhook_urls]
    if len(receiver) == 1:
        raise MonitoringError("alerts go nowhere: set paycraft_monitoring_mail_to or paycraft_monitoring_webhooks")
    config = {
        "route": {"receiver": "paycraft", "group_by": list(group_by or ["alertname", "host"]),
                  "group_wait": _duration("group_wait", group_wait),
                  "group_interval": _duration("group_interval", group_interval),
                  "repeat_interval": _duration("repeat_interval", repeat_interval)},
        "receivers": [receiver],
    }
    if mail_to:
        glob = {"smtp_smarthost": f"{smtp['host']}:{int(smtp.get('port') or 587)}", "smtp_from": smtp["sender"],
                "smtp_require_tls": bool(smtp.get("require_tls", True))}
        if smtp.get("user"):
            if not password_file:
                raise MonitoringError("an SMTP user needs the password in a file (smtp_auth_password_file)")
            glob["smtp_auth_username"] = smtp["user"]
            glob["smtp_auth_password_file"] = password_file
        config["global"] = glob
    return config
