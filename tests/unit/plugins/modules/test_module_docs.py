"""The modules' DOCUMENTATION in the forms Ansible's validate-modules and antsibull-docs expect.

antsibull-docs (a step of scripts/test.sh) validates the schema; the author form is checked here,
as ansible-test sanity would (it cannot run offline).
"""

from __future__ import annotations

import importlib
import re

import pytest
import yaml
from paycraft_testlib import REPO

MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("paycraft_*.py"))
AUTHOR = re.compile(r"^[^()@]+ \(@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\)$")  # Name (@github)


def _doc(name):
    module = importlib.import_module(f"ansible_collections.paycraft.selfhost.plugins.modules.{name}")
    return yaml.safe_load(module.DOCUMENTATION)


def test_every_module_is_checked():
    assert MODULES == ["paycraft_backup", "paycraft_converged", "paycraft_doctor", "paycraft_gateway_config",
                       "paycraft_keys", "paycraft_lock", "paycraft_logs", "paycraft_metrics", "paycraft_migrate",
                       "paycraft_operation", "paycraft_preflight", "paycraft_release_check", "paycraft_rotate",
                       "paycraft_smoke", "paycraft_smoke_tenant", "paycraft_snapshot", "paycraft_volume_swap",
                       "paycraft_write_hold"]


@pytest.mark.parametrize("name", MODULES)
def test_authors_are_name_and_github_handle(name):
    authors = _doc(name)["author"]
    authors = [authors] if isinstance(authors, str) else authors
    assert authors and [a for a in authors if not AUTHOR.match(a)] == []


@pytest.mark.parametrize("name", MODULES)
def test_every_attribute_has_a_support_level_and_a_description(name):
    attributes = _doc(name).get("attributes", {})
    assert {"check_mode", "diff_mode"} <= set(attributes)
    for attribute, spec in attributes.items():
        assert spec.get("support") in ("full", "partial", "none", "N/A"), attribute
        assert spec.get("description"), attribute
