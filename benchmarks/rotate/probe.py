#!/usr/bin/env python3
"""Downtime of the config endpoint while a command runs (a rotation, an upgrade), on loopback.

    probe.py [--interval 0.1] [--timeout 2] [--max-seconds 1800] [--out FILE] [--url URL] -- COMMAND...

Starts COMMAND (its output passes through), and until it exits polls URL (default: the
environment variable PROBE_URL, so a tenant key in the query stays out of the process list)
every --interval seconds, each request with a --timeout. Then prints one line:

    probe: longest stretch without a 200: 1.83 s (312 polls, 19 not 200, ...)

and, with --out, the same numbers as JSON. A stretch runs from the moment the first failing
request was sent to the moment the next 200 arrived (or the end of the probe). Bounded: after
--max-seconds the command is terminated and probing stops. Only loopback URLs are accepted.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def poll(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:  # refused, reset, timed out: all "not 200"
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("PROBE_URL", ""))
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.url:
        ap.error("a URL (--url or PROBE_URL) and a command after -- are required")
    if urllib.parse.urlsplit(args.url).hostname not in LOOPBACK:
        ap.error("probes go to loopback only")

    started = time.monotonic()
    child = subprocess.Popen(command)  # the operator's own command
    polls = bad = 0
    statuses: dict = {}
    fail_since = None
    stretches = []  # [seconds after the start, length] of every stretch without a 200
    deadline = started + args.max_seconds
    try:
        while child.poll() is None and time.monotonic() < deadline:
            sent = time.monotonic()
            status = poll(args.url, args.timeout)
            polls += 1
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                if fail_since is not None:
                    stretches.append([round(fail_since - started, 1), round(time.monotonic() - fail_since, 2)])
                    fail_since = None
            else:
                bad += 1
                if fail_since is None:
                    fail_since = sent
            time.sleep(max(0.0, args.interval - (time.monotonic() - sent)))
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        rc = child.wait()
    end = time.monotonic()
    if fail_since is not None:
        stretches.append([round(fail_since - started, 1), round(end - fail_since, 2)])
    longest = max([length for _at, length in stretches], default=0.0)
    result = {"label": args.label, "longest_without_200_s": round(longest, 2), "polls": polls, "not_200": bad,
              "stretches": stretches, "statuses": statuses, "seconds": round(end - started, 1), "command_rc": rc,
              "timed_out": end >= deadline}
    label = f" [{args.label}]" if args.label else ""
    print(f"probe{label}: longest stretch without a 200: {longest:.2f} s ({polls} polls, {bad} not 200, "
          f"statuses {statuses}, {end - started:.1f} s in all, command rc {rc}; stretches [at s, length s]: "
          f"{stretches})", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
