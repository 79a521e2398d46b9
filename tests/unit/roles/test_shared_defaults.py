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


# --- A value two roles read is defined once (issue #32) -------------------------------------------------------------
# A role that reads another role's variable through `| default(...)` copies that role's default: the two drift
# apart as soon as one changes. Such a value lives in roles/common (a dependency of every role) instead.
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "main.yml").is_file())
ROLE_DIRS = ("tasks", "templates", "defaults", "vars", "handlers", "meta")
OWN_DEFAULTS = {r: set(yaml.safe_load(d.read_text()) or {}) for r in ROLE_NAMES
                if (d := ROLES / r / "defaults" / "main.yml").is_file()}
NAME_WITH_DEFAULT = re.compile(r"\b(paycraft_\w+)\s*\|\s*default\(")
# Playbooks are scanned for copies of a role's default. They read these at play level, before the role that
# defines them is loaded (play keywords, the host lock's operation name): a default there is the only way.
PLAY_LEVEL = {
    "paycraft_backup_drill": "playbooks/backup.yml names the lock's operation before the backup role runs",
    "paycraft_rotate_secret": "playbooks/rotate.yml names the lock's operation and a task before the rotate role runs",
    "paycraft_rotate_revert": "playbooks/rotate.yml names the lock's operation before the rotate role runs",
    "paycraft_rollback_version": "playbooks/rollback.yml names the lock's operation before the release role runs",
    "paycraft_rollback_snapshot": "playbooks/rollback.yml names the lock's operation before the release role runs",
}


def owners(name: str, reader: str | None) -> list[str]:
    """The roles other than `reader` (and common) a variable belongs to: the one its prefix names, those whose
    defaults define it. A name that only roles/common defines belongs to every role."""
    if reader is not None and name in OWN_DEFAULTS.get(reader, set()):
        return []
    prefixed = [r for r in ROLE_NAMES if name.startswith(f"paycraft_{r}_")]
    defining = [r for r, names in OWN_DEFAULTS.items() if name in names and r != "common"]
    return sorted({r for r in prefixed + defining if r != reader})


def cross_role_defaults() -> list[str]:
    found = []
    files = [(r, p) for r in ROLE_NAMES for d in ROLE_DIRS for p in sorted((ROLES / r / d).rglob("*")) if p.is_file()]
    files += [(None, p) for p in sorted((REPO / "playbooks").rglob("*.yml"))]
    for role, path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in NAME_WITH_DEFAULT.finditer(line):
                name = match.group(1)
                if role is None and name in PLAY_LEVEL:
                    continue
                others = owners(name, role)
                if role is None:  # a playbook: only a copy of a role's default counts (facts are set by the roles)
                    others = [r for r in others if name in OWN_DEFAULTS.get(r, set())]
                if others:
                    found.append(f"{path.relative_to(REPO)}:{number}: {name} ({', '.join(others)})")
    return found


def test_no_role_copies_another_roles_default():
    """`paycraft_<other role>_... | default(...)` in a role is a second copy of that role's default."""
    found = cross_role_defaults()
    assert found == [], (
        "these read another role's value with a copy of its default; move the value to "
        "roles/common/defaults/main.yml and drop the default:\n" + "\n".join(found))


def test_the_scan_finds_a_copied_default(tmp_path, monkeypatch):
    """The scan above is not blind: a copy put into a role's tasks is found, with its file and line."""
    role = tmp_path / "roles"
    for name in ROLE_NAMES:
        (role / name / "meta").mkdir(parents=True)
        (role / name / "meta" / "main.yml").write_text("---\n")
    (role / "release" / "tasks").mkdir()
    copy = "- debug:\n    msg: \"{{ paycraft_stack_pull | default('missing') }}\"\n"
    (role / "release" / "tasks" / "x.yml").write_text(copy)
    (tmp_path / "playbooks").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROLES", role)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "OWN_DEFAULTS", {"stack": {"paycraft_stack_pull"}})
    assert cross_role_defaults() == ["roles/release/tasks/x.yml:2: paycraft_stack_pull (stack)"]
