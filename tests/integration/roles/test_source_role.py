"""The source role against real git repositories made by the test (file:// URLs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SHOW = ("paycraft_source_commit", "paycraft_source_previous_version")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def release_repo(tmp_path) -> dict:
    """A repository with PayCraft's layout and two tags: v1.0.0 (annotated) and v1.1.0 (lightweight)."""
    repo = tmp_path / "paycraft.git"
    work = tmp_path / "upstream"
    (work / "infra" / "selfhost").mkdir(parents=True)
    (work / "server" / "migrations").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "release@example.invalid", cwd=work)
    git("config", "user.name", "release", cwd=work)
    (work / "infra" / "selfhost" / "docker-compose.yaml").write_text("services: {}\n")
    (work / "server" / "migrations" / "001_init.sql").write_text("select 1;\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "v1.0.0", cwd=work)
    git("tag", "-a", "v1.0.0", "-m", "release 1.0.0", cwd=work)
    (work / "server" / "migrations" / "002_more.sql").write_text("select 2;\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "v1.1.0", cwd=work)
    git("tag", "v1.1.0", cwd=work)
    git("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    return {
        "url": f"file://{repo}",
        "v1.0.0": git("rev-parse", "v1.0.0^{commit}", cwd=work),
        "v1.1.0": git("rev-parse", "v1.1.0^{commit}", cwd=work),
    }


def test_clone_rerun_move_and_refusals(run_role, release_repo, tmp_path):
    dest = tmp_path / "opt" / "src"
    base = {"paycraft_source_repo": release_repo["url"], "paycraft_source_dest": str(dest)}

    first = run_role("source", {**base, "paycraft_version": "v1.0.0"}, show=SHOW)
    assert first.rc == 0, first.explain()
    assert first.changed >= 1
    assert first.facts["paycraft_source_commit"] == release_repo["v1.0.0"]
    assert first.facts["paycraft_source_previous_version"] == ""
    assert git("rev-parse", "HEAD", cwd=dest) == release_repo["v1.0.0"]

    again = run_role("source", {**base, "paycraft_version": "v1.0.0"}, show=SHOW, tags="source")
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
    assert again.facts["paycraft_source_commit"] == release_repo["v1.0.0"]
    assert again.facts["paycraft_source_previous_version"] == "v1.0.0"

    # untracked files (the config role's .env link, the Enterprise license file) never block a move
    (dest / "infra" / "selfhost" / ".env").symlink_to("/etc/paycraft/paycraft.env")
    (dest / "infra" / "selfhost" / "LICENSE-ENTERPRISE.key").write_text("license\n")
    moved = run_role("source", {**base, "paycraft_version": "v1.1.0"}, show=SHOW)
    assert moved.rc == 0, moved.explain()
    assert moved.changed >= 1
    assert moved.facts["paycraft_source_commit"] == release_repo["v1.1.0"]
    assert moved.facts["paycraft_source_previous_version"] == "v1.0.0"
    assert (dest / "server" / "migrations" / "002_more.sql").exists()
    assert (dest / "infra" / "selfhost" / "LICENSE-ENTERPRISE.key").read_text() == "license\n"

    # a changed tracked file: refused, with host, path, file and the next commands
    compose = dest / "infra" / "selfhost" / "docker-compose.yaml"
    compose.write_text("services: {edited: {}}\n")
    refused = run_role("source", {**base, "paycraft_version": "v1.0.0"})
    assert refused.rc != 0
    message = " ".join(refused.failures)
    assert "localhost" in message
    assert str(dest) in message
    assert "infra/selfhost/docker-compose.yaml" in message
    assert f"git -C {dest} status" in message
    assert f"git -C {dest} stash" in message
    assert git("rev-parse", "HEAD", cwd=dest) == release_repo["v1.1.0"], "the refused checkout must not move"
    assert compose.read_text() == "services: {edited: {}}\n", "the local change must be kept"

    # staying on the same version with the change is not a move: no refusal, nothing changed
    stay = run_role("source", {**base, "paycraft_version": "v1.1.0"})
    assert stay.rc == 0, stay.explain()
    assert stay.changed == 0

    # unknown tag: refused before anything moves, listing the tags there are
    git("checkout", "--", ".", cwd=dest)
    unknown = run_role("source", {**base, "paycraft_version": "v9.9.9"})
    assert unknown.rc != 0
    message = " ".join(unknown.failures)
    assert "paycraft_version=v9.9.9" in message
    assert "v1.0.0, v1.1.0" in message
    assert git("rev-parse", "HEAD", cwd=dest) == release_repo["v1.1.0"]

    # a commit id works as a version, and moving back records where it came from
    by_commit = run_role("source", {**base, "paycraft_version": release_repo["v1.0.0"][:12]}, show=SHOW)
    assert by_commit.rc == 0, by_commit.explain()
    assert by_commit.facts["paycraft_source_commit"] == release_repo["v1.0.0"]
    assert by_commit.facts["paycraft_source_previous_version"] == "v1.1.0"
    commit_again = run_role("source", {**base, "paycraft_version": release_repo["v1.0.0"][:12]})
    assert commit_again.rc == 0 and commit_again.changed == 0, commit_again.explain()


def test_unknown_commit_is_refused_with_the_tags(run_role, release_repo, tmp_path):
    dest = tmp_path / "src"
    run = run_role("source", {"paycraft_source_repo": release_repo["url"], "paycraft_source_dest": str(dest),
                              "paycraft_version": "0123456789abcdef"})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert "0123456789abcdef" in message
    assert "Available tags: v1.0.0, v1.1.0" in message


def test_check_mode_reports_the_clone_and_changes_nothing(run_role, release_repo, tmp_path):
    dest = tmp_path / "src"
    run = run_role("source", {"paycraft_source_repo": release_repo["url"], "paycraft_source_dest": str(dest),
                              "paycraft_version": "v1.1.0"}, check=True)
    assert run.rc == 0, run.explain()
    assert run.changed >= 1
    assert not dest.exists()


@pytest.mark.parametrize("version", [""])
def test_empty_version_is_refused_by_validation(run_role, release_repo, tmp_path, version):
    dest = tmp_path / "src"
    run = run_role("source", {"paycraft_source_repo": release_repo["url"], "paycraft_source_dest": str(dest),
                              "paycraft_version": version})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert "localhost: paycraft_version is empty" in message
    assert "paycraft_version: v1.0.0" in message
    assert not dest.exists()


def test_unreadable_repository_is_named(run_role, tmp_path):
    missing = tmp_path / "nothing-here.git"
    run = run_role("source", {"paycraft_source_repo": f"file://{missing}", "paycraft_source_dest": str(tmp_path / "s"),
                              "paycraft_version": "v1.0.0"})
    assert run.rc != 0
    message = " ".join(run.failures)
    assert f"cannot read the PayCraft repository file://{missing}" in message
    assert "git ls-remote --tags" in message
