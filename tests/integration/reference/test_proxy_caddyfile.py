"""The tls role's Caddyfile (roles/tls/templates/Caddyfile.j2) for each certificate source, read by the
proxy image's own Caddy: ``caddy adapt`` turns it into Caddy's JSON config and ``caddy validate`` provisions
it (certificate files loaded, issuers set up), with no CA contacted. Molecule scenario ``tls`` runs the ACME
source end to end against pebble; this covers ``files`` and ``internal`` too."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import jinja2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[3]
TEMPLATE = REPO / "roles" / "tls" / "templates" / "Caddyfile.j2"
IMAGE = (os.environ.get("PAYCRAFT_IMAGE_PREFIX", "paycraft-local/") + "proxy:"
         + os.environ.get("PAYCRAFT_IMAGE_TAG", "ref"))

VARS = {
    "ansible_managed": "managed by test",
    "paycraft_api_domain": "api.billing.example.com",
    "paycraft_dashboard_domain": "billing.example.com",
    "paycraft_tls_acme_email": "ops@example.com",
    "paycraft_tls_acme_ca": "https://ca.lan:14000/dir",
    "paycraft_tls_acme_ca_root": "files/ca-root.pem",
    "paycraft_tls_hsts": "max-age=31536000",
}


def _self_signed(names):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


@pytest.fixture(scope="module")
def proxy_image(docker_engine):
    """The proxy image, built from the local Debian base (a no-op when cached)."""
    proc = subprocess.run([str(REPO / "reference" / "build-images.sh"), "proxy"], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"reference/build-images.sh proxy failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return IMAGE


def _caddy(image, tls_dir, *args):
    """Run caddy in a throwaway container with tls_dir as /etc/caddy/paycraft (the role's paycraft_tls_dir)."""
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{tls_dir}:/etc/caddy/paycraft:ro", image,
         "caddy", *args, "--config", "/etc/caddy/paycraft/Caddyfile", "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("source", ["acme", "files", "internal"])
def test_the_caddyfile_of_each_certificate_source_is_valid_caddy_config(proxy_image, tmp_path, source):
    tls_dir = tmp_path / "proxy"
    tls_dir.mkdir()  # root in the container reads it (Caddy runs as root, as in the upstream image)
    cert, key = _self_signed([VARS["paycraft_api_domain"], VARS["paycraft_dashboard_domain"]])
    (tls_dir / "cert.pem").write_bytes(cert)
    (tls_dir / "key.pem").write_bytes(key)
    (tls_dir / "acme-ca-root.pem").write_bytes(cert)
    text = jinja2.Template(TEMPLATE.read_text(), trim_blocks=True).render(**VARS, paycraft_tls_cert_source=source)
    (tls_dir / "Caddyfile").write_text(text)

    adapted = _caddy(proxy_image, tls_dir, "adapt")
    assert adapted.returncode == 0, adapted.stderr
    config = json.loads(adapted.stdout)
    server = next(iter(config["apps"]["http"]["servers"].values()))
    hosts = sorted(h for route in server["routes"] for m in route.get("match", []) for h in m.get("host", []))
    assert hosts == sorted([VARS["paycraft_api_domain"], VARS["paycraft_dashboard_domain"]])
    assert '"Strict-Transport-Security":["max-age=31536000"]' in adapted.stdout
    assert '"dial":"kong:8000"' in adapted.stdout and '"dial":"dashboard:3000"' in adapted.stdout
    tls_app = json.dumps(config["apps"].get("tls", {}), separators=(",", ":"))
    if source == "acme":
        assert '"ca":"https://ca.lan:14000/dir"' in tls_app
        assert "/etc/caddy/paycraft/acme-ca-root.pem" in tls_app
        assert '"email":"ops@example.com"' in tls_app
    elif source == "files":
        assert '"load_files"' in tls_app and "/etc/caddy/paycraft/cert.pem" in tls_app
    else:
        assert '"module":"internal"' in tls_app

    validated = _caddy(proxy_image, tls_dir, "validate")
    assert validated.returncode == 0, validated.stderr + validated.stdout
