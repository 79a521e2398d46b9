"""The values every role shares are defined once (roles/common) and reach every role that reads them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLES = REPO / "roles"
SHARED = sorted(yaml.safe_load((ROLES / "common" / "defaults" / "main.yml").read_text()))
OTHER_ROLES = sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "main.yml").is_file() and p.name != "common")


def role_text(role: str) -> str:
    return "\n".join(p.read_text() for d in ("tasks", "templates", "vars", "defaults")
                     for p in sorted((ROLES / role / d).rglob("*")) if p.is_file())


READERS = [r for r in OTHER_ROLES if any(re.search(rf"\b{n}\b", role_text(r)) for n in SHARED)]


def test_the_shared_values_are_the_ones_every_role_copied():
    for name in ("paycraft_root", "paycraft_config_dir", "paycraft_source_dest", "paycraft_selfhost_dir",
                 "paycraft_env_file", "paycraft_compose_project", "paycraft_db_port", "paycraft_compose_file",
                 "paycraft_migrations_ledger"):
        assert name in SHARED


@pytest.mark.parametrize("role", OTHER_ROLES)
def test_no_role_defines_a_shared_value_again(role):
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    again = sorted(set(defaults) & set(SHARED))
    assert again == [], f"roles/{role}/defaults/main.yml defines {again} again: they live in roles/common"
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry, spec in specs.items():
        again = sorted(set(spec.get("options") or {}) & set(SHARED))
        assert again == [], f"roles/{role} argument spec {entry} repeats {again}: roles/common documents them"


@pytest.mark.parametrize("role", OTHER_ROLES)
def test_a_role_that_reads_a_shared_value_depends_on_common(role):
    reads = sorted(n for n in SHARED if re.search(rf"\b{n}\b", role_text(role)))
    deps = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text()).get("dependencies") or []
    names = [d["role"] if isinstance(d, dict) else d for d in deps]
    if reads:
        assert "paycraft.selfhost.common" in names, f"roles/{role} reads {reads} without depending on common"


def test_one_port_for_postgres():
    """The port the stack publishes is the one the migrations, the smoke test and the fast path connect to."""
    assert "paycraft_db_port" in (ROLES / "stack" / "templates" / "compose.override.yml.j2").read_text()
    assert 'login_port: "{{ paycraft_db_port }}"' in (ROLES / "migrations" / "tasks" / "main.yml").read_text()
    converged_vars = yaml.safe_load((ROLES / "converged" / "vars" / "main.yml").read_text())
    converged_args = converged_vars["__paycraft_converged_args"]
    assert converged_args["login_port"] == "{{ paycraft_db_port }}"
    assert converged_args["ledger_table"] == "{{ paycraft_migrations_ledger }}"
    assert converged_args["compose_files"][0] == "{{ paycraft_compose_file }}"
    smoke = yaml.safe_load((ROLES / "smoke" / "defaults" / "main.yml").read_text())
    assert smoke["paycraft_smoke_db_port"] == "{{ paycraft_db_port }}"


def test_the_roles_that_read_shared_values():
    assert set(READERS) >= {"config", "converged", "migrations", "preflight", "smoke", "source", "stack"}


@pytest.mark.parametrize("role", READERS)
def test_each_role_alone_has_the_shared_values(role, tmp_path):
    """ansible-playbook with one role imported alone: the shared values resolve, and follow group_vars."""
    playbook = tmp_path / "alone.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.import_role:\n        name: paycraft.selfhost.{role}\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"SHARED {{ paycraft_selfhost_dir }} {{ paycraft_db_port }} {{ paycraft_env_file }}\"\n"
        "      tags: [shared_probe]\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    bindir = Path(sys.executable).parent
    res = subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
         "--tags", "shared_probe", "--skip-tags", "always", "-e", "paycraft_root=/srv/pc"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SHARED /srv/pc/src/infra/selfhost 54322 /etc/paycraft/paycraft.env" in res.stdout
