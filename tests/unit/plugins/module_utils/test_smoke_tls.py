"""The smoke test over https with ca_file (paycraft_smoke_ca_file): only the given roots are trusted.

A real TLS server on 127.0.0.1 with a certificate from a throwaway CA (made here with cryptography),
as the TLS proxy serves one from pebble or an internal CA."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke
from paycraft_testlib import ThrowawayCA


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"message":"no Route matched with those values"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An https server on 127.0.0.1 whose certificate chains to a throwaway root; yields (url, root, other root)."""
    d = tmp_path_factory.mktemp("tls")
    ca = ThrowawayCA("paycraft test root")
    leaf_pem, leaf_key = ca.issue(["localhost", "127.0.0.1"])
    (d / "root.pem").write_bytes(ca.pem)
    (d / "other.pem").write_bytes(ThrowawayCA("some other root").pem)
    (d / "leaf.pem").write_bytes(leaf_pem)
    (d / "leaf.key").write_bytes(leaf_key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "leaf.pem", d / "leaf.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}", str(d / "root.pem"), str(d / "other.pem")
    finally:
        server.shutdown()
        server.server_close()


def test_https_with_the_issuing_root_in_ca_file_is_answered(tls_server):
    url, root, _other = tls_server
    answer = smoke.http_request(url + "/", ca_file=root, timeout=5)
    assert answer.status == 404


def test_the_system_store_does_not_trust_a_private_root(tls_server):
    url, _root, _other = tls_server
    with pytest.raises(smoke.NoAnswer) as exc:
        smoke.http_request(url + "/", timeout=5)
    assert exc.value.kind == "tls"


def test_ca_file_replaces_the_store_another_root_is_refused(tls_server):
    url, _root, other = tls_server
    with pytest.raises(smoke.NoAnswer) as exc:
        smoke.http_request(url + "/", ca_file=other, timeout=5)
    assert exc.value.kind == "tls"


def test_the_gateway_probe_passes_through_the_proxy_with_ca_file(tls_server):
    url, root, _other = tls_server
    outcome = smoke.probe_gateway({"api_url": url, "ca_file": root}, 5)
    assert outcome.ok, outcome.detail
    outcome = smoke.probe_gateway({"api_url": url}, 5)
    assert not outcome.ok and outcome.cause == "tls_error"
    assert "paycraft_smoke_ca_file" in smoke.CAUSES["tls_error"]["explanation"]


def test_a_missing_ca_file_is_named(tmp_path):
    base = {**smoke.DEFAULTS, "api_key": "pk_test_local", "db_password": "pw", "probes": list(smoke.PROBES)}
    errors = smoke.validate({**base, "ca_file": str(tmp_path / "nope.pem")})
    assert any("nope.pem' does not exist on this host" in e for e in errors), errors
    (tmp_path / "root.pem").write_text("x")
    assert smoke.validate({**base, "ca_file": str(tmp_path / "root.pem")}) == []
