"""Issue 32 item 6 on a real host: site.yml from an installed commit that is no tag, towards a tag.

One disposable Docker-in-Docker host is installed by ``site.yml`` at a commit C (the reference v1.0.0 plus
one file, never tagged), then ``site.yml`` is run towards a release made on top of C with v1.1.1's broken
migration: it takes the upgrade path (the operation record names C as where it came from, a snapshot of C
is taken) and the failure rolls back by itself to the checkout at C, the rows written before it still there.

What this test no longer runs (a third site.yml towards a good release on top of C, about 40% of its time):
the upgrade path from C is proved by the run above up to its failing migration, the choice of that path
for a good release on top of a commit by tests/integration/roles/test_site_from_a_commit.py (C -> v1.1.0:
direction ``upgrade``, site moves "the safe way"), and an upgrade that passes, its record ``done`` and
its snapshot, by molecule/rollback (v1.0.0 -> v1.1.0) and tests/integration/lock (a real upgrade with a
writer). Nothing after the migrations depends on whether the installed version was a tag.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "integration" / "reference"))

from conftest_release import SERVICES, make_release, reference_host_vars, require_playbook_on_dind  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SNAPSHOTS = "/var/backups/paycraft"


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


def commit_on(repo: Path, tree: str, parent: str, message: str) -> str:
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return git(repo, "commit-tree", tree, "-p", parent, "-m", message, env=ident)


def sh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    from paycraft_dind import _controller_env

    proc = subprocess.run(["docker", "exec", host, "sh", "-c", script], capture_output=True, text=True,
                          env=_controller_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
    return proc


def test_site_from_an_untagged_commit_takes_the_upgrade_path(tmp_path_factory):
    from paycraft_dind import DindHost, _controller_env

    compose_src = require_playbook_on_dind()
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("site-commit")
    origin = root / "paycraft.git"
    make_release(origin)
    # C: v1.0.0 plus one file, no tag; two releases on top of it
    note = root / "HOTFIX.md"
    note.write_text("a hotfix installed by commit\n")
    blob = git(origin, "hash-object", "-w", str(note))
    index = {"GIT_INDEX_FILE": str(root / "index")}
    git(origin, "read-tree", "v1.0.0^{tree}", env=index)
    git(origin, "update-index", "--add", "--cacheinfo", f"100644,{blob},HOTFIX.md", env=index)
    c = commit_on(origin, git(origin, "write-tree", env=index), "v1.0.0^{commit}", "hotfix, never tagged")
    broken = commit_on(origin, "v1.1.1-broken-migration^{tree}", c, "1.1.6: a broken migration")
    git(origin, "tag", "v1.1.6-broken", broken)

    with DindHost(base, name=f"paycraft-pytest-sitecommit-{secrets.token_hex(3)}") as host:
        host.load(*(f"paycraft-local/{svc}:ref" for svc in SERVICES))
        inventory = root / "inventory.yml"
        hostvars = reference_host_vars(origin, compose_src, version=None)
        inventory.write_text(json.dumps({"paycraft": {"hosts": {host.name: hostvars}}}))

        def site(version: str) -> tuple[int, str]:
            env = {**_controller_env(), "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", ""),
                   "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
            proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "site.yml"),
                                   "-e", f"paycraft_version={version}"],
                                  env=env, capture_output=True, text=True, timeout=3600)
            return proc.returncode, proc.stdout + proc.stderr

        def psql(sql: str) -> str:
            return sh(host.name, "docker exec paycraft_db psql -U postgres -d postgres -tAX -v ON_ERROR_STOP=1 -c "
                                 f"{json.dumps(sql)}").stdout.strip()

        def head() -> str:
            return sh(host.name, "git -C /opt/paycraft/src rev-parse HEAD").stdout.strip()

        rc, out = site(c)
        assert rc == 0, out[-6000:]
        assert head() == c
        assert sh(host.name, "git -C /opt/paycraft/src describe --tags --exact-match HEAD", check=False).returncode != 0
        psql("CREATE TABLE public.before_the_move(id int primary key);"
             "INSERT INTO public.before_the_move VALUES (1),(2)")

        # towards the broken release: the upgrade path (snapshot, automatic rollback), not a bare checkout
        rc, out = site("v1.1.6-broken")
        assert rc != 0, out[-6000:]
        assert "Rolled back automatically" in out, out[-6000:]
        assert head() == c
        record = json.loads(sh(host.name, "cat /etc/paycraft/operation.json").stdout)
        assert (record["operation"], record["from_version"], record["to_version"]) == \
            ("upgrade", c, "v1.1.6-broken"), record
        assert record["status"] == "rolled_back", record
        assert record["snapshot"].startswith(f"{SNAPSHOTS}/"), record
        # the snapshot is of C, taken by the upgrade
        manifest = json.loads(sh(host.name, f"cat {record['snapshot']}/manifest.json").stdout)
        assert manifest["version"] == c and manifest["kind"] == "upgrade", manifest
        assert psql("SELECT count(*) FROM public.before_the_move") == "2"
