#!/usr/bin/env python3
"""No-change re-run of site.yml against the runbook's manual re-run, on one converged host.

Run by hand on this machine after `scripts/demo.sh` (it converges first if needed):

    .venv/bin/python benchmarks/site/bench.py [--reps 3]

Both sides run in this process tree, alternating, so machine noise hits both:

* site.yml: `ansible-playbook -i inventories/local/hosts.yml playbooks/site.yml`,
  which must report changed=0 on every repetition (checked, not assumed);
* manual: what an operator re-runs by the runbook (section 2) in infra/selfhost:
  `docker compose up -d db auth kong`, `./migrations-bootstrap.sh`,
  `docker compose up -d edge-runtime dashboard`, and the section 6 `curl`
  of the SuiteConfig. Compose gets the same env file and override that
  site.yml uses (the manual equivalent of .env plus the local image names).

Prints the medians and the ratio site.yml / manual (target: at most 2x).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SELFHOST = Path("/opt/paycraft/src/infra/selfhost")
ENV_FILE = "/etc/paycraft/paycraft.env"
OVERRIDE = "/etc/paycraft/compose.override.yml"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)


def site(env) -> tuple[float, int]:
    start = time.perf_counter()
    res = run([str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local/hosts.yml", "playbooks/site.yml"],
              cwd=REPO, env=env)
    elapsed = time.perf_counter() - start
    changed = int(re.search(r"changed=(\d+)", res.stdout.rsplit("PLAY RECAP", 1)[1]).group(1))
    return elapsed, changed


def manual(api_key: str) -> float:
    compose = ["docker", "compose", "-p", "selfhost", "--env-file", ENV_FILE,
               "-f", "docker-compose.yaml", "-f", OVERRIDE]
    start = time.perf_counter()
    run([*compose, "up", "-d", "db", "auth", "kong"], cwd=SELFHOST)
    out = run(["./migrations-bootstrap.sh"], cwd=SELFHOST).stdout
    run([*compose, "up", "-d", "edge-runtime", "dashboard"], cwd=SELFHOST)
    run(["curl", "-fsS", f"http://localhost:54321/functions/v1/config?apiKey={api_key}"])
    elapsed = time.perf_counter() - start
    assert "0 applied" in out, out
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"))

    if not (SELFHOST / "docker-compose.yaml").exists():
        print("converging first (scripts/demo.sh)", flush=True)
        run(["bash", "scripts/demo.sh"], cwd=REPO)
    site(env)  # warm-up: caches, and proof the host is converged
    api_key = run(["docker", "exec", "paycraft_db", "psql", "-U", "postgres", "-tAc",
                   "SELECT api_key_test FROM tenants ORDER BY created_at LIMIT 1"]).stdout.strip()

    site_times, manual_times = [], []
    for rep in range(args.reps):
        s, changed = site(env)
        m = manual(api_key)
        if changed:
            print(f"rep {rep + 1}: site.yml reported changed={changed}; the host was not converged", file=sys.stderr)
            return 1
        site_times.append(s)
        manual_times.append(m)
        print(f"rep {rep + 1}: site.yml {s:6.2f} s (changed=0)   manual {m:6.2f} s", flush=True)

    s_med, m_med = statistics.median(site_times), statistics.median(manual_times)
    print()
    print("| what | median (s) | ratio |")
    print("|---|---:|---:|")
    print(f"| manual runbook re-run (compose up x2, bash applier, curl) | {m_med:.2f} | 1.00x |")
    print(f"| site.yml no-change re-run (changed=0) | {s_med:.2f} | {s_med / m_med:.2f}x |")
    print(f"\n{args.reps} reps, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
