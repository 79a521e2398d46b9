"""playbooks/backup.yml on a host installed with site.yml, data written through the stack.

One disposable Docker-in-Docker host (``paycraft-pytest-backup-*``) is installed by ``site.yml`` with the
reference release v1.0.0 (images loaded into its engine, the release cloned from the controller's
generated repository). Users sign up through the gateway, then each provisions an app (a tenant)
through provision_app and creates products through PostgREST, as the dashboard would. Then, through
Ansible as an operator runs it:

backup (the cron job installed, the files 0600 in a 0700 directory) -> drill passes, per table ->
the dump truncated, then one byte flipped: the drill names the file and restores nothing ->
the scheduled command run as cron runs it -> retention removes exactly what is past both limits ->
an age-encrypted backup, drilled with the identity kept on the controller -> rollback.yml refuses
the encrypted backup by name and restores an unencrypted one named by its path.

Then off-site, to a second disposable host on the PayCraft host's network (Debian's openssh-server and
rsync): a copy over SSH verified by the sha256 read back there -> the backup host paused: the run fails
and records it -> the next run reports the failure and copies what was missing -> the local backup
removed, the drill brings the off-site copy back and passes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from paycraft_testlib import missing

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "integration" / "reference"))

from conftest_release import (  # noqa: E402
    SERVICES,
    http,
    make_release,
    reference_host_vars,
    require_playbook_on_dind,
    signup,
    wait_http,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BACKUPS = "/var/backups/paycraft-backups"
USERS = 6


def sh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """A shell command on the DinD host itself (its root file system), through the controller's engine."""
    from paycraft_dind import _controller_env

    proc = subprocess.run(["docker", "exec", host, "sh", "-c", script], capture_output=True, text=True,
                          env=_controller_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from paycraft_dind import DindHost, _controller_env

    compose_src = require_playbook_on_dind("age on the controller (apt-get install -y age)",
                             "age-keygen on the controller (apt-get install -y age)")
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("backup-live")
    origin = root / "paycraft.git"
    make_release(origin)
    with DindHost(base, name=f"paycraft-pytest-backup-{secrets.token_hex(3)}") as host:
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        inventory = root / "inventory.yml"
        hostvars = reference_host_vars(origin, compose_src)
        inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: hostvars}}}))

        def play(playbook: str, *extra: str) -> tuple[int, str]:
            env = {**_controller_env(), "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
                   "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
                   "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
            proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / playbook),
                                   *extra], env=env, capture_output=True, text=True, timeout=3600)
            return proc.returncode, proc.stdout + proc.stderr

        rc, out = play("site.yml")
        assert rc == 0, out[-6000:]
        env_text = sh(host.name, "cat /etc/paycraft/paycraft.env").stdout
        anon = re.search(r"^PAYCRAFT_ANON_KEY=(.*)$", env_text, re.M).group(1).strip().strip('"')
        api = host.url(54321)
        # the gateway checks the apikey on /auth/v1/ (paycraft_stack_key_check)
        wait_http(f"{api}/auth/v1/health", ok=lambda r: r.status == 200, timeout=120, what="auth",
                  headers={"apikey": anon})
        yield {"host": host, "name": host.name, "play": play, "api": api, "anon": anon, "root": root}


def psql(live, sql: str) -> str:
    return sh(live["name"], f"docker exec paycraft_db psql -U postgres -d postgres -tAX -v ON_ERROR_STOP=1 -c "
                            f"{json.dumps(sql)}").stdout.strip()


def write_through_the_stack(live) -> None:
    """Sign-ups through GoTrue, a tenant each through PayCraft's provision_app RPC, products through PostgREST."""
    api, anon = live["api"], live["anon"]
    for i in range(USERS):
        session = signup(api, f"owner{i}-{secrets.token_hex(3)}@example.org", "correct-horse-" + "x" * 8, anon)
        token = session.get("access_token") or session["session"]["access_token"]
        auth = {"apikey": anon, "Authorization": f"Bearer {token}"}
        app = http("POST", f"{api}/rest/v1/rpc/provision_app", {"p_app_name": f"app {i}"}, headers=auth)
        assert app.status == 200, app.text
        tenant = app.json_body["tenant_id"]
        products = [{"tenant_id": tenant, "sku": f"plan-{n}", "name": f"Plan {n} ✓", "price_cents": 100 * n,
                     "metadata": {"tier": n, "features": ["a", "b"][: n % 3]}} for n in range(25)]
        r = http("POST", f"{api}/rest/v1/products", products, headers={**auth, "Prefer": "return=minimal"})
        assert r.status == 201, r.text


def newest(live) -> str:
    return sh(live["name"], f"ls -1 {BACKUPS} | grep -E '^[0-9]{{8}}T' | tail -n1").stdout.strip()


def backups(live) -> list[str]:
    return sh(live["name"], f"ls -1 {BACKUPS} | grep -E '^[0-9]{{8}}T' || true").stdout.split()


def test_backup_drill_corruption_retention_and_encryption_on_a_live_host(live, request):
    name, play = live["name"], live["play"]
    def counts():
        return [int(n) for n in psql(live, "SELECT (SELECT count(*) FROM tenants) || ' ' || (SELECT count(*) FROM "
                                           "products) || ' ' || (SELECT count(*) FROM tenant_admins) || ' ' || "
                                           "(SELECT count(*) FROM auth.users)").split()]

    before = counts()  # site.yml's smoke test signed up a user of its own
    write_through_the_stack(live)
    tenants, products, admins, users = counts()
    # each user provisioned one app: one tenant, its owner row
    assert [tenants, products, admins, users] == [before[0] + USERS, before[1] + USERS * 25, before[2] + USERS,
                                                  before[3] + USERS]

    # --- a backup now; the cron job installed (no systemd in this host)
    rc, out = play("backup.yml")
    assert rc == 0, out[-6000:]
    first = newest(live)
    assert re.search(rf"backup {first} taken: \d+ bytes, \d+ tables, \d+ rows in {BACKUPS}/{first}", out), out[-3000:]
    assert "retention removed nothing" in out
    cron = sh(name, "cat /etc/cron.d/paycraft-backup").stdout
    assert re.search(r"^15 3 \* \* \* root /usr/local/sbin/paycraft-backup >> /var/log/paycraft-backup.log 2>&1$",
                     cron, re.M), cron
    modes = sh(name, f"stat -c '%a %n' {BACKUPS} {BACKUPS}/{first} {BACKUPS}/{first}/*").stdout.split("\n")
    assert modes[0].startswith("700 ") and modes[1].startswith("700 "), modes
    assert all(m.startswith("600 ") for m in modes[2:] if m), modes
    manifest = json.loads(sh(name, f"cat {BACKUPS}/{first}/manifest.json").stdout)
    assert manifest["kind"] == "backup" and manifest["version"] == "v1.0.0"
    assert manifest["tables"]["public.products"]["rows"] == products
    assert manifest["tables"]["public.tenant_admins"]["rows"] == admins
    assert manifest["tables"]["auth.users"]["rows"] == users
    # the volume is not where the backups are
    assert sh(name, "docker volume inspect selfhost_paycraft-db --format '{{.Mountpoint}}'").stdout.strip() \
        not in BACKUPS

    # --- the drill passes, per table; the live database is untouched and the throw-away one is gone
    psql(live, "INSERT INTO public.products(tenant_id, sku, name, price_cents) SELECT id, 'after-backup', "
               "'Written after the backup', 1 FROM tenants LIMIT 1")
    rc, out = play("backup.yml", "-e", "paycraft_backup_drill=true")
    assert rc == 0, out[-6000:]
    assert f"OK   public.products: {products} rows restored, {products} dumped" in out
    assert f"OK   auth.users: {users} rows restored, {users} dumped" in out
    assert re.search(rf"drill PASSED: backup {first} \(.*\), (\d+)/\1 tables match", out), out[-3000:]
    assert psql(live, "SELECT count(*) FROM pg_database WHERE datname LIKE 'paycraft_drill_%'") == "0"
    assert psql(live, "SELECT count(*) FROM public.products") == str(products + 1)

    # --- a corrupt dump: truncated, then one byte flipped; the drill names the file
    dump = f"{BACKUPS}/{first}/database.dump"
    sh(name, f"cp -p {dump} /root/good.dump && truncate -s -4096 {dump}")
    rc, out = play("backup.yml", "-e", "paycraft_backup_drill=true")
    assert rc != 0
    assert re.search(rf"backup {first} is damaged, nothing was restored: {dump} is \d+ bytes, the manifest says \d+ "
                     r"\(truncated or replaced\)", out), out[-3000:]
    sh(name, f"cp -p /root/good.dump {dump} && python3 -c \"import os; f = open('{dump}', 'r+b'); "
             "f.seek(os.path.getsize('" + dump + "') // 2); b = f.read(1); f.seek(-1, 1); "
             "f.write(bytes([b[0] ^ 0x20])); f.close()\"")
    rc, out = play("backup.yml", "-e", "paycraft_backup_drill=true")
    assert rc != 0
    assert re.search(rf"{dump} has sha256 [0-9a-f]{{16}}\.\.\., the manifest says [0-9a-f]{{16}}\.\.\.", out), \
        out[-3000:]
    assert psql(live, "SELECT count(*) FROM pg_database WHERE datname LIKE 'paycraft_drill_%'") == "0"
    sh(name, f"cp -p /root/good.dump {dump}")

    # --- the scheduled command, run as cron runs it
    run = sh(name, "/usr/local/sbin/paycraft-backup")
    assert re.search(r"paycraft-backup on \S+: backup \S+ taken: ", run.stdout), run.stdout + run.stderr
    assert len(backups(live)) == 2

    # --- retention: 2 more backups (4) taken by the scheduled command (its settings: keep 7, 7 days), then
    # keep 2 and 1 day -> nothing (all younger); keep 2 and 0 days -> the 2 oldest
    for _ in range(2):
        run = sh(name, "/usr/local/sbin/paycraft-backup")
        assert "retention removed nothing" in run.stdout, run.stdout + run.stderr
    before = backups(live)
    assert len(before) == 4
    rc, out = play("backup.yml", "-e", "paycraft_backup_keep_count=2", "-e", "paycraft_backup_keep_days=1")
    assert rc == 0 and "retention removed nothing" in out, out[-3000:]
    five = backups(live)
    assert len(five) == 5
    rc, out = play("backup.yml", "-e", "paycraft_backup_keep_count=2", "-e", "paycraft_backup_keep_days=0")
    assert rc == 0, out[-3000:]
    after = backups(live)
    assert len(after) == 2 and after[0] == five[-1]  # the newest 2: the last of the five and the one just taken
    assert re.findall(r"retention removed (\S+) \(created ", out) == five[:4], out[-3000:]

    # --- encrypted: the identity stays on the controller; the drill decrypts there
    # outside the pytest basetemp, which the DinD host mounts: the identity must be the controller's alone
    keydir = Path(tempfile.mkdtemp(prefix="paycraft-pytest-age-", dir="/var/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(keydir, ignore_errors=True))
    identity = keydir / "identity.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = re.search(r"Public key: (age1\S+)", keygen.stderr).group(1)
    rc, out = play("backup.yml", "-e", json.dumps({"paycraft_backup_age_recipients": [recipient],
                                                    "paycraft_backup_keep_count": 10}))
    assert rc == 0, out[-6000:]
    encrypted = newest(live)
    assert "encrypted with age" in out
    files = sorted(sh(name, f"ls {BACKUPS}/{encrypted}").stdout.split())
    assert files == ["database.dump.age", "globals.sql.age", "manifest.json"]
    assert sh(name, f"grep -c PGDMP {BACKUPS}/{encrypted}/database.dump.age", check=False).stdout.strip() == "0"
    secret = re.search(r"^AGE-SECRET-KEY-\S+$", identity.read_text(), re.M).group(0)
    rc, out = play("backup.yml", "-e", "paycraft_backup_drill=true")
    assert rc != 0 and "Run the drill with the identity file on the controller" in out, out[-3000:]
    rc, out = play("backup.yml", "-e", "paycraft_backup_drill=true", "-e",
                   f"paycraft_backup_drill_identity={identity}")
    assert rc == 0, out[-6000:]
    assert re.search(rf"drill PASSED: backup {encrypted} \(", out), out[-3000:]
    gone = sh(name, "ls -d /var/tmp/paycraft-backup-drill* 2>&1 || true").stdout.strip()
    assert gone.endswith("No such file or directory"), gone
    # the private key never reached the host
    leaked = sh(name, f"grep -rl --exclude-dir=docker {secret} /etc /opt /root /tmp /var 2>/dev/null || true")
    assert leaked.stdout.strip() == ""

    # --- rollback.yml: an encrypted backup refused by name, an unencrypted one restored from its path
    rc, out = play("rollback.yml", "-e", f"paycraft_rollback_snapshot={BACKUPS}/{encrypted}")
    assert rc != 0 and "is a backup encrypted with age" in out, out[-3000:]
    plain = after[-1]
    psql(live, "DELETE FROM public.products WHERE sku = 'after-backup'")
    rc, out = play("rollback.yml", "-e", f"paycraft_rollback_snapshot={BACKUPS}/{plain}")
    assert rc == 0, out[-6000:]
    assert psql(live, "SELECT count(*) FROM public.products WHERE sku = 'after-backup'") == "1"
    assert psql(live, "SELECT count(*) FROM public.products") == str(products + 1)


@pytest.fixture
def backup_host(live, tmp_path):
    """A second disposable host on the PayCraft host's network, running a real sshd with rsync (Debian's
    openssh-server, installed by apt as on a real backup host); a key pair made on the controller."""
    from paycraft_dind import _controller_env

    image = "paycraft-local/host:bookworm"
    env = _controller_env()
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, env=env).returncode != 0:
        missing(f"the test host image {image} (bash tests/hosts/build.sh)")
    name = f"paycraft-pytest-backuphost-{secrets.token_hex(3)}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", name, "--network", live["host"].network,
                    image, "sleep", "infinity"], check=True, capture_output=True, env=env)
    try:
        sh(name, "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                 "--no-install-recommends openssh-server rsync >/dev/null && mkdir -p /run/sshd /srv/backups "
                 "&& chmod 700 /srv/backups")
        key = tmp_path / "backup_ssh_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "paycraft-backup", "-f", str(key)],
                       check=True)
        sh(name, f"mkdir -p -m 700 /root/.ssh && echo '{(tmp_path / 'backup_ssh_key.pub').read_text().strip()}' "
                 "> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && /usr/sbin/sshd")
        host_key = sh(name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        yield {"name": name, "key": key.read_text(), "known_hosts": f"{name} {host_key[0]} {host_key[1]}",
               "dest": f"root@{name}:/srv/backups/paycraft"}
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, env=env)


def test_offsite_copy_over_ssh_to_a_second_host_verified_reported_when_it_fails_and_restored_from_there(
        live, backup_host, tmp_path):
    from paycraft_dind import _controller_env

    name, play, far = live["name"], live["play"], backup_host["name"]
    settings = tmp_path / "offsite.json"
    settings.write_text(json.dumps({
        "paycraft_backup_offsite": "rsync", "paycraft_backup_offsite_dest": backup_host["dest"],
        "paycraft_backup_ssh_private_key": backup_host["key"],
        "paycraft_backup_ssh_known_hosts": backup_host["known_hosts"], "paycraft_backup_keep_count": 10}))
    rc, out = play("backup.yml", "-e", f"@{settings}")
    assert rc == 0, out[-6000:]
    taken = newest(live)
    assert f"off-site copy of {taken} verified at rsync {backup_host['dest']} (sha256 of 3 files read back)" in out
    here = sh(name, f"cd {BACKUPS}/{taken} && sha256sum database.dump globals.sql manifest.json").stdout
    there = sh(far, f"cd /srv/backups/paycraft/{taken} && sha256sum database.dump globals.sql manifest.json").stdout
    assert here == there
    assert sh(far, f"stat -c %a /srv/backups/paycraft/{taken}/database.dump").stdout.strip() == "600"
    assert "BEGIN OPENSSH PRIVATE KEY" not in out  # no_log

    # the backup host is down: the run fails, says so, and the next run reports it and catches up
    subprocess.run(["docker", "pause", far], check=True, capture_output=True, env=_controller_env())
    try:
        rc, out = play("backup.yml", "-e", f"@{settings}", "-e", "paycraft_backup_timeout=20")
    finally:
        subprocess.run(["docker", "unpause", far], check=True, capture_output=True, env=_controller_env())
    assert rc != 0
    missed = newest(live)
    assert f"backup {missed} was taken and is kept in {BACKUPS}, but its off-site copy to rsync " \
           f"{backup_host['dest']} failed" in out, out[-3000:]
    status = json.loads(sh(name, f"cat {BACKUPS}/offsite.json").stdout)
    assert status["state"] == "failed" and status["pending"] == [missed]
    rc, out = play("backup.yml", "-e", f"@{settings}")
    assert rc == 0, out[-6000:]
    assert "WARNING: the previous run's the off-site copy failed at " in out
    assert f"not copied yet: {missed}" in out
    assert f"off-site copy of {missed} verified at rsync" in out
    assert missed in sh(far, "ls /srv/backups/paycraft").stdout.split()

    # restored from there: the local copy gone, the drill brings the off-site copy back
    sh(name, f"rm -rf {BACKUPS}/{taken}")
    rc, out = play("backup.yml", "-e", f"@{settings}", "-e", "paycraft_backup_drill=true", "-e",
                   "paycraft_backup_drill_from_offsite=true", "-e", f"paycraft_backup_drill_name={taken}")
    assert rc == 0, out[-6000:]
    assert re.search(rf"drill PASSED: backup {taken} \(", out), out[-3000:]
