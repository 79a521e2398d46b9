"""Benchmark Ansible's pipelining over the docker connection: the same tasks with it off and on, in the same run.

Run by hand (the project's virtualenv active, a Docker engine, the test host image built by
tests/hosts/build.sh):
    python benchmarks/connection/bench.py [--tasks 30] [--reps 3]

A throw-away container of the test host image (Debian with Python, what the Molecule hosts and the
DinD test hosts are) is the managed host, reached through community.docker.docker as the tests reach
theirs. One playbook of ``--tasks`` module tasks (two thirds ``stat``, one third ``file``) runs with
ANSIBLE_PIPELINING=False and =True, alternating, ``--reps`` times each. Prints the median wall time
and the controller's CPU time (ansible-playbook and the docker CLI processes it starts) per method,
and the ratio of pipelining on to off. The container is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = "paycraft-local/dind-host:bookworm"


def playbook(tasks: int) -> str:
    stats = tasks - tasks // 3
    return f"""\
- name: Connection benchmark
  hosts: all
  gather_facts: false
  tasks:
    - name: Stat a file
      ansible.builtin.stat:
        path: /etc/hostname
      loop: "{{{{ range({stats}) | list }}}}"
    - name: Touch a file
      ansible.builtin.file:
        path: "/tmp/paycraft-bench-{{{{ item }}}}"
        state: touch
        mode: "0600"
      loop: "{{{{ range({tasks // 3}) | list }}}}"
"""


def run(host: str, book: Path, pipelining: bool) -> tuple[float, float]:
    """One ansible-playbook run: (wall seconds, controller CPU seconds of it and its children)."""
    env = dict(os.environ, ANSIBLE_PIPELINING=str(pipelining), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", f"{host},", "-e", "ansible_connection=community.docker.docker",
                           "-e", "ansible_python_interpreter=/usr/bin/python3", str(book)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed (pipelining={pipelining}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=30, help="module tasks per playbook run (default 30)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each method; the median is reported (default 3)")
    args = ap.parse_args()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        sys.exit(f"the test host image {IMAGE} is missing: bash tests/hosts/build.sh")
    host = f"paycraft-bench-conn-{secrets.token_hex(3)}"
    subprocess.run(["docker", "run", "-d", "--name", host, "--label", "paycraft.bench=1", IMAGE, "sleep", "infinity"],
                   check=True, capture_output=True)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        with tempfile.TemporaryDirectory(prefix="paycraft-bench-conn-") as work:
            book = Path(work) / "bench.yml"
            book.write_text(playbook(args.tasks))
            run(host, book, True)  # warm-up: the image's page cache, Ansible's own imports
            for rep in range(args.reps):
                for pipelining in (False, True) if rep % 2 == 0 else (True, False):
                    wall, cpu = run(host, book, pipelining)
                    results[pipelining].append((wall, cpu))
                    print(f"  rep {rep + 1}: pipelining={pipelining}: {wall:.1f} s wall, {cpu:.1f} s controller CPU",
                          flush=True)
    finally:
        subprocess.run(["docker", "rm", "-f", host], capture_output=True)
    med = {p: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for p, r in results.items()}
    print(f"\n{args.tasks} tasks over community.docker.docker, median of {args.reps}, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print(f"{'method':<27}{'wall s':>9}{'ratio':>8}{'CPU s':>9}{'ratio':>8}")
    for p in (False, True):
        wall, cpu = med[p]
        print(f"{'pipelining ' + ('on' if p else 'off (baseline)'):<27}{wall:>9.1f}"
              f"{wall / med[False][0]:>7.2f}x{cpu:>9.1f}{cpu / med[False][1]:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
