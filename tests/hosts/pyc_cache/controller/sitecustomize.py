"""The bytecode cache of Ansible's module payloads (../paycraft_test_pyc_cache.py) in the controller's Python.

tests/conftest.py puts this directory on PYTHONPATH, so the interpreters pytest starts load it: the
modules of the tests' local-connection runs (``-c local``, the venv's Python) then skip compiling
ansible-core's sources again, as the test hosts' do. Only Python 3.11 uses it (see the module).
"""

import importlib.util
import os
import sys

_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "paycraft_test_pyc_cache.py")
if "paycraft_test_pyc_cache" not in sys.modules and os.path.isfile(_path):
    _spec = importlib.util.spec_from_file_location("paycraft_test_pyc_cache", _path)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["paycraft_test_pyc_cache"] = _module
    _spec.loader.exec_module(_module)
