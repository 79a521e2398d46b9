"""One owner per concept (issue #32): only the stack role talks to compose and reloads the gateway, through one
task file each, and the service groups are declared once."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ROLES = REPO / "roles"
TASK_FILES = sorted(p for p in ROLES.glob("*/tasks/*.yml")) + sorted((REPO / "playbooks").rglob("*.yml"))
# docker compose as a module, or as a command (a list argv or a string)
COMPOSE = re.compile(r"docker_compose_v2\b|\bdocker,\s*compose\b|'docker',\s*'compose'|\bdocker compose\s+-")
# the stack role's diagnostics only read (ps, and logs through paycraft_logs), on a failed phase of its own
COMPOSE_OWNERS = {"roles/stack/tasks/compose.yml", "roles/stack/tasks/diagnose.yml"}


def hits(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in TASK_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and pattern.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}")
    return found


def test_only_the_stack_role_talks_to_compose():
    others = [h for h in hits(COMPOSE) if h.split(":")[0] not in COMPOSE_OWNERS]
    assert others == [], f"docker compose outside roles/stack/tasks/compose.yml: {others}; include_role " \
                         "paycraft.selfhost.stack tasks_from: compose instead"
    assert hits(COMPOSE), "the pattern finds nothing at all: it is broken"


def test_one_gateway_reload():
    reloads = hits(re.compile(r"\+\s*paycraft_\w*gateway_reload_command|\bkong,\s*reload\b|'kong',\s*'reload'"))
    assert [h.split(":")[0] for h in reloads] == ["roles/stack/tasks/gateway_reload.yml"], reloads
    includes = hits(re.compile(r"\binclude_tasks:\s*gateway_reload"))
    assert includes == [], f"a role's own gateway reload: {includes}"


def test_only_the_source_role_checks_code_out():
    checkouts = hits(re.compile(r"ansible\.builtin\.git:|\bgit,\s*(-C,\s*\S+,\s*)?checkout\b"))
    assert checkouts, "the pattern finds nothing at all: it is broken"
    others = [h for h in checkouts if not h.startswith("roles/source/tasks/")]
    assert others == [], f"a checkout outside the source role: {others}; include_role paycraft.selfhost.source " \
                         "(tasks_from: back for a move back) instead"


def test_the_entry_points_have_argument_specs():
    specs = yaml.safe_load((ROLES / "stack" / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert {"compose", "gateway_reload"} <= set(specs)
    assert set(specs["compose"]["options"]["paycraft_stack_compose_state"]["choices"]) == {
        "present", "stopped", "pulled", "absent", "config", "removed"}


def test_the_service_groups_are_declared_once():
    common = yaml.safe_load((ROLES / "common" / "defaults" / "main.yml").read_text())
    groups = ("paycraft_stack_core_services", "paycraft_stack_app_services", "paycraft_release_client_services")
    for name in groups:
        assert isinstance(common[name], list)
    literal = re.compile(r"\[\s*'?(db|auth|edge-runtime)'?\s*,\s*'?(auth|kong|rest|dashboard)'?")
    found = []
    for path in sorted(ROLES.glob("*/defaults/main.yml")) + sorted(ROLES.glob("*/vars/main.yml")):
        if path.parent.parent.name == "common":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and literal.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == [], f"a service list declared again outside roles/common: {found}"
