"""paycraft_rotate module, executed as Ansible executes it, against the session's PostgreSQL cluster.

The roles, the env file and the compose file are the test's own (t_rotm_* roles, a temp directory):
never PayCraft's production names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as ef
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as k

REPO = Path(__file__).resolve().parents[4]
MODULE = REPO / "plugins" / "modules" / "paycraft_rotate.py"
pytestmark = pytest.mark.postgres


def run(tmp_path: Path, args: dict, *, check=False, diff=False):
    """Run the module file with an args file, as Ansible's module runner does; (result, all output)."""
    args_file = tmp_path / "args.json"
    internal = {"_ansible_check_mode": check, "_ansible_diff": diff}
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, **internal}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout), proc.stdout + proc.stderr


@pytest.fixture
def setup(pg, pg_db, tmp_path):
    tag = uuid.uuid4().hex[:8]
    admin, app = f"t_rotm_admin_{tag}", f"t_rotm_app_{tag}"
    old = k.generate_db_password()
    conn = psycopg2.connect(**pg.params())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{admin}" LOGIN SUPERUSER PASSWORD %s', (old,))
        cur.execute(f'CREATE ROLE "{app}" LOGIN PASSWORD %s', (old,))
    secret = k.generate_jwt_secret()
    env_file = tmp_path / "conf" / "paycraft.env"
    env_file.parent.mkdir(mode=0o700)
    env = ef.EnvFile()
    for key, value in ((k.DB_PASSWORD, old), (k.JWT_SECRET, secret), (k.ANON_KEY, k.make_role_key("anon", secret)),
                       (k.SERVICE_ROLE_KEY, k.make_role_key("service_role", secret))):
        env.set(key, value)
    ef.write_atomic(str(env_file), env.render(), mode=0o600)
    compose = {"services": {
        "db": {"environment": {"POSTGRES_USER": admin, "POSTGRES_PASSWORD": "${PAYCRAFT_DB_PASSWORD}"}},
        "api": {"depends_on": ["db"], "environment": {
            "DB_URL": f"postgres://{app}:${{PAYCRAFT_DB_PASSWORD}}@db:5432/postgres",
            "JWT": "${PAYCRAFT_JWT_SECRET}", "ANON": "${PAYCRAFT_ANON_KEY}"}},
    }}
    args = {"secret": "db_password", "env_file": str(env_file), "login_host": pg.host, "login_port": pg.port,
            "login_user": admin, "login_db": pg_db["dbname"], "compose": [compose], "host_name": "web1"}
    values = {"old": old, "secret": secret, "env": env.as_dict()}
    try:
        yield args, env_file, values, app
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{app}"')
            cur.execute(f'DROP ROLE IF EXISTS "{admin}"')
        conn.close()


def login_ok(args: dict, role: str, password: str) -> bool:
    try:
        psycopg2.connect(host=args["login_host"], port=args["login_port"], user=role, password=password,
                         dbname=args["login_db"], connect_timeout=5).close()
    except psycopg2.OperationalError:
        return False
    return True


def secrets_of(env_file: Path, values: dict) -> list:
    now = ef.EnvFile.read(str(env_file)).as_dict()
    return [v for v in [*values["env"].values(), *now.values()] if v]


def test_check_mode_and_planned_list_names_with_a_masked_diff(setup, tmp_path):
    args, env_file, values, app = setup
    before = env_file.read_bytes()
    res, out = run(tmp_path, args, check=True, diff=True)
    assert res["changed"] is True and not res.get("failed"), json.dumps(res)
    assert res["plan"]["roles"] == [args["login_user"], app] and res["plan"]["services"] == ["db", "api"]
    assert "PAYCRAFT_DB_PASSWORD=******** (new)" in res["diff"]["after"]
    res2, out2 = run(tmp_path, dict(args, state="planned"))
    assert res2["changed"] is False and res2["plan"]["roles"] == res["plan"]["roles"]
    assert env_file.read_bytes() == before
    for value in secrets_of(env_file, values):
        assert value not in out and value not in out2


def test_rotate_finish_and_revert_through_the_module(setup, tmp_path):
    args, env_file, values, app = setup
    res, out = run(tmp_path, dict(args, state="rotated"), diff=True)
    assert res["changed"] is True and not res.get("failed"), res
    new = ef.EnvFile.read(str(env_file)).get(k.DB_PASSWORD)
    assert res["verification"][app] == {"new": "accepted", "old": "refused"}
    assert login_ok(args, app, new) and not login_ok(args, app, values["old"])
    for value in [*secrets_of(env_file, values), new]:
        assert value not in out
    # a second rotation is refused while the first one is recorded
    res2, _ = run(tmp_path, dict(args, state="rotated"))
    assert res2["failed"] and "did not finish" in res2["msg"]
    # the smoke test failed: revert
    res3, out3 = run(tmp_path, dict(args, state="reverted"))
    assert res3["reverted"] is True and login_ok(args, app, values["old"]) and not login_ok(args, app, new)
    assert new not in out3 and values["old"] not in out3
    # rotate again, then the smoke test passed: finish drops the record
    run(tmp_path, dict(args, state="rotated"))
    res4, _ = run(tmp_path, dict(args, state="finished"))
    assert res4["changed"] is True and not Path(res4["state_file"]).exists()


def test_jwt_rotation_through_the_module(setup, tmp_path):
    args, env_file, values, _app = setup
    res, out = run(tmp_path, dict(args, secret="jwt_secret", state="rotated"))
    assert res["changed"] and res["plan"]["services"] == ["api"], res
    now = ef.EnvFile.read(str(env_file)).as_dict()
    assert now[k.JWT_SECRET] != values["secret"] and now[k.DB_PASSWORD] == values["old"]
    assert k.verify_role_key(now[k.ANON_KEY], now[k.JWT_SECRET], "anon")[0] == k.OK
    for value in secrets_of(env_file, values):
        assert value not in out


def test_bad_input_is_refused_with_a_clear_line(setup, tmp_path):
    args, _env_file, values, _app = setup
    res, out = run(tmp_path, dict(args, state="rotated", given={k.DB_PASSWORD: values["old"]}))
    assert res["failed"] and "in the inventory holds the current PAYCRAFT_DB_PASSWORD" in res["msg"]
    assert values["old"] not in out
    res, _ = run(tmp_path, dict(args, compose=["not a dict"]))
    assert res["failed"] and "compose must be a list of parsed compose files" in res["msg"]
    res, _ = run(tmp_path, {k2: v for k2, v in args.items() if k2 != "env_file"})
    assert res["failed"] and "env_file is required" in res["msg"]


def test_no_secret_at_vvv_through_ansible_playbook(setup, tmp_path):
    args, env_file, values, _app = setup
    play = [{"name": "t", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "plan", "paycraft.selfhost.paycraft_rotate": dict(args, state="planned")},
        {"name": "rotate", "paycraft.selfhost.paycraft_rotate": dict(args, state="rotated"), "diff": True},
    ]}]
    pb = tmp_path / "play.yml"
    pb.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
                           str(pb), "-vvv"], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "PAYCRAFT_DB_PASSWORD" in text and "roles" in text
    new = ef.EnvFile.read(str(env_file)).get(k.DB_PASSWORD)
    assert new != values["old"]
    for value in [*secrets_of(env_file, values), new]:
        assert value not in text
    assert run(tmp_path, dict(args, state="reverted"))[0]["reverted"] is True
