"""paycraft_smoke reads the anon key from the env file when it is not given (a resumed upgrade or rollback
has no paycraft_env): the gateway's key check answers 401 to a request without one. Real local HTTP server."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.paycraft.selfhost.plugins.modules import paycraft_smoke
from smoke_servers import ANON_KEY, AuthKeyRefused, Stack


def run(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        paycraft_smoke.main()
    return json.loads(capsys.readouterr().out)


def test_the_anon_key_comes_from_the_env_file_when_none_is_given(http_server, tmp_path, capsys):
    server = http_server(Stack)
    env = tmp_path / "paycraft.env"
    env.write_text(f"PAYCRAFT_JWT_SECRET=x\nPAYCRAFT_ANON_KEY={ANON_KEY}\n")
    result = run({"api_url": server.url, "probes": ["auth"], "env_file": str(env), "timeout": 5}, capsys)
    assert result["probes"]["auth"]["ok"], result
    request = next(s for s in server.seen if s["path"] == "/auth/v1/health")
    assert request["headers"]["apikey"] == ANON_KEY
    assert ANON_KEY not in json.dumps(result)


def test_no_key_anywhere_is_the_gateways_401(http_server, tmp_path, capsys):
    env = tmp_path / "paycraft.env"
    env.write_text("PAYCRAFT_JWT_SECRET=x\n")
    result = run({"api_url": http_server(AuthKeyRefused).url, "probes": ["auth"], "env_file": str(env),
                  "timeout": 0.3}, capsys)
    assert result["failed"] and result["probes"]["auth"]["cause_id"] == "gateway_key_refused"
