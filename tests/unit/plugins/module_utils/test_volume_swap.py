"""The O(1) exchange of two volumes' data directories (module_utils/volume_swap.py), on real directories:
every kill point resumes to the same end, nothing is ever lost, a second call never exchanges back."""

from __future__ import annotations

import json
import os

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import volume_swap as vs


def volumes(tmp_path):
    root = tmp_path / "volumes"
    a = root / "selfhost_paycraft-db" / "_data"
    b = root / "selfhost_paycraft-db-before-rollback-x" / "_data"
    for d, text in ((a, "live"), (b, "restored")):
        d.mkdir(parents=True)
        (d / "PG_VERSION").write_text(text)
    return str(a), str(b), str(tmp_path / "volume-swap.json")


def content(path):
    return open(os.path.join(path, "PG_VERSION")).read()


def test_exchange_swaps_the_data_and_keeps_a_journal_marked_done(tmp_path):
    a, b, j = volumes(tmp_path)
    res = vs.exchange(a, b, j)
    assert (content(a), content(b)) == ("restored", "live")
    assert res["changed"] and not res["resumed"] and len(res["steps"]) == 3
    assert json.loads(open(j).read())["done"] is True
    assert not os.path.exists(a + vs.SWAP_SUFFIX)


def test_a_second_call_never_exchanges_back(tmp_path):
    a, b, j = volumes(tmp_path)
    vs.exchange(a, b, j)
    res = vs.exchange(a, b, j)
    assert not res["changed"]
    assert (content(a), content(b)) == ("restored", "live")


@pytest.mark.parametrize("killed_after", [0, 1, 2, 3])
def test_a_kill_after_any_rename_is_finished_by_the_next_call(tmp_path, killed_after):
    a, b, j = volumes(tmp_path)
    done = []

    def dying_rename(src, dst):
        if len(done) == killed_after:
            raise KeyboardInterrupt("kill -9")
        os.rename(src, dst)
        done.append(src)

    if killed_after < 3:
        with pytest.raises(KeyboardInterrupt):
            vs.exchange(a, b, j, rename=dying_rename)
        # at every point both data directories exist under some name
        names = [p for p in (a, b, a + vs.SWAP_SUFFIX) if os.path.isdir(p)]
        assert sorted(content(p) for p in names) == ["live", "restored"]
    else:
        vs.exchange(a, b, j, rename=dying_rename)
    res = vs.exchange(a, b, j)
    assert (content(a), content(b)) == ("restored", "live")
    assert res["resumed"] == (0 < killed_after < 3)
    assert len(res["steps"]) == (0 if killed_after == 3 else 3 - killed_after)


def test_a_kill_before_the_journal_is_marked_done_is_not_exchanged_back(tmp_path):
    a, b, j = volumes(tmp_path)
    vs.exchange(a, b, j)
    journal = json.loads(open(j).read())
    journal.pop("done")
    open(j, "w").write(json.dumps(journal))
    res = vs.exchange(a, b, j)
    assert not res["changed"] and res["resumed"]
    assert (content(a), content(b)) == ("restored", "live")


def test_an_unfinished_journal_of_other_volumes_refuses(tmp_path):
    a, b, j = volumes(tmp_path)
    open(j, "w").write(json.dumps({"a": "/x/_data", "b": "/y/_data", "a_ino": 1, "b_ino": 2}))
    with pytest.raises(vs.SwapError, match="another exchange"):
        vs.exchange(a, b, j)
    assert (content(a), content(b)) == ("live", "restored")


def test_a_finished_journal_of_other_volumes_is_replaced(tmp_path):
    a, b, j = volumes(tmp_path)
    open(j, "w").write(json.dumps({"a": "/x/_data", "b": "/y/_data", "a_ino": 1, "b_ino": 2, "done": True}))
    vs.exchange(a, b, j)
    assert (content(a), content(b)) == ("restored", "live")


def test_directories_in_no_known_state_refuse_and_move_nothing(tmp_path):
    a, b, j = volumes(tmp_path)
    os.rename(b, b + ".elsewhere")
    with pytest.raises(vs.SwapError, match="no state"):
        vs.exchange(a, b, j)
    assert content(a) == "live" and content(b + ".elsewhere") == "restored"


def vol(name, mountpoint, driver="local", options=None):
    return {"name": name, "driver": driver, "mountpoint": mountpoint, "options": options or {}}


def test_refusal_of_a_driver_other_than_local(tmp_path):
    a, b, _ = volumes(tmp_path)
    msg = vs.refusal(vol("live", a), vol("other", b, driver="rexray"))
    assert "other" in msg and "'rexray'" in msg


def test_refusal_of_driver_options(tmp_path):
    a, b, _ = volumes(tmp_path)
    assert "driver options" in vs.refusal(vol("live", a, options={"type": "nfs"}), vol("other", b))


def test_refusal_of_two_filesystems(tmp_path):
    a, b, _ = volumes(tmp_path)

    class St:
        def __init__(self, dev):
            self.st_dev = dev

    def stat(path):
        return St(2 if path.startswith(os.path.dirname(b)) else 1)

    assert "not on one filesystem" in vs.refusal(vol("live", a), vol("other", b), stat=stat)


def test_refusal_of_a_running_user_and_none_when_fit(tmp_path):
    a, b, _ = volumes(tmp_path)
    assert "paycraft_db" in vs.refusal(vol("live", a), vol("other", b), running={"live": ["paycraft_db"]})
    assert vs.refusal(vol("live", a), vol("other", b), running={"live": []}) is None


def test_inspect_reads_docker_and_refuses_a_missing_volume():
    def run(argv):
        if argv[-1] == "gone":
            return 1, "", "Error: no such volume"
        return 0, json.dumps([{"Name": argv[-1], "Driver": "local", "Mountpoint": "/v/x/_data", "Options": None}]), ""

    assert vs.inspect("x", run=run) == vol("x", "/v/x/_data")
    with pytest.raises(vs.SwapError, match="does not exist"):
        vs.inspect("gone", run=run)
