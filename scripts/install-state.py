#!/usr/bin/env python3
"""Fingerprint the PayCraft install on this machine, and say whether it changed.

    scripts/install-state.py record FILE   write the fingerprint (JSON) to FILE
    scripts/install-state.py check FILE    compare; exit 1 naming every difference

The test command records before the tests and checks after them: no test may
touch the controller's own install (the demo's or an operator's). The
fingerprint holds, on the engine that DOCKER_HOST (or --docker-host) names:
the containers of compose project `selfhost` and every `paycraft_*` container
(id, image, state, start time), the volume `selfhost_paycraft-db` and the
network `selfhost_default` (existence, creation time); on this filesystem:
/opt/paycraft and /etc/paycraft (existence), the sha256 of
/etc/paycraft/paycraft.env and the HEAD commit of /opt/paycraft/src.
Nothing here changes anything; secrets are never read into the output (the
env file is only hashed).

Exit status: 0 unchanged (or recorded), 1 changed, 2 cannot record/check.
Standard library only, Python 3.9+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

FORMAT = 1
CONTAINER_PREFIX = "paycraft_"


class Failure(Exception):
    """Cannot fingerprint: printed as one line, exit 2."""


def docker(args: list, docker_host: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
        env.pop("DOCKER_CONTEXT", None)
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=120)
    except FileNotFoundError:
        return subprocess.CompletedProcess(["docker", *args], 127, "", "docker: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(["docker", *args], 124, "", "docker: no answer within 120 s")


def inspect(kind: str, names: list, docker_host: str | None) -> list:
    if not names:
        return []
    proc = docker([kind, "inspect", *names], docker_host)
    # inspect exits 1 when one name vanished in between; it still prints the others
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError as exc:
        raise Failure(f"docker {kind} inspect gave no JSON: {proc.stderr.strip()}") from exc


def engine_state(project: str, volume: str, network: str, docker_host: str | None) -> dict:
    version = docker(["version", "--format", "{{.Server.Version}}"], docker_host)
    if version.returncode != 0:
        return {"reachable": False, "error": (version.stderr.strip().splitlines() or ["no answer"])[-1]}
    ids = set()
    for flt in (f"label=com.docker.compose.project={project}", f"name={CONTAINER_PREFIX}"):
        proc = docker(["ps", "-a", "-q", "--no-trunc", "--filter", flt], docker_host)
        if proc.returncode != 0:
            raise Failure(f"docker ps --filter {flt} failed: {proc.stderr.strip()}")
        ids.update(proc.stdout.split())
    containers = {}
    for c in inspect("container", sorted(ids), docker_host):
        name = c.get("Name", "").lstrip("/")
        labels = (c.get("Config") or {}).get("Labels") or {}
        # the name filter matches anywhere in the name: keep paycraft_* and the project's own
        if not name.startswith(CONTAINER_PREFIX) and labels.get("com.docker.compose.project") != project:
            continue
        state = c.get("State") or {}
        containers[name] = {
            "id": c.get("Id", ""),
            "image": (c.get("Config") or {}).get("Image", ""),
            "image_id": c.get("Image", ""),
            "status": state.get("Status", ""),
            "started_at": state.get("StartedAt", ""),
            "restart_count": c.get("RestartCount", 0),
            "project": labels.get("com.docker.compose.project", ""),
        }
    vols = inspect("volume", [volume], docker_host)
    nets = inspect("network", [network], docker_host)
    return {
        "reachable": True,
        "server_version": version.stdout.strip(),
        "containers": containers,
        "volume": {"name": volume, "exists": bool(vols), "created": vols[0].get("CreatedAt", "") if vols else ""},
        "network": {"name": network, "exists": bool(nets), "id": nets[0].get("Id", "") if nets else ""},
    }


def sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror} (run as root, as the test command does)") from exc


def git_head(path: str) -> str | None:
    if not os.path.exists(os.path.join(path, ".git")):
        return None
    try:
        proc = subprocess.run(["git", "-c", f"safe.directory={path}", "-C", path, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "unknown (git did not answer)"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (no commit)"


def fingerprint(opts) -> dict:
    env_file = os.path.join(opts.config_dir, "paycraft.env")
    src = os.path.join(opts.root_dir, "src")
    return {
        "format": FORMAT,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "docker_host": opts.docker_host or os.environ.get("DOCKER_HOST", "") or "(default)",
        "project": opts.project,
        "engine": engine_state(opts.project, opts.volume, opts.network, opts.docker_host),
        "files": {
            "root_dir": {"path": opts.root_dir, "exists": os.path.isdir(opts.root_dir)},
            "config_dir": {"path": opts.config_dir, "exists": os.path.isdir(opts.config_dir)},
            "env_file": {"path": env_file, "sha256": sha256(env_file)},
            "src": {"path": src, "head": git_head(src)},
        },
    }


def short(value: str) -> str:
    value = value.split(":", 1)[1] if value.startswith("sha256:") else value
    return value[:12] if len(value) > 12 else value


def differences(old: dict, new: dict) -> list:
    diffs = []
    oe, ne = old["engine"], new["engine"]
    if oe.get("reachable") and not ne.get("reachable"):
        diffs.append(f"docker engine at {new['docker_host']} no longer answers ({ne.get('error', '')})")
    elif not oe.get("reachable") and ne.get("reachable"):
        diffs.append(f"docker engine at {new['docker_host']} answers now, it did not when recorded")
    if oe.get("reachable") and ne.get("reachable"):
        oc, nc = oe["containers"], ne["containers"]
        for name in sorted(set(oc) | set(nc)):
            a, b = oc.get(name), nc.get(name)
            if b is None:
                diffs.append(f"container {name} removed (was {short(a['id'])}, {a['status']})")
                continue
            if a is None:
                diffs.append(f"container {name} added ({short(b['id'])}, {b['image']}, {b['status']})")
                continue
            if a["id"] != b["id"]:
                diffs.append(f"container {name}: id {short(a['id'])} -> {short(b['id'])} (recreated)")
                continue
            if a["image_id"] != b["image_id"]:
                diffs.append(f"container {name}: image {a['image']} {short(a['image_id'])} -> "
                             f"{b['image']} {short(b['image_id'])}")
            if a["status"] != b["status"]:
                diffs.append(f"container {name}: state {a['status']} -> {b['status']}")
            elif a["started_at"] != b["started_at"] and a["restart_count"] == b["restart_count"]:
                # a restart policy bumps RestartCount; a `docker restart`/`stop`+`start` does not
                diffs.append(f"container {name}: restarted (started {a['started_at']} -> {b['started_at']})")
        for key in ("volume", "network"):
            a, b = oe[key], ne[key]
            if a["exists"] and not b["exists"]:
                diffs.append(f"{key} {a['name']} removed")
            elif b["exists"] and not a["exists"]:
                diffs.append(f"{key} {b['name']} created")
            elif a["exists"] and (a.get("created"), a.get("id")) != (b.get("created"), b.get("id")):
                what = "created" if key == "volume" else "id"
                diffs.append(f"{key} {a['name']}: recreated ({what} {short(a.get(what, ''))} -> "
                             f"{short(b.get(what, ''))})")
    of, nf = old["files"], new["files"]
    for key in ("root_dir", "config_dir"):
        if of[key]["exists"] != nf[key]["exists"]:
            diffs.append(f"{nf[key]['path']} {'created' if nf[key]['exists'] else 'removed'}")
    a, b = of["env_file"]["sha256"], nf["env_file"]["sha256"]
    if a != b:
        path = nf["env_file"]["path"]
        if a is None:
            diffs.append(f"{path} created")
        elif b is None:
            diffs.append(f"{path} removed")
        else:
            diffs.append(f"{path} changed (sha256 {a[:12]} -> {b[:12]})")
    a, b = of["src"]["head"], nf["src"]["head"]
    if a != b:
        diffs.append(f"{nf['src']['path']}: HEAD {short(a or 'none')} -> {short(b or 'none')}")
    return diffs


def summary(fp: dict) -> str:
    parts = []
    engine = fp["engine"]
    if engine.get("reachable"):
        names = sorted(engine["containers"])
        parts.append(f"{len(names)} container(s){' (' + ', '.join(names) + ')' if names else ''}")
        for key in ("volume", "network"):
            parts.append(f"{key} {engine[key]['name']} {'present' if engine[key]['exists'] else 'absent'}")
    else:
        parts.append(f"docker engine at {fp['docker_host']} not answering")
    files = fp["files"]
    parts.append(f"{files['env_file']['path']} {'present' if files['env_file']['sha256'] else 'absent'}")
    head = files["src"]["head"]
    parts.append(f"{files['src']['path']} {'at ' + short(head) if head else 'not a checkout'}")
    return "; ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("file", help="the fingerprint (JSON) to write or compare with")
    parser.add_argument("--docker-host", default=None,
                        help="the engine to look at (default: DOCKER_HOST, else the local engine)")
    parser.add_argument("--project", default="selfhost", help="the compose project (default: selfhost)")
    parser.add_argument("--volume", default=None, help="the database volume (default: PROJECT_paycraft-db)")
    parser.add_argument("--network", default=None, help="the project network (default: PROJECT_default)")
    parser.add_argument("--config-dir", default="/etc/paycraft", help="default: /etc/paycraft")
    parser.add_argument("--root-dir", default="/opt/paycraft", help="default: /opt/paycraft")
    opts = parser.parse_args(argv)
    opts.volume = opts.volume or f"{opts.project}_paycraft-db"
    opts.network = opts.network or f"{opts.project}_default"
    try:
        current = fingerprint(opts)
    except Failure as exc:
        print(f"install-state: {exc}", file=sys.stderr)
        return 2
    if opts.action == "record":
        tmp = f"{opts.file}.tmp"
        with open(tmp, "w") as fh:
            json.dump(current, fh, indent=1, sort_keys=True)
        os.replace(tmp, opts.file)
        print(f"controller install recorded: {summary(current)}")
        return 0
    try:
        with open(opts.file) as fh:
            recorded = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"install-state: cannot read the fingerprint {opts.file}: {exc} "
              f"(run: scripts/install-state.py record {opts.file})", file=sys.stderr)
        return 2
    if recorded.get("format") != FORMAT:
        print(f"install-state: {opts.file} has format {recorded.get('format')}, expected {FORMAT}: record it again",
              file=sys.stderr)
        return 2
    diffs = differences(recorded, current)
    if diffs:
        print(f"controller install CHANGED since {recorded.get('recorded_at', '?')} "
              f"({len(diffs)} difference(s)):")
        for line in diffs:
            print(line)
        return 1
    print(f"controller install unchanged: {summary(current)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
