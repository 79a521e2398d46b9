#!/usr/bin/env python3
"""What waiting costs: the kill -9 trials' watch on an upgrade's progress, two ways.

The Molecule upgrade scenarios kill ansible-playbook once an upgrade reaches a step, and wait
for that step by reading the host's operation record. Measured here, on a throw-away host
container, for the same wall time each (nothing reaches the step, as in the minutes an upgrade
takes to get there):

  idle         nothing (the machine's own background, subtracted from the others)
  controller   a `docker exec HOST cat` + python3 every 0.2 s from the controller (the old kill-at.sh)
  in-host      one `docker exec` of a python3 loop on the host that reads the record every 0.1 s
               (molecule/resources/files/kill-at.sh)

CPU is the whole machine's busy time from /proc/stat (the engine, containerd and runc included),
in CPU-seconds per minute of waiting; the ratio is controller / in-host, each less idle.

  python benchmarks/harness/bench.py            # --seconds 30 (each), --image paycraft-local/host:bookworm
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from machine import busy  # benchmarks/machine.py

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILL_AT = os.path.join(REPO, "molecule", "resources", "files", "kill-at.sh")
RECORD = '{"status": "done", "steps": [{"name": "smoke"}]}'
OLD_POLL = r"""
deadline=$((SECONDS + $2))
while [ "$SECONDS" -lt "$deadline" ]; do
  docker exec "$1" cat /etc/paycraft/operation.json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
sys.exit(0 if r.get("status") == "running" and any(s["name"] == sys.argv[1] for s in r.get("steps", [])) else 1)
' never && exit 0
  sleep 0.2
done
"""


def measure(label, seconds, run):
    b0, t0 = busy(), time.monotonic()
    run(seconds)
    cpu, wall = busy() - b0, time.monotonic() - t0
    print(f"  {label:<11} {cpu:7.2f} CPU-s in {wall:5.1f} s", flush=True)
    return cpu / wall * 60


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--image", default="paycraft-local/host:bookworm")
    args = ap.parse_args()
    name = f"paycraft-bench-harness-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, args.image, "sleep", "infinity"],
                   check=True, capture_output=True)
    try:
        subprocess.run(["docker", "exec", name, "sh", "-c",
                        f"mkdir -p /etc/paycraft && printf '%s' '{RECORD}' > /etc/paycraft/operation.json"], check=True)
        secs = int(args.seconds)

        def idle(s):
            time.sleep(s)

        def controller(s):
            subprocess.run(["bash", "-c", OLD_POLL, "poll", name, str(secs)], check=False)

        def in_host(s):
            out = subprocess.run(["bash", KILL_AT, name, "never", str(secs), os.devnull, "--", "sleep", str(secs + 30)],
                                 capture_output=True, text=True, check=False)
            if "did not begin" not in out.stderr:
                sys.exit(f"kill-at.sh did not wait as expected:\n{out.stderr}")

        print(f"waiting {secs} s each, on {name} ({os.cpu_count()} CPUs):")
        base = measure("idle", secs, idle)
        old = measure("controller", secs, controller) - base
        new = measure("in-host", secs, in_host) - base
        print(f"\nCPU-s per minute of waiting, idle ({base:.2f}/min) subtracted:")
        print(f"  controller polling  {old:6.2f}")
        print(f"  in-host watcher     {new:6.2f}")
        if new > 0.05 * base:
            print(f"  ratio controller / in-host: {old / new:.1f}x")
        else:
            print(f"  ratio: the in-host watcher is within the idle's noise ({new:+.2f}); controller polling costs "
                  f"{old / 60:.2f} of a CPU for as long as it waits")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


if __name__ == "__main__":
    main()
