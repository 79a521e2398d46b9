#!/usr/bin/env python3
"""A client that keeps writing through the gateway, and the check that none of its acknowledged writes is lost.

    paycraft_writer.py run --api-url URL --anon-key-file FILE --email E --password P --out FILE
                           [--prefix P] [--interval 0.1] [--max-seconds 900] [--stop-file FILE]
                           [--anon-key-command ARGV_JSON]
    paycraft_writer.py check --acked FILE [--since ISO] < present keys, one per line
    paycraft_writer.py reads --reads FILE [--since ISO] [--until ISO]

``run`` signs the user up (or in, when it exists), finds its tenant (``POST /rest/v1/rpc/provision_app``
when the release has it, else the tenant main's signup trigger made), writes ``<out>.ready``, then
inserts one product every ``--interval`` seconds the way supabase-js does (``POST /rest/v1/products``
with the anon key and the user's token, ``Prefer: return=minimal``). The key (the product's sku) of every
insert that got a 2xx is appended to ``--out`` at once (``key<TAB>UTC time``, flushed and fsynced): an
acknowledged write. Everything else is refused (by status: 503 from a write hold, 401 when the token
went stale, ... and ``no-answer``). A JWT secret rotation changes the anon key itself: every request with
the old one then gets 401 from the gateway, so with ``--anon-key-command`` (a JSON argv that prints the
current key, such as reading ``PAYCRAFT_ANON_KEY`` from the host's env file) a 401 asks for the key, at
most once a second, and the writer switches to a new one and signs in again, as an SDK given the new key
would (``key_switches`` in the summary). It stops when ``--stop-file`` exists or after ``--max-seconds`` and
prints (and writes to ``<out>.summary.json``) ``{"acknowledged", "refused": {status: n}, ...}``.

With ``--reads-out FILE`` every insert is followed by a read through the gateway (``GET /rest/v1/products``,
the user's own, one row), recorded as ``UTC time<TAB>status`` whatever it answered: the read probe. ``reads``
counts the probe's reads between ``--since`` and ``--until`` (``{"reads", "ok", "failed", "first_failed_at",
"last_ok_at"}``): a rollback restoring beside the live database must answer every read until its switch.

``check`` reads the keys present in the database on stdin and prints ``{"acknowledged", "present",
"missing", "refused"}``; it exits 1 when an acknowledged key (acknowledged at or after ``--since``) is
missing. Standard library only; no key or token is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

ACK = "acknowledged"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    def __init__(self, api_url: str, anon_key: str, timeout: float = 5.0):
        self.api_url = api_url.rstrip("/")
        self.anon_key = anon_key
        self.token = ""
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, prefer: str = ""):
        """(status or 'no-answer', parsed JSON body or None)."""
        headers = {"apikey": self.anon_key, "Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": f"Bearer {self.token or self.anon_key}"}
        if prefer:
            headers["Prefer"] = prefer
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,  # noqa: S310 - http(s) URL
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:  # noqa: S310 - the test host URL
                status, text = res.status, res.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        except (OSError, ValueError):
            return "no-answer", None
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, None

    def sign_in(self, email: str, password: str) -> bool:
        status, body = self.request("POST", "/auth/v1/signup", {"email": email, "password": password})
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            self.token = body["access_token"]
            return True
        status, body = self.request("POST", "/auth/v1/token?grant_type=password",
                                    {"email": email, "password": password})
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            self.token = body["access_token"]
            return True
        return False

    def tenant(self, app_name: str):
        """The user's tenant: one it administers already, else a new one from provision_app (PayCraft's
        contract; a release without it answers 404 and has main's signup trigger instead)."""
        status, body = self.request("GET", "/rest/v1/tenants?select=id&limit=1")
        if status == 200 and body:
            return body[0]["id"]
        status, body = self.request("POST", "/rest/v1/rpc/provision_app", {"p_app_name": app_name})
        if status == 200 and isinstance(body, dict) and body.get("tenant_id"):
            return body["tenant_id"]
        return None


class KeySource:
    """The current anon key from ``--anon-key-command`` (asked at most once per ``every`` seconds)."""

    def __init__(self, argv_json: str, every: float = 1.0, clock=time.monotonic):
        self.argv = json.loads(argv_json) if argv_json else None
        self.every = every
        self.clock = clock
        self.asked_at = None

    def current(self):
        """The key the command prints now, else None (no command, asked too recently, or it failed)."""
        if not self.argv or (self.asked_at is not None and self.clock() - self.asked_at < self.every):
            return None
        self.asked_at = self.clock()
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        key = out.stdout.strip()
        return key if out.returncode == 0 and key else None


def run(args) -> int:
    with open(args.anon_key_file, encoding="utf-8") as fh:
        anon = fh.read().strip()
    client = Client(args.api_url, anon)
    keys = KeySource(args.anon_key_command)
    switches = 0
    deadline = time.monotonic() + args.max_seconds
    tenant = None
    while time.monotonic() < deadline and not tenant:
        if client.sign_in(args.email, args.password):
            tenant = client.tenant(args.prefix)
        if not tenant:
            time.sleep(1)
    if not tenant:
        print(json.dumps({"error": f"no session or tenant for {args.email} within {args.max_seconds}s"}))
        return 2
    with open(args.out + ".ready", "w", encoding="utf-8") as fh:
        fh.write(utc_now() + "\n")
    refused: dict = {}
    acked = 0
    first_refused = last_refused = None
    n = 0
    reads = open(args.reads_out, "a", encoding="utf-8") if args.reads_out else None
    with open(args.out, "a", encoding="utf-8") as out:
        while time.monotonic() < deadline and not (args.stop_file and os.path.exists(args.stop_file)):
            started = time.monotonic()
            n += 1
            key = f"{args.prefix}-{n:06d}"
            status, _ = client.request("POST", "/rest/v1/products", prefer="return=minimal", body={
                "tenant_id": tenant, "sku": key, "name": f"writer {key}", "price_cents": n})
            if isinstance(status, int) and 200 <= status < 300:
                out.write(f"{key}\t{utc_now()}\n")
                out.flush()
                os.fsync(out.fileno())
                acked += 1
            else:
                refused[str(status)] = refused.get(str(status), 0) + 1
                first_refused = first_refused or utc_now()
                last_refused = utc_now()
                if status == 401:  # the token went stale, or the anon key (a JWT secret rotated)
                    key = keys.current()
                    if key and key != client.anon_key:
                        client.anon_key, client.token = key, ""
                        switches += 1
                    client.sign_in(args.email, args.password)
            if reads is not None:
                got, _ = client.request("GET", "/rest/v1/products?select=sku&limit=1")
                reads.write(f"{utc_now()}\t{got}\n")
                reads.flush()
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    if reads is not None:
        reads.close()
    summary = {ACK: acked, "refused": refused, "refused_total": sum(refused.values()), "attempts": n,
               "key_switches": switches,
               "first_refused_at": first_refused, "last_refused_at": last_refused}
    with open(args.out + ".summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    print(json.dumps(summary))
    return 0


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 UTC time, with or without fractions of a second."""
    return datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def check(args) -> int:
    acked = []
    with open(args.acked, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                key, _, at = line.rstrip("\n").partition("\t")
                acked.append((key, at))
    present = {line.strip() for line in sys.stdin if line.strip()}
    # a record's times are whole seconds: the cut is the next second after it
    since = parse_time(args.since) + datetime.timedelta(seconds=1) if args.since else None
    acked = [(k, parse_time(at)) for k, at in acked]
    counted = [(k, at) for k, at in acked if not since or at >= since]
    missing = [k for k, _ in counted if k not in present]
    summary_path = args.acked + ".summary.json"
    refused, switches = {}, 0
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as fh:
            summary = json.load(fh)
        refused, switches = summary.get("refused", {}), summary.get("key_switches", 0)
    result = {ACK: len(counted), "present": len(counted) - len(missing), "missing": len(missing),
              "missing_keys": missing[:20], "refused": refused, "refused_total": sum(refused.values()),
              "key_switches": switches,
              "acknowledged_before_since": len(acked) - len(counted),
              "present_before_since": sum(1 for k, at in acked if since and at < since and k in present)}
    print(json.dumps(result))
    return 1 if missing else 0


def reads(args) -> int:
    """The read probe's reads between --since and --until: how many, how many answered 200, the first failure."""
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    total = ok = 0
    first_failed = last_ok = None
    with open(args.reads, encoding="utf-8") as fh:
        for line in fh:
            at_text, _, status = line.rstrip("\n").partition("\t")
            if not at_text:
                continue
            at = parse_time(at_text)
            if (since and at < since) or (until and at >= until):
                continue
            total += 1
            if status == "200":
                ok += 1
                last_ok = at_text
            elif first_failed is None:
                first_failed = f"{at_text} {status}"
    print(json.dumps({"reads": total, "ok": ok, "failed": total - ok, "first_failed_at": first_failed,
                      "last_ok_at": last_ok}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--api-url", required=True)
    r.add_argument("--anon-key-file", required=True)
    r.add_argument("--email", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--prefix", default="w")
    r.add_argument("--interval", type=float, default=0.1)
    r.add_argument("--max-seconds", type=float, default=900)
    r.add_argument("--stop-file", default="")
    r.add_argument("--anon-key-command", default="",
                   help="JSON argv printing the current anon key, run on a 401 (at most once a second)")
    r.add_argument("--reads-out", default="", help="record a read through the gateway after every insert here")
    c = sub.add_parser("check")
    c.add_argument("--acked", required=True)
    c.add_argument("--since", default="")
    d = sub.add_parser("reads")
    d.add_argument("--reads", required=True)
    d.add_argument("--since", default="")
    d.add_argument("--until", default="")
    args = parser.parse_args(argv)
    return {"run": run, "check": check, "reads": reads}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
