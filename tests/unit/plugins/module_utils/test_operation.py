"""module_utils/operation.py: versions and the atomic state file (the host lock: test_lease.py)."""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import operation as op

HOLDER = {"controller": "ctl", "user": "root", "pid": 4242, "since": "2026-11-28T23:00:00Z",
          "operation": "upgrade", "from_version": "v1.0.0", "to_version": "v1.1.0"}


@pytest.mark.parametrize(
    "installed,target,expected",
    [
        ("v1.0.0", "v1.1.0", "upgrade"),
        ("v1.1.0", "v1.1.1-broken-migration", "upgrade"),
        ("v1.1.0", "v1.0.0", "downgrade"),
        ("v1.1.0", "v1.1.0", "same"),
        ("v1.1.0", "main", "unknown"),
        ("v1.1.1-a", "v1.1.1-b", "unknown"),
    ],
)
def test_direction(installed, target, expected):
    assert op.direction(installed, target) == expected


def test_state_records_each_step_and_survives_as_unfinished(tmp_path):
    path = str(tmp_path / "operation.json")
    st = op.new_state("upgrade", "v1.0.0", "v1.1.0", HOLDER)
    op.mark_step(st, "snapshot", "begun")
    op.write_state(path, st)
    op.mark_step(st, "snapshot", "done", {"path": "/var/backups/paycraft/x"})
    op.write_state(path, st)
    again = op.read_state(path)
    assert op.is_unfinished(again)
    assert op.step_done(again, "snapshot") and not op.step_done(again, "migrate")
    assert op.last_step(again)["name"] == "snapshot"
    assert "upgrade v1.0.0 -> v1.1.0" in op.describe(again)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    op.finish(again, "done")
    op.write_state(path, again)
    assert not op.is_unfinished(op.read_state(path))
    assert sorted(os.listdir(tmp_path)) == ["operation.json"]


def test_an_unreadable_state_file_is_an_error_not_a_fresh_start(tmp_path):
    path = tmp_path / "operation.json"
    path.write_text("{not json")
    with pytest.raises(op.OperationError, match="cannot be read"):
        op.read_state(str(path))
    assert op.read_state(str(tmp_path / "absent.json")) is None


def test_beginning_a_step_ends_the_one_before_and_a_finished_run_ends_the_last():
    st = op.new_state("upgrade", "v1.0.0", "v1.1.0", HOLDER)
    op.mark_step(st, "checkout", "begun")
    op.mark_step(st, "migrate", "begun")
    assert [(e["name"], e["status"]) for e in st["steps"]] == [
        ("checkout", "begun"), ("checkout", "done"), ("migrate", "begun")]
    op.mark_step(st, "migrate", "failed")
    op.mark_step(st, "restore", "begun")
    assert st["steps"][-1] == {"name": "restore", "status": "begun", "at": st["steps"][-1]["at"]}
    assert not op.step_done(st, "migrate")
    op.finish(st, "done")
    assert op.step_done(st, "restore")


def _steps(state, *names_statuses):
    for name, status in names_statuses:
        op.mark_step(state, name, status)
    return state


def test_a_rollback_is_restored_once_its_up_step_began():
    st = op.new_state("rollback", "v1.1.0", "v1.0.0", HOLDER)
    _steps(st, ("snapshot", "done"), ("stop", "begun"), ("move_aside", "begun"), ("keep", "begun"), ("keep", "done"),
           ("checkout", "begun"), ("restore", "begun"))
    assert not op.restored(st)  # killed during pg_restore: the next run restores again
    op.mark_step(st, "up", "begun")  # ends the restore
    assert op.restored(st)
    op.mark_step(st, "smoke", "begun")
    assert op.restored(st)


def test_the_restore_done_that_beginning_keep_writes_is_not_a_finished_restore():
    st = op.new_state("upgrade", "v1.0.0", "v1.1.0", HOLDER)
    _steps(st, ("snapshot", "done"), ("migrate", "begun"), ("migrate", "failed"), ("restore", "begun"),
           ("keep", "begun"))
    assert ("restore", "done") in [(e["name"], e["status"]) for e in st["steps"]]
    assert not op.restored(st)
    op.mark_step(st, "keep", "done")
    assert not op.restored(st)  # killed while restoring: restore again
    op.mark_step(st, "restore", "done")  # tasks/move_restored.yml, the stack up again
    assert op.restored(st)
    # a later run that copies the database again and restores: not restored until its own restore is done
    _steps(st, ("restore", "begun"), ("keep", "begun"), ("keep", "done"))
    assert not op.restored(st)


def test_nothing_is_restored_before_a_copy_was_kept():
    assert not op.restored(op.new_state("upgrade", "v1.0.0", "v1.1.0", HOLDER))
    rollback = op.new_state("rollback", "v1.1.0", "v1.0.0", HOLDER)
    assert not op.restored(_steps(rollback, ("restore", "begun"), ("restore", "done")))


def test_a_rollback_whose_copy_of_the_live_volume_failed_may_end_as_refused():
    st = op.new_state("rollback", "v1.1.0", "v1.0.0", HOLDER)
    _steps(st, ("snapshot", "done"), ("stop", "begun"), ("move_aside", "begun"), ("keep", "begun"),
           ("keep", "failed"))
    assert op.untouched(st)
    op.finish(st, "refused", "the copy did not fit")
    assert (st["status"], st["message"]) == ("refused", "the copy did not fit")
    assert not op.is_unfinished(st)  # no later run completes it over the live database
    assert st["steps"][-1]["status"] == "failed"  # refused does not mark the last step done


@pytest.mark.parametrize("after", [
    # the copy completed: the live volume is removed right after, so a later run must complete the rollback
    [("keep", "done")],
    [("keep", "done"), ("checkout", "begun"), ("checkout", "failed")],
    [("keep", "done"), ("checkout", "begun"), ("restore", "begun"), ("up", "begun"), ("smoke", "begun")],
    # an upgrade's steps after its snapshot change the live stack
    [("migrate", "begun"), ("migrate", "failed")],
    # a copy begun again by the automatic rollback of an upgrade (restore before keep)
    [("restore", "begun"), ("keep", "begun"), ("keep", "failed")],
])
def test_an_operation_that_got_past_the_copy_cannot_end_as_refused(after):
    st = op.new_state("rollback", "v1.1.0", "v1.0.0", HOLDER)
    _steps(st, ("snapshot", "done"), ("stop", "begun"), ("move_aside", "begun"), ("keep", "begun"), *after)
    assert not op.untouched(st)
    before = [dict(e) for e in st["steps"]]
    with pytest.raises(op.OperationError, match=r"cannot end as refused: .* it stays unfinished"):
        op.finish(st, "refused")
    assert op.is_unfinished(st) and st["steps"] == before


def test_an_operation_with_no_step_yet_may_end_as_refused():
    st = op.new_state("rollback", "v1.1.0", "v1.0.0", HOLDER)
    assert op.untouched(st)
    assert op.finish(st, "refused")["status"] == "refused"
