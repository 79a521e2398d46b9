# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is this host still exactly as the last successful site.yml run left it?

site.yml re-runs cost many module executions even when nothing is to be done.
This library reads, in one pass, everything a full run would converge -- the
checkout, the files the roles manage outside git's view (the env file, the
``.env`` link in the checkout, the compose override, the licence file), every
container's compose config hash, environment, image and health, and the
migration ledger's content (versions, checksums, when each was applied, and the
database's system identifier) -- and compares it with the
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
from ansible_collections.paycraft.selfhost.plugins.module_utils.migrate import (
    DEFAULT_LEDGER,
    MigrateError,
    migration_file_names,
    migration_version,
    parse_ledger_name,
)

# 2: managed files outside git's view, the ledger's content, containers' ids and environment
STATE_VERSION = 2

# what each part of the fingerprint is, for the reasons of a full run
PART_NAMES = {
    "checkout": "the checkout",
    "files": "the managed files",
    "stack": "the containers",
    "migrations": "the migration files",
    "ledger": "the migration ledger",
}


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


def link_fingerprint(path: str) -> dict | None:
    """What ``path`` itself is (not what it points at): a link and its target, or a file (None when absent)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return {"link": os.readlink(path)}
    return {"link": None, **(file_fingerprint(path) or {})}


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
    """version -> sha256 of every migration file, the same files as the engine applies (None when unreadable)."""
    try:
        names = migration_file_names(os.listdir(migrations_dir))
    except OSError:
        return None
    out = {}
    for name in names:
        try:
            with open(os.path.join(migrations_dir, name), "rb") as fh:
                out[migration_version(name)] = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return None
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ledger_fingerprint(conn_params: dict, ledger: str = DEFAULT_LEDGER) -> dict | str:
    """The ledger's content, or an error string.

    ``{"rows": {version: {"checksum", "applied_at"}}, "system_identifier": ...}``. The rows of a ledger
    written by the runbook's bash script (no checksum column) read with checksum None. The system
    identifier changes when the database is initialised again (a reset volume), even when the same
    migrations are then applied by hand.
    """
    try:
        schema, table = parse_ledger_name(ledger)
    except MigrateError as exc:
        return str(exc)
    qualified = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
    try:
        conn = _postgres.connect(conn_params, "paycraft_converged", connect_timeout=5)
    except _postgres.PostgresError as exc:
        return f"cannot connect to Postgres: {exc.reason or exc.message}"
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (f"{schema}.{table}",),
            )
            columns = {r[0] for r in cur.fetchall()}
            if not columns:
                return f"cannot read the ledger: {schema}.{table} does not exist"
            checksum = "checksum" if "checksum" in columns else "NULL"
            cur.execute(f"SELECT version, {checksum}, applied_at FROM {qualified}")
            rows = {
                v: {"checksum": c, "applied_at": a.isoformat() if hasattr(a, "isoformat") else a}
                for v, c, a in cur.fetchall()
            }
            try:
                cur.execute("SELECT system_identifier::text FROM pg_control_system()")
                system_identifier = cur.fetchone()[0]
            except Exception:
                system_identifier = None  # not allowed for this user: the rows still tell a reset
        return {"rows": rows, "system_identifier": system_identifier}
    except Exception as exc:
        return f"cannot read the ledger: {_first_line(exc)}"
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
            env = sorted(c.get("Config", {}).get("Env") or [])
            containers[service] = {
                "id": c.get("Id", ""),
                # a digest only: the environment holds the secrets
                "env": hashlib.sha256("\0".join(env).encode()).hexdigest(),
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


def managed_files(params: dict) -> dict[str, str]:
    """The files the roles manage outside git's view: part name -> path (empty paths are not managed)."""
    return {
        key: params[key]
        for key in ("env_file", "override_file", "env_link", "license_file")
        if params.get(key)
    }


def fill_files(fill_dir: str) -> list[str]:
    """Every file under ``fill_dir`` (the gaps the collection fills), sorted; none when it is absent."""
    if not fill_dir or not os.path.isdir(fill_dir):
        return []
    out = []
    for root, dirs, names in os.walk(fill_dir):
        dirs.sort()
        out.extend(os.path.join(root, n) for n in sorted(names))
    return out


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
        f_ledger = pool.submit(ledger_fingerprint, params["db"], params.get("ledger_table") or DEFAULT_LEDGER)
        f_files = pool.submit(migrations_fingerprint, params["migrations_dir"])

    live["checkout"] = f_checkout.result()
    if not live["checkout"]["at_version"]:
        problems.append(f"the checkout {params['checkout']} is not at {params['version']}")
    if not live["checkout"]["clean"]:
        problems.append(f"tracked files of {params['checkout']} changed")

    # managed files outside git's view: the link is looked at itself, the others through links
    files: dict = {}
    for key, path in managed_files(params).items():
        files[key] = link_fingerprint(path) if key == "env_link" else file_fingerprint(path)
        if files[key] is None:
            problems.append(f"{path} is missing")
    # the collection's own files for the release's gaps (kong file, router): each file by content
    for path in fill_files(params.get("fill_dir") or ""):
        files[path] = file_fingerprint(path)
    if params.get("env_link") and files.get("env_link") is not None:
        if files["env_link"].get("link") != params["env_file"]:
            problems.append(f"{params['env_link']} is not a link to {params['env_file']}")
    live["files"] = files

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

    migrations = f_files.result()
    ledger = f_ledger.result()
    live["migrations"] = migrations
    live["ledger"] = ledger if isinstance(ledger, dict) else None
    if migrations is None:
        problems.append(f"cannot read {params['migrations_dir']}")
    elif isinstance(ledger, str):
        problems.append(ledger)
    else:
        rows = ledger["rows"]
        pending = sorted(set(migrations) - set(rows))
        edited = sorted(v for v, r in rows.items()
                        if v in migrations and r["checksum"] is not None and r["checksum"] != migrations[v])
        unchecked = sorted(v for v, r in rows.items() if v in migrations and r["checksum"] is None)
        if pending:
            problems.append(f"{len(pending)} migration(s) not applied ({pending[0]}...)")
        if edited:
            problems.append(f"applied migration(s) edited: {', '.join(edited)}")
        if unchecked:
            problems.append(f"{len(unchecked)} ledger row(s) without a checksum (applied by hand?): {unchecked[0]}...")

    problems.extend(probe.problems)
    return live, problems


def drift(old: dict, new: dict) -> list[str]:
    """What differs between the recorded and the live fingerprint, one reason per part."""
    out = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        name = PART_NAMES.get(part, part)
        if part == "files" and isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    label = key if "/" in key else key.replace("_", " ")  # a path, or a part's name
                    out.append(f"{label} changed since the last successful run")
        elif part == "ledger" and isinstance(a, dict) and isinstance(b, dict):
            if a.get("system_identifier") != b.get("system_identifier"):
                out.append("the database was initialised again since the last successful run (a reset?)")
            if a.get("rows") != b.get("rows"):
                out.append("the migration ledger changed since the last successful run")
        elif part == "stack" and isinstance(a, dict) and isinstance(b, dict):
            ca, cb = a.get("containers") or {}, b.get("containers") or {}
            changed = sorted(s for s in set(ca) | set(cb) if ca.get(s) != cb.get(s))
            if changed:
                out.append(f"container(s) {', '.join(changed)} changed since the last successful run")
            if a.get("wanted") != b.get("wanted") or a.get("image_ids") != b.get("image_ids"):
                out.append("the compose configuration or the images changed since the last successful run")
        else:
            out.append(f"{name} changed since the last successful run")
    return out or (["the host changed since the last successful run"] if old != new else [])


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
        elif state.get("inputs") != params["inputs"]:
            reasons.append("the inventory variables or the collection's code changed")
        else:
            # what differs from the record says why, even where a live problem already forces a full run
            # (an edited override also changes the configuration compose wants for a service)
            reasons.extend(r for r in drift(state.get("live") or {}, live) if r not in reasons)
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
