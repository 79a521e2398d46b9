"""Validation holes of issue 32 (items 5 and 7), each through a real ansible-playbook on localhost.

Only validation task files run (include_role tasks_from): nothing on the machine changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def play(tmp_path: Path, tasks: list, extra: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    pb = tmp_path / "play.json"
    pb.write_text(json.dumps([{"name": "t", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    (tmp_path / "vars.json").write_text(json.dumps(extra or {}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections")))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.json'}", str(pb)]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def include(role: str, tasks_from: str) -> dict:
    return {"name": f"{role} {tasks_from}",
            "ansible.builtin.include_role": {"name": f"paycraft.selfhost.{role}", "tasks_from": tasks_from}}


OVERLAPS = [
    ("/var/backups/paycraft", "/var/backups/paycraft/"),            # equal
    ("/var/backups/paycraft", "/var/backups/paycraft/backups"),     # inside
    ("/srv/snap/inner", "/srv/snap"),                               # containing
]


@pytest.mark.parametrize(("snapshots", "backups"), OVERLAPS)
@pytest.mark.parametrize("role", ["backup", "rotate"])
def test_overlapping_backup_and_snapshot_dirs_are_refused(tmp_path, role, snapshots, backups):
    extra = {"paycraft_snapshot_dir": snapshots, "paycraft_backup_dir": backups,
             "paycraft_rotate_secret": "db_password", "paycraft_rotate_confirm": "db_password"}
    res = play(tmp_path, [include(role, "validate")], extra)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    snapshot_var = "paycraft_rotate_snapshot_dir" if role == "rotate" else "paycraft_snapshot_dir"
    assert "paycraft_backup_dir" in out and snapshot_var in out, out[-3000:]
    assert "Nothing was changed" in out


def test_separate_dirs_pass_and_the_defaults_do_not_overlap(tmp_path):
    res = play(tmp_path, [include("common", "dirs")])
    assert res.returncode == 0, res.stdout[-3000:]
    res = play(tmp_path, [include("common", "dirs")],
               {"paycraft_snapshot_dir": "/var/backups/paycraft", "paycraft_backup_dir": "/var/backups/paycraft2"})
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize("version", ["v1.0.0\n", "v1.0.0\n--upload-pack=x"])
def test_a_version_with_a_newline_is_refused(tmp_path, version):
    res = play(tmp_path, [include("source", "validate")],
               {"paycraft_version": version, "paycraft_source_repo": "file:///nowhere.git"})
    assert res.returncode != 0, res.stdout[-3000:]
    assert "is not a Git tag or commit" in res.stdout


def test_a_plain_version_passes_validation(tmp_path):
    res = play(tmp_path, [include("source", "validate")],
               {"paycraft_version": "v1.0.0", "paycraft_source_repo": "file:///nowhere.git"})
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize("limits", [{"db": {"privileged": True}}, {"db": {"mem_limit": "2g", "cap_add": ["ALL"]}},
                                    {"db": "2g"}])
def test_resource_limits_accept_only_resource_keys(tmp_path, limits):
    res = play(tmp_path, [include("stack", "validate")], {"paycraft_stack_resource_limits": limits})
    assert res.returncode != 0, res.stdout[-3000:]
    assert "may only set resource limits" in res.stdout
    bad = [f"db.{k}" for k in limits["db"] if k != "mem_limit"] if isinstance(limits["db"], dict) else ["db (not"]
    assert all(b in res.stdout for b in bad), res.stdout[-3000:]


def test_resource_limits_pass(tmp_path):
    res = play(tmp_path, [include("stack", "validate")],
               {"paycraft_stack_resource_limits": {"db": {"mem_limit": "2g", "cpus": 2, "pids_limit": 500}}})
    assert res.returncode == 0, res.stdout[-3000:]


def test_git_archive_takes_the_version_as_a_name_never_an_option(tmp_path):
    """The migrations role's check mode on a host without the checkout runs git archive --remote with
    paycraft_version, validated or not (a run with --skip-tags validate, or the role alone)."""
    work, repo = tmp_path / "w", tmp_path / "r.git"
    (work / "server" / "migrations").mkdir(parents=True)
    (work / "server" / "migrations" / "001_init.sql").write_text("select 1;\n")

    def git(*args, cwd=work):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "v1")
    git("tag", "v1.0.0")
    git("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    dest = tmp_path / "not-checked-out"
    base = {"paycraft_source_repo": f"file://{repo}", "paycraft_source_dest": str(dest),
            "paycraft_migrations_dir": f"{dest}/server/migrations"}
    marker = tmp_path / "ran"
    res = play(tmp_path, [include("migrations", "check_mode")],
               {**base, "paycraft_version": f"--exec=touch {marker};true"}, check=True)
    assert not marker.exists(), "git archive ran --exec from paycraft_version"
    assert res.returncode == 0, res.stdout[-3000:]
    good = play(tmp_path, [include("migrations", "check_mode")], {**base, "paycraft_version": "v1.0.0"}, check=True)
    assert "would apply 1 migrations from v1.0.0" in good.stdout, good.stdout[-3000:]


def test_the_stack_diagnosis_prints_no_secret_from_the_logs(tmp_path):
    """A failed phase prints the containers' last lines: the env file's secrets and JWTs are masked."""
    jwt = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlIn0."
           "c2lnbmF0dXJlLW9mLXRoZS1hbm9uLWtleQ")
    env = tmp_path / "paycraft.env"
    env.write_text(f"PAYCRAFT_DB_PASSWORD=Db-Pass-0123456789\nPAYCRAFT_ANON_KEY={jwt}\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    # a docker CLI whose containers log what real ones do on a bad start: the connection string, a key
    docker.write_text(
        "#!/bin/sh\n"
        "if [ \"$1\" = logs ]; then\n"
        "  echo \"connecting to postgres://authenticator:Db-Pass-0123456789@db:5432/postgres\"\n"
        f"  echo \"password authentication failed for user postgres (password Db-Pass-0123456789)\" >&2\n"
        f"  echo \"anon request with apikey {jwt}\"\n"
        "  exit 0\n"
        "fi\n"
        "echo 'paycraft_db exited Exited (1)'\n")
    docker.chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{old_path}"
    try:
        res = play(tmp_path, [{"name": "diagnose", "ansible.builtin.include_role": {
            "name": "paycraft.selfhost.stack", "tasks_from": "diagnose"},
            "vars": {"_stack_phase": "core", "_stack_services": ["db", "rest"]}}],
            {"paycraft_env_file": str(env)})
    finally:
        os.environ["PATH"] = old_path
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "The core phase of the stack failed on localhost" in out, out[-3000:]
    assert "Last lines of paycraft_db" in out and "Last lines of paycraft_rest" in out, out[-3000:]
    assert "password authentication failed" in out  # the advice still sees what went wrong
    assert "Db-Pass-0123456789" not in out and jwt not in out and "eyJhbGci" not in out, out[-3000:]


def test_the_drill_stages_decrypted_dumps_in_a_private_directory_of_its_own(tmp_path):
    """The drill of an encrypted backup copies the decrypted dump to the host. A directory planted where it
    stages (another user's, world-writable, reached through a symlink) never receives it."""
    import hashlib
    import shutil as _shutil

    if not _shutil.which("age") or not _shutil.which("age-keygen"):
        pytest.skip("age not installed")
    identity = tmp_path / "identity.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.split("Public key: ")[1].split()[0]
    backups = tmp_path / "backups"
    name = "20261128T230000Z-v1.0.0"
    snap = backups / name
    snap.mkdir(parents=True, mode=0o700)
    files, plain = {}, {}
    for fname, body in (("database.dump", b"PGDMP-decrypted-secret-rows"), ("globals.sql", b"ALTER ROLE x;\n")):
        plain[fname] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        enc = subprocess.run(["age", "-r", recipient], input=body, capture_output=True, check=True).stdout
        (snap / f"{fname}.age").write_bytes(enc)
        files[f"{fname}.age"] = {"size": len(enc), "sha256": hashlib.sha256(enc).hexdigest()}
    (snap / "manifest.json").write_text(json.dumps({
        "manifest_version": 1, "kind": "backup", "version": "v1.0.0", "created_at": "2026-11-28T23:00:00Z",
        "database": "postgres", "files": files, "size": 1, "tables": {}, "plaintext": plain,
        "encryption": {"tool": "age", "recipients": [recipient]}, "verified": {"pg_restore_list_entries": None}}))
    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    os.chown(planted, 1234, 1234)
    link = tmp_path / "paycraft-backup-drill"
    link.symlink_to(planted)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text("#!/bin/sh\necho 'no database here' >&2\nexit 1\n")
    (bindir / "docker").chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{old_path}"
    try:
        res = play(tmp_path, [include("backup", "drill")],
                   {"paycraft_backup_dir": str(backups), "paycraft_backup_drill_identity": str(identity),
                    "paycraft_backup_drill_workdir": str(link)})
    finally:
        os.environ["PATH"] = old_path
    out = res.stdout + res.stderr
    assert "Copy the decrypted dump to the host" in out, out[-3000:]
    staged = [str(p) for p in planted.rglob("*") if p.is_file()]
    assert staged == [], f"decrypted files left in the planted directory: {staged}"
    assert [p for p in planted.rglob("*")] == [], list(planted.rglob("*"))
