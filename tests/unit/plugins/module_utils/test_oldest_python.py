"""plugins/module_utils on a real Python 3.9, the oldest a managed host may have (vermin checks it statically).

Each library is loaded from its file by a real CPython 3.9 (module_utils import only the standard library,
psycopg2 lazily) and the code that used 3.10+/3.11+ features runs there.
"""

from __future__ import annotations

import json
import os
import subprocess

from paycraft_testlib import REPO, cpython

MODULE_UTILS = sorted((REPO / "plugins" / "module_utils").glob("*.py"))

SCRIPT = r"""
import importlib.util, json, sys
loaded = {}
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    loaded[name] = module
keys = loaded["keys"]
expired = keys.make_role_key("anon", keys.generate_jwt_secret(), expiry_days=1, now=0)
claims = keys.decode_jwt_unverified(expired)[1]
print(json.dumps({
    "python": sys.version_info[:2],
    "loaded": sorted(loaded),
    "expired": keys.describe_status(keys.EXPIRED, keys.ANON_KEY, claims),
    "python_check": loaded["preflight"].check_python("web1")[0][0]["severity"],
}))
"""


def test_module_utils_load_and_run_on_python_3_9(tmp_path):
    python, _ = cpython(9)
    # module_utils import each other by their collection path, as Ansible ships them to a host
    (tmp_path / "ansible_collections" / "paycraft").mkdir(parents=True)
    (tmp_path / "ansible_collections" / "paycraft" / "selfhost").symlink_to(REPO)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([python, "-c", SCRIPT, *map(str, MODULE_UTILS)], capture_output=True, text=True,
                         check=False, env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["python"] == [3, 9]
    assert result["loaded"] == sorted(p.stem for p in MODULE_UTILS)
    assert result["expired"] == "expired on 1970-01-02"
    assert result["python_check"] == "info"
