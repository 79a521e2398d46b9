"""The changelog: antsibull-changelog fragments that lint, and CHANGELOG.md generated from changelog.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paycraft_testlib import missing

REPO = Path(__file__).resolve().parents[2]

# the format every helper's brief shows
BRIEF_EXAMPLE = """minor_changes:
  - upgrade.yml - takes a verified snapshot before it moves a host (https://...not needed).
bugfixes:
  - paycraft_smoke - a 5xx from the gateway fails the gateway probe.
"""


def antsibull(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "antsibull-changelog"
    if not exe.exists():
        exe = shutil.which("antsibull-changelog")
        if exe is None:
            missing("antsibull-changelog (requirements.txt)")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    """The collection's changelog inputs in a scratch directory (the tool writes next to them)."""
    shutil.copy(REPO / "galaxy.yml", tmp_path / "galaxy.yml")
    shutil.copytree(REPO / "changelogs", tmp_path / "changelogs")
    shutil.copy(REPO / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    return tmp_path


def test_the_fragments_lint():
    res = antsibull("lint", cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_changelog_yaml_lints():
    res = antsibull("lint-changelog-yaml", "--strict", "changelogs/changelog.yaml", cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_changelog_md_is_generated_from_changelog_yaml(copy):
    res = antsibull("generate", cwd=copy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (copy / "CHANGELOG.md").read_text() == (REPO / "CHANGELOG.md").read_text(), (
        "CHANGELOG.md is not what antsibull-changelog generates: do not edit it by hand; "
        "run `antsibull-changelog generate` (or `release`)"
    )


def test_the_briefs_fragment_format_lints(copy):
    (copy / "changelogs" / "fragments" / "brief-example.yml").write_text(BRIEF_EXAMPLE)
    res = antsibull("lint", cwd=copy)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


@pytest.mark.parametrize(
    "text",
    [
        "features:\n  - a section antsibull-changelog does not know.\n",
        "bugfixes: a string instead of a list.\n",
        "bugfixes:\n  - unclosed: [yaml\n",
    ],
    ids=["unknown-section", "not-a-list", "bad-yaml"],
)
def test_a_malformed_fragment_fails(copy, text):
    (copy / "changelogs" / "fragments" / "broken.yml").write_text(text)
    res = antsibull("lint", cwd=copy)
    assert res.returncode != 0 or res.stdout.strip() != "", "a malformed fragment passed the lint"
    assert "broken.yml" in res.stdout + res.stderr
