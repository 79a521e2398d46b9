"""Benchmark the test hosts' bytecode cache for Ansible's module payloads (tests/hosts/pyc_cache).

Run by hand (the project's virtualenv active, a Docker engine, the test host image built by
tests/hosts/build.sh):
    python benchmarks/pyc_cache/bench.py [--tasks 30] [--reps 3]

A throw-away container of the DinD test host image is the managed host, reached as the tests reach
theirs (community.docker.docker, pipelining on). The connection benchmark's playbook (``--tasks`` module
tasks: ``stat`` and ``file``) runs alternately without the cache (the ``.pth`` file that installs it
moved aside) and with it (warm: one run before the reps fills it), ``--reps`` times each. Prints the
medians of wall time, the controller's CPU, the host container's CPU and the machine's busy CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "connection"))
from bench import REPO, playbook, run, start_host  # benchmarks/connection/bench.py

sys.path.insert(0, str(REPO / "tests"))
from paycraft_dind import install_pyc_cache

SITE = "/usr/local/lib/python3.11/dist-packages"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    host, cgroup = start_host("paycraft-bench-pyc")
    pth = f"{SITE}/paycraft-test-pyc-cache.pth"

    def cache(on: bool) -> None:
        src, dst = (f"{pth}.off", pth) if on else (pth, f"{pth}.off")
        subprocess.run(["docker", "exec", host, "sh", "-c", f"[ ! -e {src} ] || mv {src} {dst}"], check=True,
                       capture_output=True)

    results: dict[str, list[tuple[float, ...]]] = {"no cache": [], "cache": []}
    try:
        install_pyc_cache(host)
        with tempfile.TemporaryDirectory(prefix="paycraft-bench-pyc-") as work:
            book = Path(work) / "bench.yml"
            book.write_text(playbook(args.tasks))
            run(host, cgroup, book, "community.docker.docker", True)  # warm-up, fills the cache
            count = "find /var/cache/paycraft-test-pyc -type f | wc -l"
            filled = subprocess.run(["docker", "exec", host, "sh", "-c", count], capture_output=True, text=True,
                                    check=True).stdout.strip()
            print(f"  the warm-up cached {filled} compiled sources", flush=True)
            if filled == "0":
                sys.exit("the cache stayed empty: the hook is not in use")
            for rep in range(args.reps):
                for label in (["no cache", "cache"] if rep % 2 == 0 else ["cache", "no cache"]):
                    cache(label == "cache")
                    res = run(host, cgroup, book, "community.docker.docker", True)
                    results[label].append(res)
                    print(f"  rep {rep + 1}: {label}: {res[0]:.1f} s wall, CPU s: controller {res[1]:.1f}, "
                          f"host {res[2]:.1f}, machine {res[3]:.1f}", flush=True)
    finally:
        subprocess.run(["docker", "rm", "-f", host], capture_output=True)
    print(f"\n{args.tasks} tasks, median of {args.reps}, load average {os.getloadavg()[0]:.1f}\n")
    base = [statistics.median(r[i] for r in results["no cache"]) for i in range(4)]
    for label, runs in results.items():
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        print(f"{label:<10} wall {med[0]:6.1f} s ({med[0] / base[0]:.2f}x)  controller {med[1]:5.1f}  "
              f"host {med[2]:5.1f} ({med[2] / base[2]:.2f}x)  machine {med[3]:5.1f} ({med[3] / base[3]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
