"""tests/paycraft_writer.py against a small real HTTP server standing in for the gateway.

The server answers like the stack: sign-up (422 for a known user, then the password grant), the user's
tenant (none on a release with provision_app, which answers it; PostgREST's 404 on a release without),
and product inserts: 201, or 503 while its "hold" is on, or 401 once (a stale token). The writer must
record exactly the 2xx inserts, sign in again after the 401, and its check must count a lost row.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from paycraft_testlib import REPO

sys.path.insert(0, str(REPO / "tests"))
import paycraft_writer as writer

sys.path.pop(0)


class Gateway(BaseHTTPRequestHandler):
    state: typing.ClassVar[dict] = {}

    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        s = self.state
        if self.path.startswith("/rest/v1/tenants"):
            return self.answer(200, [{"id": s["tenant"]}] if s["tenant"] and not s["provision"] else [])
        if self.path.startswith("/rest/v1/products"):
            # the database is down for the reads after the 9th try (a switch)
            return self.answer(502 if s["tries"] >= 9 else 200, [])
        return self.answer(404)

    def do_POST(self):
        s = self.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        # a JWT secret rotated: from then on the gateway refuses every request with the old anon key
        if s.get("rotated") and self.headers.get("apikey") != s["new_key"]:
            return self.answer(401, {"message": "Invalid authentication credentials"})
        if self.path == "/auth/v1/signup":
            return self.answer(422, {"msg": "User already registered"})
        if self.path.startswith("/auth/v1/token"):
            s["logins"] += 1
            return self.answer(200, {"access_token": f"token-{s['logins']}"})
        if self.path == "/rest/v1/rpc/provision_app":
            if not s["provision"]:
                return self.answer(404, {"code": "PGRST202"})
            s["provision"] = False
            return self.answer(200, {"tenant_id": s["tenant"]})
        if self.path == "/rest/v1/products":
            s["tries"] += 1
            if s["tries"] == s.get("rotate_at"):
                s["rotated"] = True
                return self.answer(401, {"message": "Invalid authentication credentials"})
            if s["tries"] in s["hold"]:
                return self.answer(503, {"message": "held"})
            if s["tries"] == s["stale_at"]:
                return self.answer(401, {"message": "JWT expired"})
            assert body["tenant_id"] == s["tenant"]
            s["rows"].append(body["sku"])
            if len(s["rows"]) >= 8:
                open(s["stop"], "w").close()
            return self.answer(201)
        return self.answer(404)


@pytest.fixture
def gateway(tmp_path):
    Gateway.state = {"tenant": "t-1", "provision": True, "logins": 0, "tries": 0, "hold": {3, 4, 5},
                     "stale_at": 7, "rows": [], "stop": str(tmp_path / "stop")}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Gateway.state
    server.shutdown()


def test_the_writer_records_the_acknowledged_writes_only(gateway, tmp_path, capsys, monkeypatch):
    url, state = gateway
    (tmp_path / "anon").write_text("anon-key\n")
    out = str(tmp_path / "acked")
    rc = writer.main(["run", "--api-url", url, "--anon-key-file", str(tmp_path / "anon"), "--email", "w@x.invalid",
                      "--password", "pw", "--out", out, "--prefix", "w-t", "--interval", "0.01",
                      "--max-seconds", "30", "--stop-file", state["stop"]])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["acknowledged"] == 8 == len(state["rows"])
    assert summary["refused"] == {"503": 3, "401": 1}
    assert state["logins"] == 2  # signed in again after the 401
    keys = [line.split("\t")[0] for line in open(out)]
    assert keys == state["rows"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(state["rows"]) + "\n"))
    assert writer.main(["check", "--acked", out]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["acknowledged"], counts["present"], counts["missing"], counts["refused_total"]) == (8, 8, 0, 4)

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(state["rows"][1:]) + "\n"))
    assert writer.main(["check", "--acked", out]) == 1
    counts = json.loads(capsys.readouterr().out)
    assert counts["missing"] == 1 and counts["missing_keys"] == [state["rows"][0]]


def test_the_read_probe_records_every_read_and_reads_counts_them_in_a_window(gateway, tmp_path, capsys):
    url, state = gateway
    (tmp_path / "anon").write_text("anon-key\n")
    reads_out = tmp_path / "reads"
    assert writer.main(["run", "--api-url", url, "--anon-key-file", str(tmp_path / "anon"), "--email", "w@x.invalid",
                        "--password", "pw", "--out", str(tmp_path / "acked"), "--prefix", "w-t", "--interval", "0.01",
                        "--max-seconds", "30", "--stop-file", state["stop"], "--reads-out", str(reads_out)]) == 0
    capsys.readouterr()
    lines = [line.rstrip("\n").split("\t") for line in open(reads_out)]
    assert [status for _, status in lines] == ["200"] * 8 + ["502"] * (len(lines) - 8)
    assert writer.main(["reads", "--reads", str(reads_out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["reads"] == len(lines) and counts["ok"] == 8 and counts["failed"] == len(lines) - 8
    assert counts["first_failed_at"] == f"{lines[8][0]} 502"
    # until the first failure every read answered
    assert writer.main(["reads", "--reads", str(reads_out), "--until", lines[8][0]]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["reads"], counts["failed"], counts["last_ok_at"]) == (8, 0, lines[7][0])


def test_check_since_leaves_out_the_writes_acknowledged_before(tmp_path, capsys, monkeypatch):
    acked = tmp_path / "acked"
    acked.write_text("w-1\t2026-12-07T03:00:00.500000Z\nw-2\t2026-12-07T03:00:01.200000Z\n"
                     "w-3\t2026-12-07T03:00:05.000000Z\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("w-2\nw-3\n"))
    # the record's whole second: the cut is the next one
    assert writer.main(["check", "--acked", str(acked), "--since", "2026-12-07T03:00:00Z"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["acknowledged"] == 2 and counts["acknowledged_before_since"] == 1
    assert counts["present_before_since"] == 0


def test_the_writer_switches_to_the_new_anon_key_after_a_jwt_rotation(gateway, tmp_path, capsys):
    url, state = gateway
    state.update(hold=set(), stale_at=0, rotate_at=4, new_key="new-anon-key")
    (tmp_path / "anon").write_text("anon-key\n")
    # where the new key is published (the host's env file in Molecule), read by the writer's command
    (tmp_path / "published").write_text("new-anon-key\n")
    command = json.dumps([sys.executable, "-c", f"print(open({str(tmp_path / 'published')!r}).read().strip())"])
    rc = writer.main(["run", "--api-url", url, "--anon-key-file", str(tmp_path / "anon"), "--email", "w@x.invalid",
                      "--password", "pw", "--out", str(tmp_path / "acked"), "--prefix", "w-k", "--interval", "0.01",
                      "--max-seconds", "30", "--stop-file", state["stop"], "--anon-key-command", command])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    # one 401 (the old key), then the new key, a new sign-in, and every later insert acknowledged
    assert summary["refused"] == {"401": 1}
    assert summary["key_switches"] == 1
    assert summary["acknowledged"] == 8 == len(state["rows"])
    assert state["logins"] == 2


def test_without_a_key_command_the_writer_keeps_the_old_key_and_is_refused(gateway, tmp_path, capsys):
    url, state = gateway
    state.update(hold=set(), stale_at=0, rotate_at=2, new_key="new-anon-key")
    (tmp_path / "anon").write_text("anon-key\n")
    rc = writer.main(["run", "--api-url", url, "--anon-key-file", str(tmp_path / "anon"), "--email", "w@x.invalid",
                      "--password", "pw", "--out", str(tmp_path / "acked"), "--prefix", "w-o", "--interval", "0.01",
                      "--max-seconds", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["acknowledged"] == 1 and summary["key_switches"] == 0
    assert summary["refused"]["401"] == summary["attempts"] - 1
