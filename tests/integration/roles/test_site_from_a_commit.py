"""Issue 32 item 6: site.yml on a host whose checkout is at a commit that is no tag, towards a tag, takes the
upgrade path. Real git repositories (file:// URLs) and real ansible-playbook runs on localhost; nothing on
the machine changes (check mode, and task files that only read)."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_validation_holes import include, play


def git(*args, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def history(tmp_path) -> dict:
    """v1.0.0 -> C (a commit, no tag) -> v1.1.0; and S, a commit beside them (a child of v1.0.0)."""
    work = tmp_path / "upstream"
    (work / "server" / "migrations").mkdir(parents=True)
    (work / "infra" / "selfhost").mkdir(parents=True)
    (work / "infra" / "selfhost" / "docker-compose.yaml").write_text("services: {}\n")
    git("init", "-q", "-b", "main", cwd=work)
    ident = ["-c", "user.email=t@example.invalid", "-c", "user.name=t"]

    def commit(name: str, message: str) -> str:
        (work / "server" / "migrations" / name).write_text("select 1;\n")
        git("add", "-A", cwd=work)
        git(*ident, "commit", "-qm", message, cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    v100 = commit("001_init.sql", "1.0.0")
    git(*ident, "tag", "-a", "v1.0.0", "-m", "1.0.0", cwd=work)
    c = commit("002_hotfix.sql", "a hotfix, never tagged")
    v110 = commit("003_more.sql", "1.1.0")
    git(*ident, "tag", "-a", "v1.1.0", "-m", "1.1.0", cwd=work)
    git("checkout", "-q", "-b", "side", "v1.0.0", cwd=work)
    side = commit("002_side.sql", "a side branch")
    git("checkout", "-q", "main", cwd=work)
    repo = tmp_path / "paycraft.git"
    git("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    return {"url": f"file://{repo}", "v1.0.0": v100, "C": c, "v1.1.0": v110, "S": side}


def installed_at(tmp_path, history, commit: str):
    dest = tmp_path / "opt" / "src"
    git("clone", "-q", history["url"], str(dest), cwd=tmp_path)
    git("checkout", "-q", "--detach", commit, cwd=dest)
    return dest


def test_site_from_an_untagged_commit_to_a_tag_takes_the_upgrade_path(tmp_path, history):
    dest = installed_at(tmp_path, history, history["C"])
    # no tag at C: what `git describe --exact-match` found nothing for
    assert subprocess.run(["git", "describe", "--tags", "--exact-match", "HEAD"], cwd=dest,
                          capture_output=True).returncode != 0
    show = {"name": "show", "ansible.builtin.debug": {"msg": "MOVES={{ _release_site_moves | to_json }}"}}
    res = play(tmp_path, [include("release", "site"), show],
               {"paycraft_version": "v1.1.0", "paycraft_source_repo": history["url"],
                "paycraft_source_dest": str(dest), "paycraft_config_dir": str(tmp_path / "etc")}, check=True)
    assert "MOVES=true" in res.stdout, res.stdout[-4000:]
    assert "Move the host the safe way" in res.stdout
    # and the same host at v1.1.0 stays put
    git("checkout", "-q", "--detach", "v1.1.0", cwd=dest)
    res = play(tmp_path, [include("release", "site"), show],
               {"paycraft_version": "v1.1.0", "paycraft_source_repo": history["url"],
                "paycraft_source_dest": str(dest), "paycraft_config_dir": str(tmp_path / "etc")}, check=True)
    assert "MOVES=false" in res.stdout, res.stdout[-4000:]


@pytest.mark.parametrize(("installed", "target", "direction"), [
    ("C", "v1.1.0", "upgrade"),        # the untagged hotfix, then the next release
    ("v1.0.0", "C", "upgrade"),        # a tag to a commit
    ("C", "v1.0.0", "downgrade"),
    ("S", "v1.1.0", "unknown"),        # a side branch: refused unless paycraft_upgrade_allow_unordered
    ("v1.0.0", "v1.1.0", "upgrade"),   # tags still order by their versions
])
def test_a_commit_is_ordered_by_the_history(tmp_path, history, installed, target, direction):
    dest = installed_at(tmp_path, history, history[installed])
    name = {"C": history["C"], "S": history["S"]}
    show = {"name": "show", "ansible.builtin.debug": {"msg": "DIRECTION={{ _release_direction }}"}}
    head = git("rev-parse", "HEAD", cwd=dest)
    res = play(tmp_path, [include("release", "validate_target"), show], {
        "paycraft_source_dest": str(dest), "paycraft_source_repo": history["url"],
        "_release_installed": name.get(installed, installed), "_release_target": name.get(target, target),
        "_release_head": {"stdout": head}, "_release_fetch": {"rc": 0}, "_release_tags": {"stdout_lines": []},
        "_release_migrations_rel": "", "paycraft_source_validate_release": True})
    assert f"DIRECTION={direction}" in res.stdout, json.dumps(res.stdout[-4000:])
