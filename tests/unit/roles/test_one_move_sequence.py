"""One move sequence (issue #32): the release role's steps are ordered once, in roles/release/tasks/move.yml, and
recorded by its loop; upgrade, its automatic rollback, rollback.yml and recover.yml only choose a kind and its
switches; the restore block exists once. The names it records are the contract of the kill -9 matrix
(molecule/kill, kill-at.sh). The sequence itself runs live in the Molecule rollback and kill scenarios."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
TASKS = REPO / "roles" / "release" / "tasks"
ALL_TASK_FILES = sorted((REPO / "roles").glob("*/tasks/*.yml")) + sorted((REPO / "playbooks").rglob("*.yml"))
MOVE = yaml.safe_load((TASKS / "move.yml").read_text())
SEQUENCE = MOVE[0]["vars"]["_release_move_sequence"]
KINDS = ("upgrade", "rollback", "restore", "beside")
# the step files of the sequence (move_step.yml runs one step of the loop; move.yml is the loop)
STEP_FILES = {p.name for p in TASKS.glob("move_*.yml")} - {"move_step.yml"}


def tasks_of(data):
    """Every task of a task file, blocks opened."""
    for task in data or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from tasks_of(task.get(section))


def task_files():
    for path in ALL_TASK_FILES:
        yield path, list(tasks_of(yaml.safe_load(path.read_text())))


def begun_records(kind: str) -> list[str]:
    """The names a kind of move records as begun, in order (the snapshot and the copy record themselves)."""
    names = []
    for row in SEQUENCE:
        if kind not in row["kinds"]:
            continue
        if row["step"] == "snapshot" and kind == "upgrade":
            names.append("snapshot")
        names += row.get(kind, [])
        if row["step"] == "keep":
            names.append("keep")  # keep_current.yml
    return names


def recorded_done(kind: str) -> list[str]:
    """The names a step file records done itself, beside the loop's begun records."""
    return [name for row in SEQUENCE if kind in row["kinds"]
            for name in {"snapshot": ["snapshot"], "keep": ["keep"], "exchange": ["exchange"],
                         "restored": ["restore"]}.get(row["step"], [])]


def test_every_step_has_its_task_file_and_every_step_file_a_row():
    steps = [row["step"] for row in SEQUENCE]
    assert len(steps) == len(set(steps)), f"a step twice in the sequence: {steps}"
    assert {f"move_{s}.yml" for s in steps} == STEP_FILES
    for row in SEQUENCE:
        assert set(row["kinds"]) <= set(KINDS), row
        assert set(row) - {"step", "kinds"} <= set(row["kinds"]), f"records for a kind that does not run it: {row}"


def test_the_order_is_written_in_move_yml_only():
    # the step files are included by the loop alone (move_step.yml, templated), nowhere by name
    named = re.compile(r"\bmove_(" + "|".join(re.escape(f[5:-4]) for f in STEP_FILES) + r")\.yml\b")
    found = [f"{p.relative_to(REPO)}:{n}" for p in ALL_TASK_FILES
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if not line.lstrip().startswith("#") and named.search(line)]
    assert found == [], f"a step file of the move included by name, outside the sequence's loop: {found}"
    # no other file records steps begun by name (a sequence written out again); the copy records its own
    literal = []
    for path, tasks in task_files():
        if path.parent != TASKS or path.name in STEP_FILES | {"keep_current.yml"}:
            continue
        for task in tasks:
            v = task.get("vars") or {}
            named_step = "{{" not in str(v.get("_release_step", "{{"))
            if task.get("ansible.builtin.include_tasks") == "step.yml" and named_step:
                literal.append(f"{path.name}: {v['_release_step']} {v.get('_release_step_status')}")
    assert literal == [], f"steps recorded outside the move sequence: {literal}"
    # the sequence is included whole, with a kind, from the callers only
    callers = sorted((p.name, t["vars"]["_release_move_kind"]) for p, tasks in task_files() for t in tasks
                     if t.get("ansible.builtin.include_tasks") == "move.yml")
    assert callers == [("recover.yml", "restore"), ("rollback.yml", "{{ _release_rollback_kind }}"),
                       ("upgrade.yml", "restore"), ("upgrade.yml", "upgrade")]
    # rollback.yml chooses between its two kinds, nothing else
    rollback = (TASKS / "rollback.yml").read_text()
    assert "'beside' if" in rollback and "else 'rollback'" in rollback


def test_the_restore_block_exists_once():
    def where(predicate):
        return sorted(f"{p.relative_to(REPO)}" for p, tasks in task_files() for t in tasks if predicate(t))

    restores = where(lambda t: (t.get("paycraft.selfhost.paycraft_snapshot") or {}).get("state") == "restored")
    assert restores == ["roles/release/tasks/restore_snapshot.yml"]
    # included by the restore in place and by the restore beside the live database (rollback kind beside), only
    included = where(lambda t: t.get("ansible.builtin.include_tasks") == "restore_snapshot.yml")
    assert included == ["roles/release/tasks/move_restore.yml", "roles/release/tasks/move_side.yml"]
    # the exchange of the two volumes' data happens in its step, and in the recovery that finishes it
    swaps = where(lambda t: "paycraft.selfhost.paycraft_volume_swap" in t
                  and (t["paycraft.selfhost.paycraft_volume_swap"] or {}).get("state", "exchanged") == "exchanged")
    assert swaps == ["roles/release/tasks/move_exchange.yml", "roles/release/tasks/recover.yml"]
    keeps = where(lambda t: t.get("ansible.builtin.include_tasks") == "keep_current.yml")
    assert keeps == ["roles/release/tasks/move_keep.yml"], "the copy before a restore is taken in one place"
    checkouts = where(lambda t: (t.get("ansible.builtin.include_role") or {}).get("name") == "paycraft.selfhost.source")
    assert [c for c in checkouts if c.startswith("roles/release/tasks/move")] == [
        "roles/release/tasks/move_checkout.yml"] * 2, "the move checks out in one place (the source role's two entries)"
    assert not (TASKS / "restore.yml").exists()


@pytest.mark.parametrize(("kind", "expected"), [
    ("upgrade", ["snapshot", "checkout", "images", "migrate", "recreate", "smoke"]),
    ("rollback", ["stop", "move_aside", "keep", "checkout", "restore", "up", "smoke"]),
    ("restore", ["restore", "keep"]),
    ("beside", ["side", "switch", "exchange", "checkout", "up", "smoke"]),
])
def test_the_recorded_steps_are_the_kill_matrix_contract(kind, expected):
    assert begun_records(kind) == expected


def test_every_step_the_kill_matrix_kills_at_is_recorded():
    verify = yaml.safe_load((REPO / "molecule" / "kill" / "verify.yml").read_text())
    trials = verify[0]["vars"]["_trials"]
    recorded = {name for kind in KINDS for name in begun_records(kind)}
    for trial in trials:
        assert trial["step"] in recorded, trial


def test_the_hold_is_the_sequences_own_only_where_the_caller_does_not_hold():
    steps = {kind: [row["step"] for row in SEQUENCE if kind in row["kinds"]] for kind in KINDS}
    assert steps["rollback"][0] != "hold" and "hold" not in steps["rollback"]  # rollback.yml holds at its start
    assert steps["upgrade"][0] == "hold" and "unhold" not in steps["upgrade"]  # lifted after the record closes
    assert steps["restore"].index("hold") < steps["restore"].index("keep") < steps["restore"].index("restore")
    for kind in ("rollback", "restore"):  # writes flow only once the restored stack is up
        assert steps[kind].index("restore") < steps[kind].index("unhold") < steps[kind].index("smoke")
    # beside: held by rollback.yml; restored beside the live database, then the switch, the exchange, the
    # checkout; writes flow only once the stack is up on the restored data
    assert "hold" not in steps["beside"]
    order = ["snapshot", "side", "switch", "exchange", "checkout", "core", "recreate", "reload", "unhold", "smoke"]
    assert steps["beside"] == order
    assert recorded_done("beside") == ["snapshot", "exchange"]


def test_a_rollback_beside_is_undone_before_its_exchange_and_finished_from_it():
    """The contract of recover.yml for a killed rollback beside the live database: the steps before the exchange
    change no live data (operation.BEFORE_LIVE_CHANGE), so a kill there is undone; from the exchange on it is
    finished."""
    from ansible_collections.paycraft.selfhost.plugins.module_utils import operation

    before = begun_records("beside")[:begun_records("beside").index("exchange")]
    assert set(before) | {"snapshot"} <= set(operation.BEFORE_LIVE_CHANGE)
    assert "exchange" not in operation.BEFORE_LIVE_CHANGE
    recover = (TASKS / "recover.yml").read_text()
    assert "_undo: \"{{ _beside | bool and 'exchange' not in _names }}\"" in recover
    assert "_exchanged: \"{{ _beside | bool and 'exchange' in _names }}\"" in recover


def test_the_move_back_names_its_version_outside_paycraft_version():
    """An operator's -e paycraft_version=<the new tag> outranks an include's vars: a move back that took its
    version through paycraft_version would check the failed version out again (seen: site.yml from an
    untagged commit, rolled back, left at the broken tag)."""
    tasks = yaml.safe_load((TASKS / "move_checkout.yml").read_text())
    back = [t for t in tasks if (t.get("ansible.builtin.include_role") or {}).get("tasks_from") == "back"]
    assert len(back) == 1
    assert "paycraft_version" not in back[0].get("vars", {})
    assert back[0]["vars"]["_paycraft_source_back_version"] == "{{ _release_move_version }}"
    entry = yaml.safe_load((REPO / "roles" / "source" / "tasks" / "back.yml").read_text())
    assert "paycraft_version" not in yaml.safe_dump(entry).replace("_paycraft_source_back_version", "")
