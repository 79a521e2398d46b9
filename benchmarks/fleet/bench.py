#!/usr/bin/env python3
"""site.yml on 1 host against N hosts, on disposable Docker-in-Docker hosts.

Run by hand on this machine (never by CI):

    .venv/bin/python benchmarks/fleet/bench.py [--hosts 3]

The hosts are the Molecule scenarios' own (molecule/resources/create.yml and
destroy.yml, run directly with ansible-playbook): paycraft-local/dind-host
containers, each with its own Docker engine, on one network with the private
registry paycraft-test-registry, with the test hosts' settings
(molecule/resources/group_vars/all). For each size (1, then N, the 1-host
baseline measured in the same run) on freshly created hosts, with forks = size:

1. engine: ``site.yml --tags docker`` (the docker role starts each engine);
2. images: every host pulls the release's six images from the registry at
   once (what ``docker compose up`` pulls on a fresh host: image distribution);
3. rest: ``site.yml`` in full (source, config, stack up, migrations, smoke:
   the per-host work, images already there);
4. re-run: ``site.yml`` again, nothing to do (changed=0 checked);

and for each timed run the controller's CPU (ansible-playbook and its children:
user+sys seconds) and the machine's CPU use (/proc/stat, all cores), so the
ratio table says what grows with N. Memory per host is read at the end
(docker stats) to say how many hosts memory would allow. Leave the collection's
roles, plugins and playbooks alone while it runs: they are part of the record a
re-run compares with (roles/converged), so an edit turns the re-run into a full
run that writes a new record (changed=1 on every host).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RESOURCES = REPO / "molecule" / "resources"
SCENARIO = "fleet-bench"
HOST_IMAGE = "paycraft-local/dind-host:bookworm"
IMAGE_KEYS = ["db", "auth", "rest", "kong", "edge-runtime", "dashboard"]


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Measure:
    def __init__(self):
        self.wall = self.cpu = self.machine = 0.0

    def __enter__(self):
        self._t = time.perf_counter()
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._c = r.ru_utime + r.ru_stime
        self._m = machine_busy()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._t
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = r.ru_utime + r.ru_stime - self._c
        busy, total = machine_busy()
        self.machine = (busy - self._m[0]) / max(total - self._m[1], 1) * 100
        return False


class Fleet:
    def __init__(self, size: int, work: Path):
        self.size = size
        self.names = [f"paycraft-bench-{i}" for i in range(1, size + 1)]
        self.work = work
        collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections"))
        self.env = dict(os.environ, MOLECULE_PROJECT_DIRECTORY=str(REPO), MOLECULE_SCENARIO_NAME=SCENARIO,
                        ANSIBLE_COLLECTIONS_PATH=collections,
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=f"{BIN}:{os.environ['PATH']}")
        self.inv = work / "inventory"
        self.inv.mkdir(exist_ok=True)
        hosts = {"all": {"children": {"paycraft": {"hosts": {n: {} for n in self.names}}}}}
        (self.inv / "hosts.yml").write_text(json.dumps(hosts))
        if not (self.inv / "group_vars").exists():
            (self.inv / "group_vars").symlink_to(RESOURCES / "group_vars")
        self.extra = work / f"molecule-{size}.json"
        self.extra.write_text(json.dumps({
            "molecule_yml": {"platforms": [{"name": n, "image": HOST_IMAGE} for n in self.names]},
            "molecule_instance_config": str(work / "instances.yml"),
        }))

    def play(self, playbook: Path, *args: str, inventory: bool = True, check: bool = True) -> str:
        cmd = [str(BIN / "ansible-playbook")]
        cmd += (["-i", str(self.inv / "hosts.yml")] if inventory else
                ["-i", "localhost,", "-e", "ansible_connection=local",
                 "-e", f"ansible_python_interpreter={sys.executable}"])
        cmd += ["-e", f"@{self.extra}", "--forks", str(max(self.size, 5)), str(playbook), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=self.env)
        if check and res.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        return res.stdout

    def create(self):
        self.play(RESOURCES / "create.yml", inventory=False)

    def destroy(self):
        self.play(RESOURCES / "destroy.yml", inventory=False, check=False)

    def images(self) -> list[str]:
        out = subprocess.run(
            [str(BIN / "ansible"), "-i", str(self.inv / "hosts.yml"), self.names[0], "-m", "ansible.builtin.debug",
             "-a", "msg={{ paycraft_images | to_json }}", "-o"],
            capture_output=True, text=True, cwd=REPO, env=self.env, check=True).stdout
        return [json.loads(json.loads(out.split(" => ", 1)[1])["msg"])[k] for k in IMAGE_KEYS]

    def pull_all(self, images: list[str]):
        def pull(host):
            for image in images:
                subprocess.run(["docker", "exec", host, "docker", "pull", "-q", image],
                               capture_output=True, text=True, check=True)
        with ThreadPoolExecutor(max_workers=self.size) as pool:
            list(pool.map(pull, self.names))

    def memory_mib(self) -> list[float]:
        out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *self.names],
                             capture_output=True, text=True, check=True).stdout
        sizes = []
        for line in out.splitlines():
            m = re.search(r"\s([\d.]+)(MiB|GiB)", line)
            if m:
                sizes.append(float(m.group(1)) * (1024 if m.group(2) == "GiB" else 1))
        return sizes


def changed_total(stdout: str) -> int:
    return sum(int(x) for x in re.findall(r"changed=(\d+)", stdout.rsplit("PLAY RECAP", 1)[1]))


def changed_tasks(stdout: str) -> list[str]:
    """``TASK name [host]`` for every task that reported changed (the default callback's lines)."""
    found, task = [], "?"
    for line in stdout.splitlines():
        m = re.match(r"TASK \[(.*)\]", line)
        if m:
            task = m.group(1)
        m = re.match(r"changed: \[([^\]]+)\]", line)
        if m:
            found.append(f"{task} [{m.group(1)}]")
    return found


def run_size(size: int, work: Path) -> dict:
    fleet = Fleet(size, work)
    site = REPO / "playbooks" / "site.yml"
    print(f"[bench] {size} host(s): create", flush=True)
    fleet.destroy()
    fleet.create()
    try:
        row = {}
        with Measure() as m:
            fleet.play(site, "--tags", "docker")
        row["engine"] = m
        images = fleet.images()
        print(f"[bench] {size} host(s): pull {len(images)} images on each host", flush=True)
        with Measure() as m:
            fleet.pull_all(images)
        row["images"] = m
        print(f"[bench] {size} host(s): site.yml", flush=True)
        with Measure() as m:
            fleet.play(site)
        row["rest"] = m
        with Measure() as m:
            out = fleet.play(site)
        row["rerun"] = m
        row["rerun_changed"] = changed_total(out)
        if row["rerun_changed"]:
            # kept for reading: what a re-run found to change is a defect (idempotence)
            log = Path(tempfile.gettempdir()) / f"paycraft-fleet-bench-rerun-{size}.log"
            log.write_text(out)
            print(f"[bench] {size} host(s): the re-run changed {row['rerun_changed']} (output: {log}):", flush=True)
            for line in changed_tasks(out):
                print(f"[bench]   {line}", flush=True)
        row["memory"] = fleet.memory_mib()
        return row
    finally:
        fleet.destroy()


def report(one: dict, many: dict, n: int) -> None:
    """Print the table: each phase on 1 host and on n hosts, and where the CPU went."""

    def total(row):
        return sum(row[k].wall for k in ("engine", "images", "rest"))

    print(f"\nsite.yml on 1 host and on {n} hosts (forks >= hosts), fresh Docker-in-Docker hosts, "
          f"{os.cpu_count()} cores")
    print(f"{'phase':<34}{'1 host s':>10}{f'{n} hosts s':>12}{'ratio':>8}   "
          f"{'ctl CPU s 1/N':>16}   {'machine CPU % 1/N':>18}")
    labels = [("engine", "docker phase (engine start)"), ("images", "image distribution (6 images/host)"),
              ("rest", "site.yml, images present")]
    for key, label in labels:
        a, b = one[key], many[key]
        print(f"{label:<34}{a.wall:>10.1f}{b.wall:>12.1f}{b.wall / a.wall:>8.2f}   "
              f"{a.cpu:>7.1f} /{b.cpu:>7.1f}   {a.machine:>8.0f} /{b.machine:>7.0f}")
    print(f"{'site.yml from scratch (sum)':<34}{total(one):>10.1f}{total(many):>12.1f}{total(many) / total(one):>8.2f}")
    a, b = one["rerun"], many["rerun"]
    print(f"{'re-run, nothing to do':<34}{a.wall:>10.1f}{b.wall:>12.1f}{b.wall / a.wall:>8.2f}   "
          f"{a.cpu:>7.1f} /{b.cpu:>7.1f}   {a.machine:>8.0f} /{b.machine:>7.0f}")
    print(f"re-run changed: 1 host {one['rerun_changed']}, {n} hosts {many['rerun_changed']} (must be 0)")
    mem = many["memory"]
    if mem:
        avail = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 1024
        per = sum(mem) / len(mem)
        print(f"memory per converged host: {per:.0f} MiB (max {max(mem):.0f}); "
              f"memory available now {avail:.0f} MiB -> about {int(avail // per)} more hosts by memory")
    # where the CPU of "site.yml, images present" went, per host: the controller's ansible-playbook and its
    # children (measured), and the rest of the machine (hosts' engines, containers, modules on the hosts)
    cores = os.cpu_count() or 1
    print("CPU per host, site.yml with images present (controller measured; hosts = machine minus controller):")
    for size, row in ((1, one), (n, many)):
        m = row["rest"]
        hosts_s = m.machine / 100 * cores * m.wall - m.cpu
        print(f"  {size:>2} host(s): controller {m.cpu / size:5.1f} CPU-s/host, hosts {hosts_s / size:5.1f} "
              f"CPU-s/host, machine busy {m.machine:.0f}% of {cores} cores")
    rest = many["rest"]
    print(f"  a controller alone (hosts on machines of their own) would need at least "
          f"{rest.cpu / cores:.1f} s of wall for the {n} hosts' {rest.cpu:.1f} CPU-s on {cores} cores "
          f"(1 host took {one['rest'].wall:.1f} s)")


def main() -> int:
    # a SIGTERM (kill) ends the run through the finally clauses, so the hosts are destroyed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("[bench] terminated"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3, help="N, the fleet size compared with 1 host (default 3)")
    args = parser.parse_args()
    n = args.hosts
    with tempfile.TemporaryDirectory(prefix="paycraft-fleet-bench-") as tmp:
        results = {}
        for size in (1, n):
            work = Path(tmp) / f"size-{size}"
            work.mkdir()
            results[size] = run_size(size, work)
    one, many = results[1], results[n]
    report(one, many, n)
    return 0 if one["rerun_changed"] == 0 and many["rerun_changed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
