"""paycraft_keys module, run by ansible-playbook on localhost (real module execution, real files)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as ef

REPO = Path(__file__).resolve().parents[4]
SECRET_KEYS = ["PAYCRAFT_DB_PASSWORD", "PAYCRAFT_JWT_SECRET", "PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY",
               "PAYCRAFT_TOKEN_ENCRYPTION_KEY", "PAYCRAFT_OAUTH_STATE_SECRET"]


MODULE = REPO / "plugins" / "modules" / "paycraft_keys.py"


def run(tmp_path: Path, args: dict, *, check=False, diff=False, no_log=False, dump=False, verbosity=0):
    """Run paycraft_keys; returns (result, full stdout).

    Plain calls execute the module file directly with an args file, as Ansible's module runner does
    (fast); ``dump`` and ``verbosity`` go through ansible-playbook to see what an operator would see.
    """
    if not dump and not verbosity:
        args_file = tmp_path / "args.json"
        internal = {"_ansible_check_mode": check, "_ansible_diff": diff, "_ansible_no_log": no_log}
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, **internal}}))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout), proc.stdout + proc.stderr
    task = {"name": "keys", "paycraft.selfhost.paycraft_keys": args, "register": "r", "ignore_errors": True,
            "check_mode": check, "diff": diff, "no_log": no_log}
    tasks = [task]
    out_file = tmp_path / "registered.json"
    if dump:
        tasks.append({"name": "dump", "ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out_file),
                                                                "mode": "0600"}, "no_log": True})
    play = [{"name": "t", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]
    pb = tmp_path / "play.yml"
    pb.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1")
    if verbosity:
        env.pop("ANSIBLE_STDOUT_CALLBACK")
    cmd = ["ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", str(pb)]
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if dump:
        return json.loads(out_file.read_text()), proc.stdout
    if verbosity:
        return None, proc.stdout
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc.stdout


def read(path: Path) -> dict:
    return ef.EnvFile.read(str(path)).as_dict()


def test_fresh_write_then_unchanged(tmp_path):
    path = tmp_path / "paycraft.env"
    res, _ = run(tmp_path, {"path": str(path), "host": "web1"})
    assert res["changed"] is True and not res.get("failed")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(res["generated"]) == sorted(SECRET_KEYS)
    values = read(path)
    for key, role in (("PAYCRAFT_ANON_KEY", "anon"), ("PAYCRAFT_SERVICE_ROLE_KEY", "service_role")):
        claims = jwt.decode(values[key], values["PAYCRAFT_JWT_SECRET"], algorithms=["HS256"], issuer="supabase")
        assert claims["role"] == role
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(values[key], "another-secret-another-secret-another", algorithms=["HS256"])
    before = path.read_bytes()
    res2, _ = run(tmp_path, {"path": str(path), "host": "web1"})
    assert res2["changed"] is False and res2["generated"] == [] and res2["changed_keys"] == []
    assert path.read_bytes() == before  # iat/exp untouched


def test_check_mode_writes_nothing_and_diff_is_masked(tmp_path):
    path = tmp_path / "sub" / "paycraft.env"  # the directory does not exist yet: fine in check mode
    res, out = run(tmp_path, {"path": str(path)}, check=True, diff=True)
    assert res["changed"] is True and not path.exists()
    assert "PAYCRAFT_JWT_SECRET=******** (new)" in res["diff"]["after"]
    res, _ = run(tmp_path, {"path": str(path)})
    assert res["failed"] is True
    assert res["msg"].endswith(f"the directory of {path} ({path.parent}) does not exist; create it first (the "
                               "paycraft.selfhost.config role makes it 0700).")

    path = tmp_path / "paycraft.env"
    run(tmp_path, {"path": str(path)})
    old = read(path)
    given = {"PAYCRAFT_OAUTH_STATE_SECRET": "ab" * 32, "PAYCRAFT_API_URL": "https://billing.example.com"}
    res, out = run(tmp_path, {"path": str(path), "values": given}, check=True, diff=True)
    assert res["changed"] is True and read(path) == old
    assert sorted(res["changed_keys"]) == ["PAYCRAFT_API_URL", "PAYCRAFT_OAUTH_STATE_SECRET"]
    assert "PAYCRAFT_OAUTH_STATE_SECRET=******** (old)" in res["diff"]["before"]
    assert "PAYCRAFT_OAUTH_STATE_SECRET=******** (new)" in res["diff"]["after"]
    assert "PAYCRAFT_API_URL=https://billing.example.com" in res["diff"]["after"]  # public: shown
    for value in list(old.values()) + list(given.values()):
        if len(value) >= 16 and not value.startswith("http"):
            assert value not in out


def test_no_secret_in_verbose_output(tmp_path):
    path = tmp_path / "paycraft.env"
    given = {"PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY": "sk_test_given_value_51Habc", "PAYCRAFT_JWT_SECRET": "j" * 48}
    _, out = run(tmp_path, {"path": str(path), "values": given}, diff=True, verbosity=4)
    assert "changed: [localhost]" in out
    values = read(path)
    for key in [*SECRET_KEYS, "PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY"]:
        assert values[key] and values[key] not in out, key


def test_return_values_needs_no_log(tmp_path):
    path = tmp_path / "paycraft.env"
    res, _ = run(tmp_path, {"path": str(path), "return_values": True, "host": "web1"})
    assert res["failed"] is True
    assert res["msg"] == "web1: return_values=true returns secrets: set no_log: true on the task."
    given = {"PAYCRAFT_JWT_SECRET": "g" * 40}
    registered, out = run(tmp_path, {"path": str(path), "values": given, "return_values": True}, no_log=True,
                          dump=True)
    assert registered["env"] == read(path)
    assert registered["env"]["PAYCRAFT_JWT_SECRET"] == "g" * 40  # not masked in the registered result
    assert "g" * 40 not in out


def test_db_password_guard_and_resign(tmp_path):
    path = tmp_path / "paycraft.env"
    run(tmp_path, {"path": str(path)})
    before = path.read_bytes()
    res, _ = run(tmp_path, {"path": str(path), "host": "web1", "db_initialized": True, "db_volume": "vol_paycraft-db",
                            "values": {"PAYCRAFT_DB_PASSWORD": "another-password-123"}})
    assert res["failed"] is True
    assert res["errors"] == [res["msg"]]
    assert res["msg"].startswith(f"web1: PAYCRAFT_DB_PASSWORD differs from the one in {path}, but the database volume "
                                 "vol_paycraft-db already exists: Postgres keeps the password it was initialised with")
    assert ("Next, to change it with the data intact: ansible-playbook playbooks/rotate.yml -l web1 "
            "-e paycraft_rotate_secret=db_password -e paycraft_rotate_confirm=db_password") in res["msg"]
    assert "docker volume rm vol_paycraft-db" in res["msg"]
    assert "This destroys all subscriptions data. Take a backup first." in res["msg"]
    assert path.read_bytes() == before

    new_secret = "n" * 44
    res, _ = run(tmp_path, {"path": str(path), "values": {"PAYCRAFT_JWT_SECRET": new_secret}, "host": "web1"})
    assert res["failed"] is True and len(res["errors"]) == 2
    assert res["verification"] == {"PAYCRAFT_ANON_KEY": "bad_signature", "PAYCRAFT_SERVICE_ROLE_KEY": "bad_signature"}
    assert "run again with resign=true" in res["errors"][0]
    assert path.read_bytes() == before
    res, _ = run(tmp_path, {"path": str(path), "values": {"PAYCRAFT_JWT_SECRET": new_secret}, "resign": True})
    assert res["changed"] is True and res["resigned"] == ["PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY"]
    values = read(path)
    assert jwt.decode(values["PAYCRAFT_ANON_KEY"], new_secret, algorithms=["HS256"])["role"] == "anon"
    assert values["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == values["PAYCRAFT_ANON_KEY"]
    res, _ = run(tmp_path, {"path": str(path), "values": {"PAYCRAFT_JWT_SECRET": new_secret}, "resign": True})
    assert res["changed"] is False


def test_existing_file_layout_is_kept_and_mode_fixed(tmp_path):
    path = tmp_path / "paycraft.env"
    path.write_text("# my notes\n\nexport PAYCRAFT_API_URL=https://billing.example.com  # prod\nMY_FLAG=1\n")
    path.chmod(0o644)
    res, _ = run(tmp_path, {"path": str(path)})
    assert res["changed"] is True
    text = path.read_text()
    assert text.startswith("# my notes\n\nexport PAYCRAFT_API_URL=https://billing.example.com  # prod\nMY_FLAG=1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    res, _ = run(tmp_path, {"path": str(path)})
    assert res["changed"] is True and res["changed_keys"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_import_from_a_hand_made_env_and_example(tmp_path):
    legacy = tmp_path / "selfhost.env"
    secret = "s" * 44
    anon = jwt.encode({"role": "anon", "iss": "supabase", "iat": 1, "exp": 4_000_000_000}, secret, algorithm="HS256")
    legacy.write_text(f"PAYCRAFT_DB_PASSWORD=old/pass+word\nPAYCRAFT_JWT_SECRET={secret}\nPAYCRAFT_ANON_KEY={anon}\n"
                      "CUSTOM=kept\n")
    example = tmp_path / ".env.example"
    example.write_text("PAYCRAFT_DB_PASSWORD=your-super-secret-and-long-postgres-password\nSITE_NAME=PayCraft\n"
                       "SMTP_PASS=changeme\n")
    path = tmp_path / "paycraft.env"
    res, _ = run(tmp_path, {"path": str(path), "import_from": [str(legacy), str(tmp_path / "missing")],
                            "example_file": str(example), "db_initialized": True})
    assert not res.get("failed"), res.get("msg")
    values = read(path)
    assert values["PAYCRAFT_DB_PASSWORD"] == "old/pass+word"
    assert values["PAYCRAFT_ANON_KEY"] == anon and values["CUSTOM"] == "kept" and values["SITE_NAME"] == "PayCraft"
    assert "SMTP_PASS" not in values
    assert set(res["kept"]) >= {"PAYCRAFT_DB_PASSWORD", "PAYCRAFT_JWT_SECRET", "PAYCRAFT_ANON_KEY"}
    assert res["from_example"] == ["SITE_NAME"]
    warnings = json.dumps(res["warnings"])  # ansible-core 2.19 returns structured warning summaries
    assert "SMTP_PASS, which looks like a secret" in warnings
    assert "it is kept: change it with the data intact with ansible-playbook playbooks/rotate.yml" in warnings


def test_bad_values_all_reported(tmp_path):
    path = tmp_path / "paycraft.env"
    res, _ = run(tmp_path, {"path": str(path), "host": "web1", "values": {"FOO": "zzq-1"}})
    assert res["msg"] == "web1: values only takes the runbook section 3 variables; move FOO to extra_env."
    res, _ = run(tmp_path, {"path": str(path), "host": "web1", "labels": {"PAYCRAFT_API_URL": "paycraft_api_url"},
                              "values": {"PAYCRAFT_API_URL": "nope", "PAYCRAFT_TOKEN_ENCRYPTION_KEY": "abc123"}})
    assert res["failed"] is True and not path.exists()
    assert res["msg"].splitlines() == [
        "web1: PAYCRAFT_TOKEN_ENCRYPTION_KEY must be exactly 64 hex characters (32 bytes for AES-256-GCM, as "
        "`openssl rand -hex 32` prints).",
        "web1: paycraft_api_url (PAYCRAFT_API_URL) must be an http:// or https:// URL such as http://localhost:54321 "
        "(a host, an optional port and path; no credentials, query or fragment).",
    ]


def test_ansible_doc_renders():
    proc = subprocess.run(["ansible-doc", "--json", "paycraft.selfhost.paycraft_keys"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["paycraft.selfhost.paycraft_keys"]
    assert doc["doc"]["options"]["values"]["type"] == "dict"
    assert {"generated", "kept", "verification", "env"} <= set(doc["return"])


def test_return_public_holds_no_server_secret(tmp_path):
    """paycraft_env's one shape: the anon key and the two URLs; the database password never leaves the host."""
    path = tmp_path / "paycraft.env"
    res, _ = run(tmp_path, {"path": str(path), "return_public": True, "host": "web1"})
    assert res["failed"] is True and "return_public=true returns the anon key: set no_log" in res["msg"]
    registered, out = run(tmp_path, {"path": str(path), "return_public": True}, no_log=True, dump=True)
    values = read(path)
    assert registered["public_env"] == {k: values[k] for k in ("PAYCRAFT_ANON_KEY", "PAYCRAFT_API_URL",
                                                                "PAYCRAFT_DASHBOARD_URL")}
    assert "env" not in registered
    for key in ("PAYCRAFT_DB_PASSWORD", "PAYCRAFT_JWT_SECRET", "PAYCRAFT_SERVICE_ROLE_KEY"):
        assert values[key] not in json.dumps(registered), key
    assert values["PAYCRAFT_ANON_KEY"] not in out


def test_no_extra_env_secret_in_verbose_output(tmp_path):
    """paycraft_config_extra_env carries the .env.example's secrets (a provider's webhook secret)."""
    path = tmp_path / "paycraft.env"
    extra = {"PAYCRAFT_RAZORPAY_WEBHOOK_SECRET": "rzp_whsec_extra_value_9f8e7d6c", "PAYCRAFT_LOG_LEVEL": "debug"}
    _, out = run(tmp_path, {"path": str(path), "extra_env": extra}, diff=True, verbosity=4)
    assert "changed: [localhost]" in out
    assert read(path)["PAYCRAFT_RAZORPAY_WEBHOOK_SECRET"] == "rzp_whsec_extra_value_9f8e7d6c"
    assert "rzp_whsec_extra_value_9f8e7d6c" not in out
