"""The collection builds with ansible-galaxy and installs from its tarball.

Installed into a temporary collections path, `ansible-doc` lists every module
of plugins/modules and renders each one's documentation.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args, env=None, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    res = _run(BIN / "ansible-galaxy", "collection", "build", "--output-path", out, REPO, cwd=REPO)
    assert res.returncode == 0, res.stderr
    tarballs = list(out.glob("paycraft-selfhost-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    dest = tmp_path_factory.mktemp("collections")
    # only the temp path: with this checkout's link in sight, ansible-galaxy would
    # find the collection "already installed" and install nothing
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest))
    # --no-deps: the dependencies (community.docker ...) come with the ansible package here;
    # operators install them from Galaxy with requirements.yml
    res = _run(BIN / "ansible-galaxy", "collection", "install", "--no-deps", "-p", dest, tarballs[0], env=env)
    assert res.returncode == 0, res.stderr
    assert (dest / "ansible_collections" / "paycraft" / "selfhost" / "MANIFEST.json").is_file(), res.stdout
    return tarballs[0], dest, env


def test_tarball_leaves_out_local_state(installed):
    tarball, _, _ = installed
    names = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True, check=True).stdout.split()
    assert "galaxy.yml" not in names  # replaced by MANIFEST.json
    assert "MANIFEST.json" in names
    assert not [n for n in names if n.startswith((".venv", ".ci", ".git/"))]
    # the test clients' npm packages stay out; their lock file (what installs them) is in
    assert (REPO / "tests/clients/node_modules").is_dir(), "run scripts/prepare.sh (npm ci in tests/clients)"
    assert not [n for n in names if "node_modules" in n]
    assert "tests/clients/package-lock.json" in names


def test_ansible_doc_lists_every_module(installed):
    _, dest, env = installed
    modules = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert modules, "the collection has no modules"
    res = _run(BIN / "ansible-doc", "-l", "paycraft.selfhost", env=env, cwd=dest)
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert {f"paycraft.selfhost.{m}" for m in modules} <= listed, res.stdout
    for module in modules:
        doc = _run(BIN / "ansible-doc", f"paycraft.selfhost.{module}", env=env, cwd=dest)
        assert doc.returncode == 0, f"{module}: {doc.stderr}"
        assert "EXAMPLES" in doc.stdout and "RETURN VALUES" in doc.stdout, module
