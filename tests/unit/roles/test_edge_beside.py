"""The upgrade's edge runtime beside the running one (issue #33): only the stack role's edge_next entry points
the gateway's /functions/v1/ elsewhere; every other write of the Kong file (site.yml's) targets the release's
edge runtime, and the phases that bring the apps up remove a side runtime a killed run left."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
STACK = REPO / "roles" / "stack" / "tasks"


def _files_naming(word: str) -> dict:
    found = {}
    for path in sorted((REPO / "roles").glob("*/tasks/*.yml")) + sorted((REPO / "playbooks").rglob("*.yml")):
        lines = [line for line in path.read_text().splitlines() if word in line and not line.lstrip().startswith("#")]
        if lines:
            found[str(path.relative_to(REPO))] = lines
    return found


def test_only_edge_next_switches_the_functions_upstream():
    found = _files_naming("_stack_functions_host")
    assert set(found) == {"roles/stack/tasks/override.yml", "roles/stack/tasks/edge_next.yml"}, found
    # the Kong file's writer: the release's edge runtime unless edge_next says otherwise
    assert [line.strip() for line in found["roles/stack/tasks/override.yml"]] == [
        "functions_host: \"{{ _stack_functions_host | default('') }}\""]
    tasks = yaml.safe_load((STACK / "edge_next.yml").read_text())
    switches = [t for block in tasks for t in block.get("block", [])
                if (t.get("vars") or {}).get("_stack_functions_host")]
    assert [t["ansible.builtin.include_tasks"] for t in switches] == ["override.yml"]
    # switched to the side runtime only after it answered, in the present block
    present = next(t for t in tasks if "present" in str(t.get("when")) and t.get("block"))
    names = [t["name"] for t in present["block"]]
    assert names.index("Wait until the side edge runtime answers at its own address") < \
        names.index(switches[0]["name"])


def test_the_phases_that_bring_the_apps_up_remove_a_left_over_side_runtime():
    for entry in ("apps", "main"):
        tasks = yaml.safe_load((STACK / f"{entry}.yml").read_text())
        last = tasks[-1]
        assert last["ansible.builtin.include_tasks"]["file"] == "edge_next.yml", entry
        assert last["vars"] == {"paycraft_stack_edge_next_state": "absent"}, entry


def test_the_side_runtime_is_not_published_and_starts_by_name_only():
    template = (STACK.parent / "templates" / "compose.override.yml.j2").read_text()
    side = template.split("{{ paycraft_stack_edge_next_service }}:", 1)[1].split("{% endif %}\n{% if _fill_rest", 1)[0]
    assert 'profiles: ["paycraft-upgrade"]' in side
    assert re.search(r"'container_name', 'ports', 'depends_on'", side)
