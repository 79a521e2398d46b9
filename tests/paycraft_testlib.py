"""Helpers shared by the test suites (import as ``from paycraft_testlib import ...``).

pytest puts ``tests/`` on sys.path (it holds conftest.py and no __init__.py),
so every test module can import this one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

STRICT = os.environ.get("PAYCRAFT_STRICT") == "1"
REPO = Path(__file__).resolve().parent.parent


def missing(what: str) -> None:
    """Skip (or, under PAYCRAFT_STRICT=1, fail) because a prerequisite is absent."""
    msg = f"not installed: {what} (run scripts/prepare.sh)"
    if STRICT:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll predicate() until truthy or raise TimeoutError naming what was awaited."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from last_exc


def cpython(minor: int) -> tuple[str, str]:
    """(path, version) of a real CPython 3.<minor> on this machine, standing for a managed host's Python.

    pyenv's versions (the python machines have 3.6 to 3.13) come first, then ``python3.<minor>`` on PATH;
    a candidate counts only when it runs (a pyenv shim without that version does not).
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob(f"3.{minor}.*/bin/python3.{minor}"))]
    candidates += [w for w in [shutil.which(f"python3.{minor}")] if w]
    for candidate in candidates:
        code = "import platform, sys; print(platform.python_version(), sys.executable)"
        run = subprocess.run([candidate, "-c", code], capture_output=True, text=True, check=False)
        if run.returncode == 0 and run.stdout.startswith(f"3.{minor}."):
            version, executable = run.stdout.split()
            return executable, version
    missing(f"python3.{minor} (a second interpreter, standing for a managed host's Python)")
    raise AssertionError("unreachable")  # missing() skips or fails


def module_runner(timeout: float = 30.0):
    """The modules' command runner (module_utils/_cli.py) on a real AnsibleModule, for library tests."""
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.paycraft.selfhost.plugins.module_utils import _cli

    with patch_module_args({}):
        module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    return _cli.module_runner(module, timeout)


class ThrowawayCA:
    """A certificate authority made for one test (cryptography, EC P-256, valid for a day).

    ``pem`` is the root's certificate; ``issue(names)`` gives (certificate PEM, key PEM) of a server
    certificate for those DNS names and IP addresses, signed by this root.
    """

    def __init__(self, cn: str = "paycraft test root"):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec = x509, hashes, serialization, ec
        self._now = datetime.datetime.now(datetime.UTC)
        self._span = (self._now - datetime.timedelta(minutes=5), self._now + datetime.timedelta(days=1))
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
        self.cert = (self._builder(self.name, self._key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(usage, critical=True)
                     .sign(self._key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject, public_key):
        x509 = self._x509
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._span[0]).not_valid_after(self._span[1]))

    def issue(self, names: list[str]) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for a server known by these DNS names and IP addresses."""
        import ipaddress

        x509 = self._x509
        alt = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, names[0])])
        cert = (self._builder(subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .sign(self._key, self._hashes.SHA256()))
        key_pem = key.private_bytes(self._ser.Encoding.PEM, self._ser.PrivateFormat.PKCS8, self._ser.NoEncryption())
        return cert.public_bytes(self._ser.Encoding.PEM), key_pem
