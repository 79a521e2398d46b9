"""paycraft_gateway_config module face: the file written, the keys read on the host and never in the result."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.paycraft.selfhost.plugins.modules import paycraft_gateway_config
from paycraft_testlib import REPO

KONG = yaml.safe_load((REPO / "reference" / "release" / "base" / "infra" / "selfhost" / "kong.yml").read_text())
ANON, SERVICE = "anon.key.value-1", "service.key.value-2"


def run(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        paycraft_gateway_config.main()
    return json.loads(capsys.readouterr().out)


def test_writes_the_file_and_masks_the_keys_in_the_diff(tmp_path, capsys):
    env = tmp_path / "paycraft.env"
    env.write_text(f"PAYCRAFT_ANON_KEY={ANON}\nPAYCRAFT_SERVICE_ROLE_KEY={SERVICE}\n")
    dest = tmp_path / "kong.yml"
    dest.write_text('consumers:\n  - username: "anon"\n    keyauth_credentials:\n      - key: "old-anon-key"\n')
    result = run({"kong": KONG, "env_file": str(env), "dest": str(dest), "_ansible_diff": True}, capsys)
    assert result["changed"] and result["consumers"] == ["anon", "service_role"]
    written = yaml.safe_load(dest.read_text())
    assert [c["keyauth_credentials"][0]["key"] for c in written["consumers"]] == [ANON, SERVICE]
    out = json.dumps(result)
    assert ANON not in out and SERVICE not in out and "old-anon-key" not in out
    assert result["diff"]["after"].count('key: "********"') == 2
    assert result["diff"]["before"].count('key: "********"') == 1
    again = run({"kong": KONG, "env_file": str(env), "dest": str(dest)}, capsys)
    assert not again["changed"] and again["checksum"] == result["checksum"]


def test_the_functions_upstream_switch_is_written_in_place_and_left_out_of_the_checksum(tmp_path, capsys):
    env = tmp_path / "paycraft.env"
    env.write_text(f"PAYCRAFT_ANON_KEY={ANON}\nPAYCRAFT_SERVICE_ROLE_KEY={SERVICE}\n")
    dest = tmp_path / "kong.yml"
    args = {"kong": KONG, "env_file": str(env), "dest": str(dest)}
    main = run(args, capsys)
    assert main["functions_upstream"] == ["http://edge-runtime:9000"]
    inode = dest.stat().st_ino
    side = run({**args, "functions_host": "edge-runtime-next"}, capsys)
    assert side["changed"] and side["functions_upstream"] == ["http://edge-runtime-next:9000"]
    # the gateway container's label does not change (no recreate); its bind mount sees the same inode
    assert side["checksum"] == main["checksum"] and dest.stat().st_ino == inode
    assert "http://edge-runtime-next:9000/" in dest.read_text()
    back = run(args, capsys)
    assert back["changed"] and back["functions_upstream"] == ["http://edge-runtime:9000"]
    assert "edge-runtime-next" not in dest.read_text() and dest.stat().st_ino == inode
    assert not run(args, capsys)["changed"]


def test_a_switch_it_cannot_make_fails_with_the_reason(tmp_path, capsys):
    dest = tmp_path / "kong.yml"
    result = run({"kong": KONG, "key_check": False, "dest": str(dest), "functions_host": "bad host"}, capsys)
    assert result["failed"] and "not a host name" in result["msg"] and not dest.exists()
