"""rollback.yml holds writes from its start (issue #32): the hold comes before every check, a refusal of
those checks lifts it, and nothing in the run takes it again later (the hold of the start is the one lifted
once the restored stack is up). The behaviour itself is tested live: tests/integration/lock and the
Molecule rollback scenario."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
TASKS = yaml.safe_load((REPO / "roles" / "release" / "tasks" / "rollback.yml").read_text())


def flat(tasks):
    """Every task in order, blocks opened (block, then rescue), with the section it sits in."""
    for task in tasks:
        if "block" in task:
            for section in ("block", "rescue", "always"):
                for inner, where in flat(task.get(section) or []):
                    yield inner, where if section == "block" else section
        else:
            yield task, "block"


def holds(task, value: bool) -> bool:
    return task.get("ansible.builtin.include_tasks") == "hold.yml" and (task.get("vars") or {}).get(
        "_release_hold") is value


def index(tasks, predicate) -> int:
    return next(i for i, (task, _) in enumerate(tasks) if predicate(task))


def test_the_hold_is_taken_once_before_the_snapshot_and_copy_checks():
    tasks = list(flat(TASKS))
    taken = [i for i, (task, where) in enumerate(tasks) if holds(task, True)]
    assert len(taken) == 1, "rollback.yml takes the write hold once, at its start"
    snapshot = index(tasks, lambda t: (t.get("paycraft.selfhost.paycraft_snapshot") or {}).get("state") == "verified")
    copy = index(tasks, lambda t: t.get("ansible.builtin.include_tasks") == "copy_check.yml")
    begin = index(tasks, lambda t: (t.get("paycraft.selfhost.paycraft_operation") or {}).get("state") == "begin")
    # the move sequence (move.yml, kind rollback: its first recorded begun step is stop) comes after the record
    move = index(tasks, lambda t: t.get("ansible.builtin.include_tasks") == "move.yml")
    assert (tasks[move][0].get("vars") or {}).get("_release_move_kind") == "{{ _release_rollback_kind }}"
    assert taken[0] < snapshot < copy < begin < move
    # and takes no hold of its own: the one of the run's start is the one it lifts
    sequence = yaml.safe_load((REPO / "roles" / "release" / "tasks" / "move.yml").read_text())[0]["vars"][
        "_release_move_sequence"]
    steps = [row["step"] for row in sequence if "rollback" in row["kinds"]]
    assert "hold" not in steps and "unhold" in steps
    assert steps.index("keep") < steps.index("restore") < steps.index("unhold") < steps.index("smoke")
    beside = [row["step"] for row in sequence if "beside" in row["kinds"]]
    assert "hold" not in beside and beside.index("side") < beside.index("exchange") < beside.index("unhold")
    # before the recovery of an unfinished operation, which keeps this run's hold
    recover = index(tasks, lambda t: t.get("ansible.builtin.include_tasks") == "recover.yml")
    assert taken[0] < recover
    assert (tasks[recover][0].get("vars") or {}).get("_release_keep_hold") is True


def test_a_refusal_of_the_checks_lifts_the_hold_before_it_fails():
    guarded = next(t for t in TASKS if "block" in t
                   and any(x.get("ansible.builtin.include_tasks") == "copy_check.yml" for x in t["block"]))
    names = [x.get("ansible.builtin.include_tasks") for x in guarded["block"]]
    assert "copy_check.yml" in names and "validate_target.yml" in names and "inspect.yml" in names
    rescue = guarded["rescue"]
    lifted = next(i for i, x in enumerate(rescue) if holds(x, False))
    failed = next(i for i, x in enumerate(rescue) if "ansible.builtin.fail" in x)
    assert lifted < failed, "the rescue lifts the hold, then fails with the refusal"


def test_the_record_keeps_when_writes_were_held():
    begin = next(t for t in TASKS if (t.get("paycraft.selfhost.paycraft_operation") or {}).get("state") == "begin")
    assert "writes_held_at" in begin["paycraft.selfhost.paycraft_operation"]["details"]


def test_the_recovery_keeps_the_hold_of_the_rollback_that_called_it():
    recover = yaml.safe_load((REPO / "roles" / "release" / "tasks" / "recover.yml").read_text())
    stale = next(t for t in recover if holds(t, False) and "not _release_op.unfinished" in t.get("when", []))
    assert "not _release_keep_hold | default(false) | bool" in stale["when"]
