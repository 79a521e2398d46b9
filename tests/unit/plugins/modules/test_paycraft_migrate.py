"""paycraft.selfhost.paycraft_migrate through ansible itself, against the real PostgreSQL fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paycraft_testlib import missing

pytestmark = pytest.mark.postgres

FILES = {
    "041_base.sql": "CREATE TABLE subs(id serial PRIMARY KEY, status text);\n",
    "042_add_coupons_v2.sql": (
        "BEGIN;\nCREATE TABLE coupons(code text PRIMARY KEY);\nCREATE POLICY p ON subs USING (id > 0);\nCOMMIT;\n"
    ),
    "043_widen_subscription_status.sql": "ALTER TABLE subs ALTER COLUMN status TYPE varchar(64);\n",
}


def ansible(params, mdir, tmp_path, *extra, args="", verbosity=None):
    """Run the module ad hoc on localhost; the password travels in a vars file, never in argv."""
    if shutil.which("ansible", path=str(Path(sys.executable).parent)) is None:
        missing("ansible, in this virtualenv")
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"pw": params["password"]}))
    vars_file.chmod(0o600)
    module_args = (
        f"migrations_dir={mdir} login_host={params['host']} login_port={params['port']} "
        f"login_user={params['user']} login_db={params['dbname']} login_password={{{{ pw }}}} {args}"
    )
    cmd = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "paycraft.selfhost.paycraft_migrate",
        "-a",
        module_args,
        "-e",
        f"@{vars_file}",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        *extra,
    ]
    if verbosity:
        cmd.append(verbosity)
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    if verbosity:
        env.pop("ANSIBLE_STDOUT_CALLBACK")
        env.pop("ANSIBLE_LOAD_CALLBACK_PLUGINS")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if verbosity:
        return proc, None
    out = json.loads(proc.stdout)
    return proc, out["plays"][0]["tasks"][0]["hosts"]["localhost"]


def write(mdir, files):
    mdir.mkdir(exist_ok=True)
    for name, body in files.items():
        (mdir / name).write_text(body)


def tables(params):
    import psycopg2

    with psycopg2.connect(**params) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('_paycraft_migrations') IS NOT NULL, to_regclass('coupons') IS NOT NULL")
        return cur.fetchone()


def test_check_mode_then_apply_then_idempotent(pg_db, tmp_path):
    mdir = tmp_path / "migrations"
    write(mdir, FILES)
    _, res = ansible(pg_db, mdir, tmp_path, "--check")
    assert res["changed"] is True and res["applied"] == []
    assert res["pending"] == ["041_base", "042_add_coupons_v2", "043_widen_subscription_status"]
    assert tables(pg_db) == (False, False)

    proc, res = ansible(pg_db, mdir, tmp_path)
    assert proc.returncode == 0 and res["changed"] is True
    assert [a["version"] for a in res["applied"]] == res["pending"]
    assert res["summary"] == "✅ migrations: 3 applied, 0 skipped"
    assert res["output"][:2] == ["apply 041_base", "apply 042_add_coupons_v2"]
    assert tables(pg_db) == (True, True)

    proc, res = ansible(pg_db, mdir, tmp_path)
    assert proc.returncode == 0 and res["changed"] is False
    assert res["summary"] == "✅ migrations: 0 applied, 3 skipped"


def test_failure_names_file_and_line_and_returns_applied(pg_db, tmp_path):
    mdir = tmp_path / "migrations"
    broken = "-- 1\n-- 2\nALTER TABLE coupons ADD COLUMN pct int;\nSELECT * FROM nope;\n"
    write(mdir, {**FILES, "044_broken.sql": broken})
    proc, res = ansible(pg_db, mdir, tmp_path)
    assert proc.returncode != 0 and res["failed"] is True
    assert "044_broken.sql line 4: SQLSTATE 42P01" in res["msg"]
    assert "3 migration(s) applied before it" in res["msg"]
    assert [a["version"] for a in res["applied"]][-1] == "043_widen_subscription_status"
    assert res["error"]["line"] == 4 and res["error"]["sqlstate"] == "42P01"
    # an applied file edited afterwards is refused with both checksums
    (mdir / "044_broken.sql").unlink()
    (mdir / "041_base.sql").write_text(FILES["041_base.sql"] + "-- edited\n")
    proc, res = ansible(pg_db, mdir, tmp_path)
    assert proc.returncode != 0 and "041_base.sql: recorded sha256" in res["msg"]
    assert res["error"]["changed"][0]["version"] == "041_base" and res["changed"] is False


def test_dangling_dir_and_bad_arguments(pg_db, tmp_path):
    link = tmp_path / "migrations"
    link.symlink_to(tmp_path / "gone")
    _, res = ansible(pg_db, link, tmp_path)
    assert res["failed"] and f"is a symlink to '{tmp_path / 'gone'}'" in res["msg"]
    _, res = ansible(pg_db, link, tmp_path, args="out_of_order=sometimes")
    assert res["failed"] and "out_of_order" in res["msg"] and "fail, warn, apply" in res["msg"]


def test_password_never_in_output_even_at_vvv(pg_db, tmp_path):
    mdir = tmp_path / "migrations"
    write(mdir, FILES)
    proc, _ = ansible(pg_db, mdir, tmp_path, verbosity="-vvv")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "3 applied" in proc.stdout
    assert pg_db["password"] not in proc.stdout + proc.stderr
    # and not with a wrong password either (the driver's error is relayed without it)
    (tmp_path / "vars.json").write_text(json.dumps({"pw": "wrong-" + pg_db["password"]}))
    bad = {**pg_db, "password": "wrong-" + pg_db["password"]}
    proc, _ = ansible(bad, mdir, tmp_path, verbosity="-vvv")
    assert proc.returncode != 0 and "could not connect" in proc.stdout
    assert pg_db["password"] not in proc.stdout + proc.stderr


def test_password_from_the_env_file_on_the_host(pg_db, tmp_path):
    """env_file: the password goes from the env file to the module on the host, never through the play."""
    mdir = tmp_path / "migrations"
    write(mdir, FILES)
    env_file = tmp_path / "paycraft.env"
    env_file.write_text(f"# written by the config role\nPAYCRAFT_DB_PASSWORD={pg_db['password']}\n")
    env_file.chmod(0o600)
    (tmp_path / "vars.json").write_text("{}")
    cmd = [
        str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "paycraft.selfhost.paycraft_migrate",
        "-a", (f"migrations_dir={mdir} login_host={pg_db['host']} login_port={pg_db['port']} "
               f"login_user={pg_db['user']} login_db={pg_db['dbname']} env_file={env_file} rerun_interrupted=true"),
        "-e", f"ansible_python_interpreter={sys.executable}", "-vvv",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PAYCRAFT_DB_PASSWORD")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "3 applied" in proc.stdout
    assert pg_db["password"] not in proc.stdout + proc.stderr
    assert tables(pg_db) == (True, True)
