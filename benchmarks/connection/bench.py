"""Benchmark the ways Ansible reaches a container host: the same tasks each way, in the same run.

Run by hand (the project's virtualenv active, a Docker engine, the test host image built by
tests/hosts/build.sh):
    python benchmarks/connection/bench.py [--tasks 30] [--reps 3]

A throw-away container of the test host image (Debian with Python, what the Molecule hosts and the
DinD test hosts are) is the managed host. One playbook of ``--tasks`` module tasks (two thirds
``stat``, one third ``file``) runs each way, in rotating order, ``--reps`` times each:

  docker, pipelining off    community.docker.docker, a temp file per module (the baseline)
  docker, pipelining on     community.docker.docker, the module over stdin (ansible.cfg's setting)
  docker_api, pipelining on community.docker.docker_api: the Engine API from the Ansible worker itself,
                            no docker CLI process per task

Prints the medians of: wall time; the controller's CPU (ansible-playbook and every process it
starts); the host container's CPU (its cgroup); the whole machine's busy CPU from /proc/stat (the
engine, containerd and runc included, and whatever else runs: the load average is printed), and
each one's ratio to the baseline. The container is removed at the end.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import busy  # benchmarks/machine.py

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


METHODS = (  # label, connection plugin, pipelining
    ("docker, pipelining off", "community.docker.docker", False),
    ("docker, pipelining on", "community.docker.docker", True),
    ("docker_api, pipelining on", "community.docker.docker_api", True),
)


def container_cpu_file(cid: str) -> str | None:
    """The cgroup file with the container's CPU usage (cgroup v1 cpuacct or v2 cpu.stat)."""
    for pattern in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
                    f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage",
                    f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
                    f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
        found = glob.glob(pattern)
        if found:
            return found[0]
    return None


def start_host(prefix: str) -> tuple[str, str | None]:
    """A throw-away test host container (labelled paycraft.bench=1) and its cgroup CPU file."""
    host = f"{prefix}-{secrets.token_hex(3)}"
    subprocess.run(["docker", "run", "-d", "--name", host, "--label", "paycraft.bench=1", IMAGE, "sleep", "infinity"],
                   check=True, capture_output=True)
    cid = subprocess.run(["docker", "inspect", "--format", "{{.Id}}", host], capture_output=True, text=True,
                         check=True).stdout.strip()
    return host, container_cpu_file(cid)


def container_cpu(path: str | None) -> float:
    if path is None:
        return float("nan")
    with open(path) as f:
        text = f.read()
    if path.endswith("cpuacct.usage"):
        return int(text) / 1e9
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("usage_usec")) / 1e6


def run(host: str, cgroup: str | None, book: Path, connection: str, pipelining: bool) -> tuple[float, ...]:
    """One ansible-playbook run: (wall s, controller CPU s, host container CPU s, machine busy CPU s)."""
    env = dict(os.environ, ANSIBLE_PIPELINING=str(pipelining), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    host0, busy0, t0 = container_cpu(cgroup), busy(), time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", f"{host},", "-e", f"ansible_connection={connection}",
                           "-e", "ansible_python_interpreter=/usr/bin/python3", str(book)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.monotonic() - t0
    machine, on_host = busy() - busy0, container_cpu(cgroup) - host0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed ({connection}, pipelining={pipelining}):\n"
                 f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    controller = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, controller, on_host, machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=30, help="module tasks per playbook run (default 30)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each method; the median is reported (default 3)")
    args = ap.parse_args()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        sys.exit(f"the test host image {IMAGE} is missing: bash tests/hosts/build.sh")
    host, cgroup = start_host("paycraft-bench-conn")
    results: dict[str, list[tuple[float, ...]]] = {label: [] for label, _, _ in METHODS}
    try:
        with tempfile.TemporaryDirectory(prefix="paycraft-bench-conn-") as work:
            book = Path(work) / "bench.yml"
            book.write_text(playbook(args.tasks))
            run(host, cgroup, book, "community.docker.docker", True)  # warm-up: page cache, Ansible's imports
            for rep in range(args.reps):
                order = METHODS[rep % len(METHODS):] + METHODS[:rep % len(METHODS)]
                for label, connection, pipelining in order:
                    res = run(host, cgroup, book, connection, pipelining)
                    results[label].append(res)
                    print(f"  rep {rep + 1}: {label}: {res[0]:.1f} s wall, CPU s: controller {res[1]:.1f}, "
                          f"host {res[2]:.1f}, machine {res[3]:.1f}", flush=True)
    finally:
        subprocess.run(["docker", "rm", "-f", host], capture_output=True)
    med = {label: [statistics.median(r[i] for r in runs) for i in range(4)] for label, runs in results.items()}
    base = med[METHODS[0][0]]
    print(f"\n{args.tasks} tasks, median of {args.reps}, load average {os.getloadavg()[0]:.1f}\n")
    heads = ("wall s", "ctrl CPU s", "host CPU s", "mach CPU s")
    print(f"{'method':<27}" + "".join(f"{h:>12}{'ratio':>7}" for h in heads))
    for label, _, _ in METHODS:
        print(f"{label:<27}" + "".join(f"{v:>12.1f}{v / b:>6.2f}x" for v, b in zip(med[label], base, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
