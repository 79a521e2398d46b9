"""tests/hosts/pyc_cache: the test hosts' bytecode cache for Ansible's module payloads.

Each case runs a fresh interpreter with the hook loaded (as the hosts' .pth file loads it) on a payload
zip named as AnsiballZ names them, so the import system is the real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

HOOK_DIR = Path(__file__).resolve().parents[1] / "hosts" / "pyc_cache"

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the hook is for Python 3.11")

RUN = """
import sys
sys.path.insert(0, {hook!r})
import paycraft_test_pyc_cache
sys.path.insert(0, {zip!r})
import pkg.mod
print(pkg.mod.VALUE, pkg.mod.where(), type(pkg.mod.__loader__).__name__, pkg.mod.__file__)
"""


def payload(tmp: Path, run: int, value: str) -> Path:
    """A payload zip in a new temp path, as each AnsiballZ run writes one: pkg/__init__.py, pkg/mod.py."""
    where = tmp / f"ansible_stat_payload_{run}"
    where.mkdir()
    path = where / "ansible_stat_payload.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/__init__.py", "")
        z.writestr("pkg/mod.py", f"VALUE = {value!r}\n\ndef where():\n    return where.__code__.co_filename\n")
    return path


def run(tmp: Path, zip_path: Path, cache: Path) -> list[str]:
    env = {**os.environ, "PAYCRAFT_TEST_PYC_CACHE_DIR": str(cache)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", RUN.format(hook=str(HOOK_DIR), zip=str(zip_path))],
                          capture_output=True, text=True, env=env, check=True)
    return proc.stdout.split()


def test_a_second_run_loads_the_cached_code_with_its_own_file_name(tmp_path):
    cache = tmp_path / "cache"
    first = payload(tmp_path, 1, "one")
    assert run(tmp_path, first, cache) == ["one", f"{first}/pkg/mod.py", "PayloadImporter", f"{first}/pkg/mod.py"]
    cached = sorted(p for p in cache.rglob("*") if p.is_file())
    assert len(cached) == 2  # pkg/__init__.py and pkg/mod.py
    stamps = [p.stat().st_mtime_ns for p in cached]
    second = payload(tmp_path, 2, "one")
    # the same sources in another temp path: loaded from the cache, named after the second path
    assert run(tmp_path, second, cache) == ["one", f"{second}/pkg/mod.py", "PayloadImporter", f"{second}/pkg/mod.py"]
    assert [p.stat().st_mtime_ns for p in sorted(p for p in cache.rglob("*") if p.is_file())] == stamps


def test_a_changed_source_is_compiled_again_not_taken_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    run(tmp_path, payload(tmp_path, 1, "one"), cache)
    assert run(tmp_path, payload(tmp_path, 2, "two"), cache)[0] == "two"
    assert len([p for p in cache.rglob("*") if p.is_file()]) == 3  # mod.py twice, __init__.py once


def test_other_zips_are_left_to_zipimport(tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other.zip"
    payload(tmp_path, 1, "one").rename(other)
    assert run(tmp_path, other, cache)[2] == "zipimporter"
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_only_costs_the_compile(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    zip_path = payload(tmp_path, 1, "one")
    assert run(tmp_path, zip_path, blocked / "cache")[:3] == ["one", f"{zip_path}/pkg/mod.py", "PayloadImporter"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ansible_stat_payload_1"]
