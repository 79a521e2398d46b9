"""The write hold (plugins/module_utils/write_hold.py and gateway.py's hold), without Ansible or Docker.

What a gateway then answers (503 + Retry-After for writes, reads through) is tested with the reference
gateway's nginx in tests/unit/reference/test_kong_render.py (the configuration) and on a converged host
in molecule/rollback (a client writing through every upgrade, rollback and restore).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import gateway
from ansible_collections.paycraft.selfhost.plugins.module_utils import write_hold as wh
from paycraft_testlib import REPO

RELEASE_KONG = REPO / "reference" / "release" / "base" / "infra" / "selfhost" / "kong.yml"
PASS = "p" * 24


def rendered(plugins=None) -> str:
    config = gateway.with_key_check(yaml.safe_load(RELEASE_KONG.read_text()), "anon.jwt", "service.jwt")
    if plugins is not None:
        config["plugins"] = plugins
    return gateway.render(config, "header")


def test_the_lua_refuses_writes_with_503_and_retry_after_and_names_its_ways_through():
    lua = gateway.hold_lua(gateway.hold_spec(PASS, ["get_suite_config"], 45))
    assert lua.startswith("-- paycraft-write-hold {")
    assert gateway.spec_of_lua(lua) == {"pass": PASS, "read_functions": ["get_suite_config"], "retry_after": 45}
    assert 'method == "GET" or method == "HEAD" or method == "OPTIONS"' in lua
    assert f'kong.request.get_header("x-paycraft-hold-pass") == "{PASS}"' in lua
    assert '{["get_suite_config"] = true}' in lua
    assert 'kong.response.exit(503, {message = ' in lua and '{["Retry-After"] = "45"}' in lua


@pytest.mark.parametrize("plugins", [None, [], [{"name": "cors"}]])
def test_the_hold_goes_in_and_out_of_a_rendered_file_as_text(plugins):
    before = rendered(plugins)
    spec = gateway.hold_spec(PASS, ["get_suite_config"])
    held = gateway.text_with_hold(before, spec)
    config = yaml.safe_load(held)
    assert config["plugins"][0]["name"] == "pre-function"
    assert config["plugins"][0]["tags"] == [gateway.HOLD_TAG]
    assert [p["name"] for p in config["plugins"][1:]] == [p["name"] for p in plugins or []]
    assert gateway.write_hold_of(config) == spec == gateway.text_hold(held)
    assert gateway.text_with_hold(held, spec) == held
    assert gateway.text_without_hold(held) == before
    assert gateway.text_hold(before) is None


def test_a_release_with_its_own_global_pre_function_is_refused():
    with pytest.raises(gateway.GatewayError, match="pre-function"):
        gateway.text_with_hold(rendered([{"name": "pre-function", "config": {"access": ["return"]}}]),
                               gateway.hold_spec(PASS))


@pytest.mark.parametrize("token, names, retry", [("short", [], 30), (PASS, ["drop table"], 30), (PASS, [], 0)])
def test_bad_specs_are_refused(token, names, retry):
    with pytest.raises(gateway.GatewayError):
        gateway.hold_spec(token, names, retry)


def test_take_and_release_write_the_record_0600_and_the_kong_file_in_place(tmp_path):
    kong = tmp_path / "kong.yml"
    kong.write_text(rendered())
    inode = kong.stat().st_ino
    record_path = str(tmp_path / "write-hold.json")
    record, changed = wh.take(record_path, str(kong), "upgrade v1 -> v2", ["get_suite_config"], 30, "T1")
    assert changed and kong.stat().st_ino == inode
    assert stat.S_IMODE(os.stat(record_path).st_mode) == 0o600
    assert gateway.text_hold(kong.read_text())["pass"] == record["pass"]
    assert "pass" not in wh.public(record) and wh.public(record)["operation"] == "upgrade v1 -> v2"
    again, changed = wh.take(record_path, str(kong), "restore", [], 30, "T2")
    assert again["pass"] == record["pass"] and again["since"] == "T1"  # the hold in force goes on
    assert gateway.text_hold(kong.read_text())["read_functions"] == []
    released, changed = wh.release(record_path, str(kong))
    assert changed and released["operation"] == "restore"
    assert not os.path.exists(record_path) and gateway.text_hold(kong.read_text()) is None
    assert kong.stat().st_ino == inode
    assert wh.release(record_path, str(kong)) == (None, False)


def test_without_a_gateway_file_only_the_record_is_written(tmp_path):
    record_path = str(tmp_path / "write-hold.json")
    record, changed = wh.take(record_path, None, "restore", [], 30, "T1")
    assert changed is False and json.loads(open(record_path).read())["pass"] == record["pass"]
    with pytest.raises(wh.HoldError, match="does not exist"):
        wh.apply_to_kong_file(str(tmp_path / "missing.yml"), gateway.hold_spec(PASS))


class Psql:
    """A runner answering psql with the given outputs in turn (rc 1 for None)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, argv, cwd=None, timeout=None):
        self.calls.append(argv)
        answer = self.answers.pop(0)
        return (1, "", "no such container") if answer is None else (0, answer, "")


def test_read_functions_and_a_database_that_does_not_answer():
    assert wh.read_functions(Psql("get_suite_config\nget_x\n"), "db") == ["get_suite_config", "get_x"]
    assert wh.read_functions(Psql(None), "db") == []


def test_wait_idle_waits_for_running_requests_and_gives_up_after_its_timeout():
    now = [0.0]

    def sleep(s):
        now[0] += s

    assert wh.wait_idle(Psql("2", "1", "0"), "db", 10, clock=lambda: now[0], sleep=sleep) == 0
    assert now[0] == pytest.approx(0.4)
    assert wh.wait_idle(Psql(None), "db", 10, clock=lambda: now[0], sleep=sleep) == 0
    with pytest.raises(wh.HoldError, match="still run"):
        wh.wait_idle(Psql(*["1"] * 100), "db", 1, clock=lambda: now[0], sleep=sleep)


def test_gateway_file_of_reads_the_bind_mount_at_the_declarative_config_path():
    info = {"Config": {"Env": ["KONG_DECLARATIVE_CONFIG=/home/kong/kong.yml"]},
            "Mounts": [{"Type": "volume", "Destination": "/data", "Source": "/v"},
                       {"Type": "bind", "Destination": "/home/kong/kong.yml",
                        "Source": "/opt/paycraft/fill/gateway/kong.yml"}]}
    assert wh.gateway_file_of(lambda argv, cwd=None, timeout=None: (0, json.dumps(info), ""), "k") == \
        "/opt/paycraft/fill/gateway/kong.yml"
    assert wh.gateway_file_of(lambda argv, cwd=None, timeout=None: (1, "", "no such object"), "k") is None
    info["Mounts"].pop()
    assert wh.gateway_file_of(lambda argv, cwd=None, timeout=None: (0, json.dumps(info), ""), "k") is None
