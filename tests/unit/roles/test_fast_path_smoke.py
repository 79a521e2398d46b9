"""The fast path's smoke run is the default probe set: every probe the smoke module knows, auth included."""

from __future__ import annotations

from pathlib import Path

import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke

REPO = Path(__file__).resolve().parents[3]


def _smoke_import():
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    for play in plays:
        for task in play.get("tasks", []):
            role = (task.get("ansible.builtin.import_role") or {}).get("name")
            if role == "paycraft.selfhost.smoke":
                return play, task
    raise AssertionError("site.yml does not import the smoke role")


def test_converged_hosts_run_the_smoke_role():
    play, task = _smoke_import()
    assert play["hosts"] == "paycraft", "the smoke play must include the hosts that took the fast path"
    assert "paycraft_converged" not in str(task.get("when", "")), task.get("when")


def test_site_yml_does_not_pin_the_probes():
    play, task = _smoke_import()
    for where in (play.get("vars") or {}, task.get("vars") or {}):
        assert "paycraft_smoke_probes" not in where, "site.yml pins the probe list; the fast path must run the default"


def test_the_smoke_roles_default_is_every_probe_the_module_knows():
    defaults = yaml.safe_load((REPO / "roles" / "smoke" / "defaults" / "main.yml").read_text())
    assert sorted(defaults["paycraft_smoke_probes"]) == sorted(smoke.PROBES)


def test_the_fast_path_runs_the_auth_probe():
    assert "auth" in smoke.PROBES
    defaults = yaml.safe_load((REPO / "roles" / "smoke" / "defaults" / "main.yml").read_text())
    assert "auth" in defaults["paycraft_smoke_probes"]
