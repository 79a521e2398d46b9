"""A bytecode cache for Ansible's module payloads, installed on the disposable test hosts only.

Every Ansible module task runs an AnsiballZ payload: a zip of the module and the ansible-core
``module_utils`` it imports, written to a new temp path each time and put first on ``sys.path``.
Python's zipimport never caches bytecode, and in Python 3.11 it compiles each module's source twice
(once for the spec's file name, once to run it), so every task compiles ``ansible.module_utils.basic``
and the rest again: measured about 0.18 of the 0.41 CPU-s a ``stat`` costs on a test host
(benchmarks/README.md, connection/). On a 2-core CI machine that runs thousands of module tasks, that
is minutes.

This module, imported at interpreter start by a ``.pth`` file beside it, puts a path hook in front of
zipimport for those payload zips only (``.../ansible_<module>_payload.zip``). Their importer compiles a
source as zipimport does, keeps the code object (``marshal``) under ``CACHE_DIR`` keyed by the sha256
of the interpreter's magic number, the file's path inside the zip and its source bytes, and on a
later run loads it from there with the file name of that run. What runs is the same source: a changed
source is another key. Anything else (other zips, bytecode entries, another Python) goes to zipimport.

tests/paycraft_dind.py and molecule/resources/create.yml copy it into each host they start; it is no
part of the collection and no production host has it.
"""

from __future__ import annotations

import marshal
import os
import sys
import zipimport

CACHE_DIR = os.environ.get("PAYCRAFT_TEST_PYC_CACHE_DIR", "/var/cache/paycraft-test-pyc")


def _payload_zip(path: object) -> bool:
    """A payload zip, or a package directory inside one (``..._payload.zip/ansible/module_utils``)."""
    if not isinstance(path, str):
        return False
    archive, found, _inner = path.partition("_payload.zip")
    return bool(found) and os.path.basename(archive).startswith("ansible_") and _inner[:1] in ("", "/")


class PayloadImporter(zipimport.zipimporter):
    """zipimport for one AnsiballZ payload, with its compiled sources cached across runs."""

    def _source(self, fullname: str) -> str | None:
        """The source's path inside the zip (a package's __init__.py first), or None."""
        path = zipimport._get_module_path(self, fullname)  # zipimport's own naming rule
        for candidate in (f"{path}/__init__.py", f"{path}.py"):
            if candidate in self._files:
                return candidate
        return None

    def get_filename(self, fullname: str) -> str:
        inner = self._source(fullname)
        if inner is None:
            return super().get_filename(fullname)
        return self._files[inner][0]

    def get_code(self, fullname: str):
        inner = self._source(fullname)
        if inner is None:
            return super().get_code(fullname)
        entry = self._files[inner]
        filename = entry[0]
        data = zipimport._get_data(self.archive, entry)
        import hashlib
        from importlib.util import MAGIC_NUMBER

        digest = hashlib.sha256(MAGIC_NUMBER + inner.encode() + b"\0" + data).hexdigest()
        cached = os.path.join(CACHE_DIR, digest[:2], digest)
        try:
            with open(cached, "rb") as fh:
                code = marshal.load(fh)  # noqa: S302 - the cache this module wrote, root-only on a test host
        except (OSError, EOFError, ValueError, TypeError):
            code = None
        if code is not None:
            import _imp

            _imp._fix_co_filename(code, filename)  # what SourceLoader does for a .pyc
            return code
        code = compile(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), filename, "exec", dont_inherit=True)
        part = f"{cached}.{os.getpid()}.part"
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            with open(part, "wb") as fh:
                marshal.dump(code, fh)
            os.replace(part, cached)
        except OSError:
            # a cache that cannot be written (a full or read-only disk) costs the compile, nothing else
            try:
                os.unlink(part)
            except OSError:
                pass
        return code

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(self.get_code(module.__name__), module.__dict__)  # noqa: S102 - what a loader does


def _hook(path: object) -> PayloadImporter:
    if not _payload_zip(path):
        raise ImportError("not an Ansible module payload")
    return PayloadImporter(path)


def install() -> None:
    if sys.version_info[:2] != (3, 11) or _hook in sys.path_hooks:
        return  # the zipimport internals used above are 3.11's
    sys.path_hooks.insert(0, _hook)


install()
