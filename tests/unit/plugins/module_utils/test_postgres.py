"""module_utils/_postgres.py: the connection options and the password's order of precedence."""

from __future__ import annotations

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres


def test_argument_spec_is_the_doc_fragment():
    import yaml
    from ansible_collections.paycraft.selfhost.plugins.doc_fragments.postgres import ModuleDocFragment

    options = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    spec = _postgres.postgres_common_argument_spec()
    assert set(options) == set(spec)
    for name, option in spec.items():
        assert options[name]["type"] == option["type"], name
        assert options[name].get("default") == option.get("default"), name
        assert options[name].get("aliases") == option.get("aliases"), name
    assert spec["login_password"]["no_log"] is True


def test_password_order_login_password_then_env_file_then_environment(tmp_path):
    env_file = tmp_path / "paycraft.env"
    env_file.write_text("PAYCRAFT_ANON_KEY=x\nPAYCRAFT_DB_PASSWORD='from file'\n")
    environ = {"PGPASSWORD": "from PGPASSWORD", "PAYCRAFT_DB_PASSWORD": "from environment"}
    params = {"login_password": "given", "env_file": str(env_file)}
    assert _postgres.connection_params(params, environ)["password"] == "given"
    params["login_password"] = None
    assert _postgres.connection_params(params, environ)["password"] == "from file"
    params["env_file"] = None
    assert _postgres.connection_params(params, environ)["password"] == "from environment"
    assert _postgres.connection_params(params, {"PGPASSWORD": "pg"})["password"] == "pg"
    assert _postgres.connection_params({}, {}) == {"host": "127.0.0.1", "port": 54322, "user": "postgres",
                                                    "password": None, "dbname": "postgres"}


def test_unix_socket_wins_over_host():
    assert _postgres.connection_params({"login_unix_socket": "/run/pg", "login_host": "h"}, {})["host"] == "/run/pg"


def test_missing_env_file_is_named(tmp_path):
    with pytest.raises(_postgres.PostgresError, match=r"paycraft.env: no such file .*--tags config"):
        _postgres.password_from_env_file(str(tmp_path / "paycraft.env"))


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ('connection to server at "127.0.0.1", port 5 failed: FATAL:  password authentication failed for user "x"',
         "password"),
        ("FATAL:  the database system is starting up", "starting"),
        ('FATAL:  database "nope" does not exist', "no_database"),
        ("Connection refused", "other"),
    ],
)
def test_login_failure_kinds(reason, kind):
    assert _postgres.login_failure_kind(reason) == kind


def test_connect_failure_names_where_and_hides_the_password():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "hunter2-secret-77"
    with pytest.raises(_postgres.PostgresError) as ei:
        _postgres.connect({"host": "127.0.0.1", "port": port, "user": "postgres", "password": secret,
                           "dbname": "postgres"}, "paycraft_test", connect_timeout=2)
    assert ei.value.message.startswith(f"could not connect to PostgreSQL at 127.0.0.1 port {port} as postgres")
    assert secret not in ei.value.message
