# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is this host still exactly as the last successful site.yml run left it?

site.yml re-runs cost many module executions even when nothing is to be done.
This library reads, in one pass, everything a full run would converge -- the
checkout, the env file, the compose override, every container's compose config
hash, image and health, and the migration ledger -- and compares it with the
fingerprint recorded at the end of the last successful full run, together with
a digest of the run's inputs (the inventory's ``paycraft_*`` variables and the
collection's code). When all of it is unchanged, nothing a full run does would
change anything, so site.yml skips to the smoke test. Any difference, or
anything it cannot read, means "run everything", with the reasons.

Pure Python (psycopg2 for the ledger); no Ansible import.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres

STATE_VERSION = 1


class Probe:
    """Collects the live fingerprint and what could not be read."""

    def __init__(self, docker: str = "docker", git: str = "git", timeout: int = 30, runner=None):
        self.docker = docker
        self.git = git
        self.timeout = timeout
        self.runner = runner  # module_utils/_cli.py: runner(argv, cwd, timeout) -> (rc, stdout, stderr)
        self.problems: list[str] = []

    def run(self, argv: list[str], cwd: str | None = None) -> str | None:
        if self.runner is None:
            raise RuntimeError("converged.Probe needs a command runner (module_utils/_cli.module_runner)")
        rc, out, err = self.runner(argv, cwd=cwd, timeout=self.timeout)
        if rc in (124, 126, 127):
            self.problems.append(f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: {err.strip()[:200]}")
            return None
        if rc != 0:
            self.problems.append(f"{' '.join(argv[:3])} failed: {(err or out).strip()[:200]}")
            return None
        return out


def file_fingerprint(path: str) -> dict | None:
    """sha256, mode and owner of a file (None when absent)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None
    return {"sha256": digest, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid}


def checkout_fingerprint(probe: Probe, checkout: str, version: str) -> dict:
    head = probe.run([probe.git, "-C", checkout, "rev-parse", "HEAD"])
    wanted = probe.run([probe.git, "-C", checkout, "rev-parse", "--verify", "--quiet", f"{version}^{{commit}}"])
    dirty = probe.run([probe.git, "-C", checkout, "status", "--porcelain", "--untracked-files=no"])
    return {
        "head": (head or "").strip(),
        "at_version": bool(head) and (head or "").strip() == (wanted or "").strip(),
        "clean": dirty is not None and dirty.strip() == "",
    }


def migrations_fingerprint(migrations_dir: str) -> dict[str, str] | None:
    """version -> sha256 of every *.sql file (None when the directory cannot be read)."""
    try:
        names = sorted(n for n in os.listdir(migrations_dir) if n.endswith(".sql"))
    except OSError:
        return None
    out = {}
    for name in names:
        with open(os.path.join(migrations_dir, name), "rb") as fh:
            out[name[: -len(".sql")]] = hashlib.sha256(fh.read()).hexdigest()
    return out


def ledger_fingerprint(conn_params: dict, ledger: str = "public._paycraft_migrations") -> dict[str, str | None] | str:
    """version -> recorded checksum, or an error string."""
    try:
        conn = _postgres.connect(conn_params, "paycraft_converged", connect_timeout=5)
    except _postgres.PostgresError as exc:
        return f"cannot connect to Postgres: {exc.reason or exc.message}"
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT version, checksum FROM {ledger}")
            return {v: c for v, c in cur.fetchall()}
    except Exception as exc:
        return f"cannot read the ledger: {str(exc).strip().splitlines()[0]}"
    finally:
        conn.close()


def stack_fingerprint(probe: Probe, project: str, project_dir: str, files: list[str], env_file: str) -> dict | None:
    """Per service: the config hash compose wants, and the container's hash, image id, state."""
    base = [probe.docker, "compose", "-p", project, "--project-directory", project_dir, "--env-file", env_file]
    for f in files:
        base += ["-f", f]
    wanted_raw = probe.run([*base, "config", "--hash", "*"], cwd=project_dir)
    if wanted_raw is None:
        return None
    wanted = dict(line.split(None, 1) for line in wanted_raw.strip().splitlines() if " " in line)
    ids = probe.run([probe.docker, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"])
    if ids is None:
        return None
    containers = {}
    if ids.split():
        raw = probe.run([probe.docker, "inspect", *ids.split()])
        if raw is None:
            return None
        for c in json.loads(raw):
            labels = c.get("Config", {}).get("Labels") or {}
            service = labels.get("com.docker.compose.service", "")
            health = (c.get("State", {}).get("Health") or {}).get("Status")
            containers[service] = {
                "config_hash": labels.get("com.docker.compose.config-hash", ""),
                "image_id": c.get("Image", ""),
                "image": c.get("Config", {}).get("Image", ""),
                "running": bool(c.get("State", {}).get("Running")),
                "health": health,
            }
    images = sorted({c["image"] for c in containers.values() if c["image"]})
    image_ids = {}
    if images:
        raw = probe.run([probe.docker, "image", "inspect", "--format", "{{.Id}}", *images])
        if raw is None:
            return None
        image_ids = dict(zip(images, raw.split()))  # Python 3.9: no zip(strict=)
    return {"wanted": wanted, "containers": containers, "image_ids": image_ids}


def live_fingerprint(params: dict, probe: Probe | None = None) -> tuple[dict, list[str]]:
    """Everything a full run converges, read now; and the problems that make it "not converged"."""
    probe = probe or Probe(docker=params.get("docker_cli") or "docker", runner=params.get("runner"))
    problems: list[str] = []
    live: dict = {}

    # the slow reads (compose, docker, git, Postgres) run side by side
    with ThreadPoolExecutor(max_workers=4) as pool:
        f_checkout = pool.submit(checkout_fingerprint, probe, params["checkout"], params["version"])
        f_stack = pool.submit(stack_fingerprint, probe, params["compose_project"], params["project_dir"],
                              params["compose_files"], params["env_file"])
        f_ledger = pool.submit(ledger_fingerprint, params["db"])
        f_files = pool.submit(migrations_fingerprint, params["migrations_dir"])

    live["checkout"] = f_checkout.result()
    if not live["checkout"]["at_version"]:
        problems.append(f"the checkout {params['checkout']} is not at {params['version']}")
    if not live["checkout"]["clean"]:
        problems.append(f"tracked files of {params['checkout']} changed")

    for key in ("env_file", "override_file"):
        live[key] = file_fingerprint(params[key])
        if live[key] is None:
            problems.append(f"{params[key]} is missing")

    stack = f_stack.result()
    live["stack"] = stack
    if stack is not None:
        for service, wanted_hash in sorted(stack["wanted"].items()):
            c = stack["containers"].get(service)
            if c is None:
                problems.append(f"service {service} has no container")
            elif c["config_hash"] != wanted_hash:
                problems.append(f"service {service}: its configuration changed since it was created")
            elif not c["running"]:
                problems.append(f"service {service} is not running")
            elif c["health"] not in (None, "healthy"):
                problems.append(f"service {service} is {c['health']}")
            elif stack["image_ids"].get(c["image"]) != c["image_id"]:
                problems.append(f"service {service}: image {c['image']} changed since the container was created")

    files = f_files.result()
    ledger = f_ledger.result()
    live["migrations"] = files
    if files is None:
        problems.append(f"cannot read {params['migrations_dir']}")
    elif isinstance(ledger, str):
        problems.append(ledger)
    else:
        pending = sorted(set(files) - set(ledger))
        edited = sorted(v for v, c in ledger.items() if v in files and c is not None and c != files[v])
        if pending:
            problems.append(f"{len(pending)} migration(s) not applied ({pending[0]}...)")
        if edited:
            problems.append(f"applied migration(s) edited: {', '.join(edited)}")

    problems.extend(probe.problems)
    return live, problems


def check(params: dict, state: dict | None, probe: Probe | None = None) -> dict:
    """Compare with the recorded state.

    Returns ``converged``, ``reasons`` (why a full run is needed), ``problems`` (what is wrong
    on the host now, a subset of the reasons) and ``live`` (the fingerprint read now).
    """
    live, problems = live_fingerprint(params, probe)
    reasons = list(problems)
    if state is None:
        reasons.insert(0, "no record of an earlier successful run")
    else:
        if state.get("version") != STATE_VERSION:
            reasons.append("the record was written by another version of the collection")
        if state.get("inputs") != params["inputs"]:
            reasons.append("the inventory variables or the collection's code changed")
        if not problems and state.get("live") != live:
            reasons.append("the host changed since the last successful run")
    return {"converged": not reasons, "reasons": reasons, "problems": problems, "live": live}


def read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def render_state(inputs: str, live: dict) -> str:
    return json.dumps({"version": STATE_VERSION, "inputs": inputs, "live": live}, indent=1, sort_keys=True) + "\n"


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def write_state(path: str, content: str) -> bool:
    """Atomically write the record (0600); False when it was already identical."""
    if read_text(path) == content:
        return False
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    os.replace(tmp, path)
    return True
