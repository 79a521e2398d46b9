#!/usr/bin/env python3
"""What ansible-playbook costs while it waits on a long task, by internal_poll_interval.

While a task runs, ansible-playbook's main process looks for its result every
internal_poll_interval seconds (ansible-core's default: 0.001). An upgrade waits on long
tasks (the snapshot, compose up, the smoke test), and a Molecule verify waits on whole nested
runs. The repository's ansible.cfg and Molecule's base config set 0.01. Measured here: one
play on localhost whose one task sleeps for --seconds, run with each value in turn, in rounds
(these machines are noisy: the values alternate, the median is printed). CPU is that of
ansible-playbook and everything it waited for (getrusage of the children), and the whole
machine's busy time from /proc/stat; the ratio is against ansible-core's default, measured in
the same run. The setting is ini-only ([defaults] internal_poll_interval): ansible-core reads
no environment variable for it.

  python benchmarks/poll/bench.py              # --seconds 60 --rounds 3
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from machine import busy  # benchmarks/machine.py

PLAY = """- name: Wait on one long task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command: sleep {seconds}
      changed_when: false
"""
VALUES = ("0.001", "0.01", "0.05")  # the first is ansible-core's default: the baseline


def run_once(playbook, cfg, seconds):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, t0 = busy(), time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook],
                          env=dict(os.environ, ANSIBLE_CONFIG=cfg), capture_output=True, text=True)
    wall, machine = time.monotonic() - t0, busy() - b0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    tree = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, tree, machine


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="how long the task waits (default 60)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per value, alternating (default 3)")
    args = ap.parse_args()
    results = {v: [] for v in VALUES}
    with tempfile.TemporaryDirectory(prefix="paycraft-bench-poll.") as tmp:
        playbook = os.path.join(tmp, "wait.yml")
        with open(playbook, "w") as f:
            f.write(PLAY.format(seconds=args.seconds))
        cfgs = {}
        for v in VALUES:
            cfgs[v] = os.path.join(tmp, f"poll{len(cfgs)}.cfg")  # ansible.cfg needs a .cfg name
            with open(cfgs[v], "w") as f:
                f.write(f"[defaults]\ninternal_poll_interval = {v}\nretry_files_enabled = false\n")
        for r in range(args.rounds):
            for v in VALUES:
                wall, tree, machine = run_once(playbook, cfgs[v], args.seconds)
                print(f"  round {r + 1} poll {v:<5} {wall:5.1f} s wall, ansible-playbook {tree:5.2f} CPU-s, "
                      f"machine {machine:5.2f} CPU-s", flush=True)
                results[v].append((wall, tree, machine))
    base = statistics.median(t for _, t, _ in results[VALUES[0]])
    base_m = statistics.median(m for _, _, m in results[VALUES[0]])
    print(f"\none task waiting {args.seconds} s, median of {args.rounds}; CPU per minute of waiting in brackets")
    print("| internal_poll_interval | wall s | ansible-playbook CPU-s | ratio | machine CPU-s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in VALUES:
        wall = statistics.median(w for w, _, _ in results[v])
        tree = statistics.median(t for _, t, _ in results[v])
        machine = statistics.median(m for _, _, m in results[v])
        label = f"{v} (ansible-core's default)" if v == VALUES[0] else (f"{v} (this repository)" if v == "0.01" else v)
        print(f"| {label} | {wall:.1f} | {tree:.2f} ({tree / wall * 60:.2f}/min) | {tree / base:.2f}x "
              f"| {machine:.2f} | {machine / base_m:.2f}x |")


if __name__ == "__main__":
    main()
