"""paycraft_release_check module, executed as Ansible's module runner does, on the reference release (real git)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
MODULE = REPO / "plugins" / "modules" / "paycraft_release_check.py"
RELEASE = REPO / "reference" / "build" / "paycraft.git"
SRC = "/opt/paycraft/src"


def run(tmp_path: Path, args: dict, check_mode: bool = True) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    # the module's temporary trees go to this test's own TMPDIR (the machine's /tmp is shared)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), TMPDIR=str(scratch))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def origin():
    if not (RELEASE / "HEAD").is_file() and not (RELEASE / ".git").exists():
        pytest.skip("the reference release (bash reference/make-release.sh)")
    return f"file://{RELEASE}"


def extract_and_check(tmp_path, origin, tag, **check_args):
    got = run(tmp_path, {"stage": "extract", "repo": origin, "version": tag, "checkout": str(tmp_path / "none"),
                         "source_dest": SRC, "migrations_dir": f"{SRC}/server/migrations"})
    assert not got.get("failed"), got
    tree = got["tree"]
    assert sorted(got["files"]) == ["infra/selfhost/docker-compose.yaml", "infra/selfhost/kong.yml"]
    files = {k: yaml.safe_load(v) for k, v in got["files"].items()}
    args = {"stage": "check", "tree": tree, "remove_tree": True, "source_dest": SRC,
            "migrations_dir": f"{SRC}/server/migrations", "compose": files.pop("infra/selfhost/docker-compose.yaml"),
            "yaml_files": files, "compose_config": False, "label": "h1: PayCraft " + tag, **check_args}
    result = run(tmp_path, args)
    assert not os.path.exists(tree), "the temporary tree is removed"
    return got, result


def test_upstream_shape_fails_once_with_every_finding(tmp_path, origin):
    got, result = extract_and_check(tmp_path, origin, "v1.2.0-upstream-shape", fill_rest="false", fill_main="no")
    assert len(got["commit"]) == 40 and not got["changed"]
    assert result["failed"] and not result["changed"]
    assert result["msg"].startswith("h1: PayCraft v1.2.0-upstream-shape cannot run as it is: 3 finding(s); "
                                    "nothing was changed.\n- server/migrations: a symlink to ../supabase/migrations")
    assert [f["file"] for f in result["findings"]] == [
        "server/migrations", "infra/selfhost/docker-compose.yaml", "infra/selfhost/kong.yml"]
    assert result["filled"] == []


def test_upstream_shape_with_gaps_filled_reports_the_migrations_only(tmp_path, origin):
    _, result = extract_and_check(tmp_path, origin, "v1.2.0-upstream-shape", fail_on_findings=False)
    assert not result.get("failed")
    assert [f["file"] for f in result["findings"]] == ["server/migrations"]
    assert result["filled"] == ["rest filled (paycraft_stack_fill_rest=auto)",
                                "main filled (paycraft_stack_fill_main=auto)"]
    rest = next(s for s in result["kong_filled"]["services"] if s["name"] == "rest-v1")
    assert rest["url"] == "http://rest:3000/"
    assert result["gaps"]["main"]["command"] == ["start", "--main-service", "/home/deno/paycraft-main"]


def test_a_good_release_passes(tmp_path, origin):
    _, result = extract_and_check(tmp_path, origin, "v1.1.0")
    assert not result.get("failed") and result["findings"] == [] and result["filled"] == []
    assert "kong_filled" not in result


def test_unknown_tag_and_bad_setting(tmp_path, origin):
    got = run(tmp_path, {"stage": "extract", "repo": origin, "version": "v9.9.9", "source_dest": SRC,
                         "migrations_dir": f"{SRC}/server/migrations", "label": "h1"})
    assert got["failed"] and got["msg"].startswith("h1: cannot read v9.9.9 of file://")
    assert got["msg"].endswith("Nothing was changed.")
    got = run(tmp_path, {"tree": str(tmp_path), "source_dest": SRC, "migrations_dir": "/x", "fill_rest": "maybe"})
    assert got["failed"] and "paycraft_stack_fill_rest" in got["msg"]
    assert "'maybe' is not auto, true or false" in got["msg"]


def test_leaves_no_temporary_directory_behind(tmp_path, origin):
    got, _ = extract_and_check(tmp_path, origin, "v1.1.0")
    assert got["tree"].startswith(str(tmp_path / "tmp" / "paycraft-release-"))
    assert list((tmp_path / "tmp").iterdir()) == []
    # an unknown tag removes its directory too
    run(tmp_path, {"stage": "extract", "repo": origin, "version": "v9.9.9", "source_dest": SRC,
                   "migrations_dir": f"{SRC}/server/migrations"})
    assert list((tmp_path / "tmp").iterdir()) == []
