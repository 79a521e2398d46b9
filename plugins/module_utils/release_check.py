# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this PayCraft release run as it is, and which of its gaps does the collection fill?

A release is read as a tree: the target tag exported with ``git archive`` into a temporary
directory (``extract_release``), before the checkout moves, so that site.yml and upgrade.yml
refuse a broken release while the host is still untouched. ``check_release`` then looks at

1. the migrations directory: it resolves and holds ``*.sql`` files (a dangling
   ``server/migrations`` symlink, as in PayCraft's head, is a finding, never "0 applied");
2. every path the compose file mounts (relative bind sources, ``env_file``, ``build``) and every
   container path a service starts or reads (``command``/``entrypoint`` arguments,
   environment values such as ``KONG_DECLARATIVE_CONFIG``) mapped through its bind mounts into
   the release;
3. every route of Kong's declarative file: its service's host is a compose service that will run
   (the gap-filled ``rest`` counts) and, where the port a service listens on is known, the port;
4. ``docker compose config`` on the compose file with the env file the config role renders
   (done by the module, which has docker; see ``validation_env``).

Gaps the stack role fills (each behind a variable: ``auto`` fills when the release lacks it):
``rest`` (PostgREST, with Kong's ``rest-v1`` route pointed at it) and ``main`` (the edge
runtime's router function).

Pure Python, no Ansible and no YAML import (the managed hosts may lack PyYAML: the controller
parses the compose and Kong files and passes them as dicts).
"""

from __future__ import annotations

import copy
import os
import posixpath
import shlex
import shutil
from urllib.parse import urlsplit

from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import render_line
from ansible_collections.paycraft.selfhost.plugins.module_utils.migrate import describe_path, migration_file_names

FILL_VARIABLES = {"rest": "paycraft_stack_fill_rest", "main": "paycraft_stack_fill_main"}
# The port each PayCraft service listens on inside the compose network (runbook, images/README).
KNOWN_PORTS = {
    "db": {5432},
    "auth": {9999},
    "rest": {3000},
    "kong": {8000, 8443},
    "edge-runtime": {9000},
    "dashboard": {3000},
}
REST_SERVICE = "rest"
REST_URL = "http://rest:3000/"
REST_ROUTE_PATH = "/rest/v1/"
REST_ROUTE_NAME = "rest-v1"
# Where the stack role mounts the collection's router in the edge runtime (outside the release's
# read-only functions mount: a mount point cannot be created inside a read-only bind mount).
MAIN_MOUNT = "/home/deno/paycraft-main"
MAIN_FLAG = "--main-service"
PLACEHOLDER = "paycraft-validation-placeholder"


class ReleaseError(Exception):
    """The release could not be read (git failed, the tag is missing)."""


class Finding:
    """One problem of the release: the file it is in, what is wrong and the fix."""

    def __init__(self, file: str, problem: str, fix: str) -> None:
        self.file = file
        self.problem = problem
        self.fix = fix

    def line(self) -> str:
        return f"{self.file}: {self.problem}. Fix: {self.fix}"

    def as_dict(self) -> dict:
        return {"file": self.file, "problem": self.problem, "fix": self.fix, "line": self.line()}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Finding({self.line()!r})"


def normalize_fill(value) -> str:
    """``auto``/``true``/``false`` from what an inventory may hold (yes, on, 1, booleans)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "yes", "on", "1"):
        return "true"
    if text in ("false", "no", "off", "0", ""):
        return "false"
    raise ValueError(f"{value!r} is not auto, true or false")


def fill_wanted(setting, present: bool) -> bool:
    """Whether a gap is filled: ``auto`` when the release lacks it, ``true`` always, ``false`` never."""
    mode = normalize_fill(setting)
    return mode == "true" or (mode == "auto" and not present)


# --- reading the release ---------------------------------------------------------------------------


def _git(run, args: list, timeout: float = 300):
    return run(["git", *args], timeout=timeout)


def extract_release(run, repo: str, version: str, dest: str, checkout: str | None = None) -> str:
    """Export ``version`` of ``repo`` into the empty directory ``dest``; returns its commit id.

    ``run`` is a command runner (module_utils/_cli.py). The objects come from ``checkout`` (the existing
    clone) when it already has ``version``, otherwise from ``repo`` into a scratch repository inside
    ``dest`` (removed afterwards). Nothing of ``checkout`` changes: no fetch, no ref, no worktree.
    """
    source = None
    if checkout and os.path.isdir(os.path.join(checkout, ".git")):
        rc, out, _ = _git(run, ["-C", checkout, "rev-parse", "--verify", "--quiet", f"{version}^{{commit}}"])
        if rc == 0:
            source = (checkout, out.strip())
    scratch = os.path.join(dest, ".paycraft-release-git")
    if source is None:
        rc, _, err = _git(run, ["init", "-q", "--bare", scratch])
        if rc != 0:
            raise ReleaseError(f"git init {scratch} failed: {err.strip()}")
        errors = []
        for refspec in (f"+refs/tags/{version}:refs/tags/{version}", version):
            rc, _, err = _git(run, ["-C", scratch, "fetch", "-q", "--no-tags", "--depth=1", "--", repo, refspec])
            if rc != 0:  # a commit id, or a server without shallow fetch
                rc, _, err = _git(run, ["-C", scratch, "fetch", "-q", "--no-tags", "--", repo, refspec])
            if rc == 0:
                break
            errors.append(err.strip())
        else:
            raise ReleaseError(f"cannot fetch {version} from {repo}: {errors[-1]}")
        rc, out, _ = _git(run, ["-C", scratch, "rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"])
        if rc != 0:
            raise ReleaseError(f"{version} of {repo} is not a commit")
        source = (scratch, out.strip())
    repo_dir, commit = source
    tarball = os.path.join(dest, ".paycraft-release.tar")
    rc, _, err = _git(run, ["-C", repo_dir, "archive", "--format=tar", f"--output={tarball}", commit])
    if rc != 0:
        raise ReleaseError(f"git archive {version} failed: {err.strip()}")
    rc, _, err = run(["tar", "-x", "-C", dest, "-f", tarball], timeout=300)
    if rc != 0:
        raise ReleaseError(f"unpacking {version} failed: {err.strip()}")
    os.unlink(tarball)
    if os.path.isdir(scratch):
        shutil.rmtree(scratch, ignore_errors=True)
    return commit


def read_text(path: str) -> str | None:
    """The text of a release file, ``None`` when it is missing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


# --- the compose model ----------------------------------------------------------------------------------


def _is_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def bind_mounts(service: dict) -> list:
    """``(source, target)`` of a service's bind mounts (short and long syntax)."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and _is_path(parts[0]):
                out.append((parts[0], parts[1]))
        elif isinstance(volume, dict) and volume.get("type", "bind") == "bind":
            source, target = volume.get("source"), volume.get("target")
            if isinstance(source, str) and isinstance(target, str) and _is_path(source):
                out.append((source, target))
    return out


def command_list(command) -> list:
    """A compose ``command``/``entrypoint`` as an argument list."""
    if command is None:
        return []
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError:
            return command.split()
    return [str(c) for c in command]


def main_service_path(command) -> str | None:
    """The value of ``--main-service`` in an edge runtime command, if any."""
    args = command_list(command)
    for i, arg in enumerate(args):
        if arg == MAIN_FLAG and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(MAIN_FLAG + "="):
            return arg.split("=", 1)[1]
    return None


def main_service_command(command, path: str = MAIN_MOUNT) -> list:
    """``command`` with its ``--main-service`` pointed at ``path`` (the collection's router)."""
    args = command_list(command)
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == MAIN_FLAG and i + 1 < len(args):
            out += [MAIN_FLAG, path]
            skip = True
        elif arg.startswith(MAIN_FLAG + "="):
            out.append(f"{MAIN_FLAG}={path}")
        else:
            out.append(arg)
    return out


def _environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def listen_ports(name: str, service: dict) -> set:
    """Ports a service listens on inside the compose network, as far as they are known."""
    ports = set(KNOWN_PORTS.get(name, set()))
    for entry in (service.get("ports") or []) + (service.get("expose") or []):
        if isinstance(entry, dict):
            target = entry.get("target")
        else:
            target = str(entry).split("/")[0].rsplit(":", 1)[-1]
        try:
            ports.add(int(target))
        except (TypeError, ValueError):
            continue
    return ports


class Tree:
    """Paths of a release tree, and how the compose file's paths map into it."""

    def __init__(self, root: str, selfhost_rel: str, source_dest: str) -> None:
        self.root = os.path.abspath(root)
        self.selfhost_rel = selfhost_rel.strip("/")
        self.source_dest = source_dest.rstrip("/")

    def selfhost(self) -> str:
        return os.path.join(self.root, self.selfhost_rel)

    def rel(self, host_path: str) -> str | None:
        """A compose source (relative to the selfhost dir) or a checkout path, relative to the tree."""
        if host_path.startswith("~"):
            return None
        if host_path.startswith("/"):
            if host_path == self.source_dest or host_path.startswith(self.source_dest + "/"):
                return posixpath.normpath(host_path[len(self.source_dest) + 1:] or ".")
            return None
        rel = posixpath.normpath(posixpath.join(self.selfhost_rel, host_path))
        return None if rel.startswith("..") else rel

    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.root, rel))

    def describe(self, rel: str) -> str:
        path = os.path.join(self.root, rel)
        if os.path.islink(path):
            return f"a symlink to {os.readlink(path)}, which the release does not contain"
        return "missing from the release"


def _map_container_path(binds: list, container_path: str):
    """The bind source and the path below it for a container path under one of ``binds``."""
    best = None
    for source, target in binds:
        target = target.rstrip("/") or "/"
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    if best is None:
        return None
    source, target = best
    below = container_path[len(target):].lstrip("/")
    return posixpath.join(source, below) if below else source


# --- the checks -------------------------------------------------------------------------------------------


def rest_service_entry(kong: dict):
    """Kong's service whose route serves ``/rest/v1/`` (or named ``rest-v1``)."""
    for service in (kong or {}).get("services") or []:
        if not isinstance(service, dict):
            continue
        paths = [p for r in service.get("routes") or [] if isinstance(r, dict) for p in r.get("paths") or []]
        if REST_ROUTE_PATH in paths or service.get("name") == REST_ROUTE_NAME:
            return service
    return None


def kong_with_rest(kong: dict, url: str = REST_URL) -> dict:
    """A copy of Kong's declarative config with its ``/rest/v1/`` service pointed at ``url``."""
    out = copy.deepcopy(kong)
    service = rest_service_entry(out)
    if service is not None:
        for key in ("host", "port", "protocol", "path"):
            service.pop(key, None)
        service["url"] = url
    return out


def plan_gaps(tree: Tree, compose: dict, fill_rest, fill_main) -> dict:
    """Which gaps the release has and which the collection fills, keyed ``rest`` and ``main``."""
    services = (compose or {}).get("services") or {}
    rest_present = REST_SERVICE in services
    main = {"present": True, "service": None, "path": None, "release_path": None, "command": None,
            "mount": MAIN_MOUNT}
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        path = main_service_path(service.get("command"))
        if path is None:
            continue
        source = _map_container_path(bind_mounts(service), path)
        rel = tree.rel(source) if source else None
        main.update(service=name, path=path, release_path=rel,
                    present=True if rel is None else tree.exists(rel),
                    command=main_service_command(service.get("command")))
        break
    gaps = {
        "rest": {"present": rest_present, "setting": normalize_fill(fill_rest),
                 "fill": fill_wanted(fill_rest, rest_present), "variable": FILL_VARIABLES["rest"]},
        "main": dict(main, setting=normalize_fill(fill_main), variable=FILL_VARIABLES["main"]),
    }
    # without an edge runtime command there is nothing to route
    gaps["main"]["fill"] = main["service"] is not None and fill_wanted(fill_main, main["present"])
    return gaps


def check_migrations(tree: Tree, migrations_dir: str) -> list:
    """The migrations directory resolves and holds migration files."""
    fix = ("pin paycraft_version to a release that ships its migrations, or point paycraft_migrations_dir at "
           "them (-e paycraft_migrations_dir=/path/to/migrations)")
    rel = tree.rel(migrations_dir)
    if rel is not None:
        path, label = os.path.join(tree.root, rel), rel
        if not os.path.exists(path):
            return [Finding(label, tree.describe(rel), fix)]
    else:
        path, label = migrations_dir, f"paycraft_migrations_dir={migrations_dir}"
        if not os.path.exists(path):
            what = describe_path(path) + (", which does not exist" if os.path.islink(path) else " does not exist")
            return [Finding(label, f"{what} on this host", fix)]
    if not os.path.isdir(path):
        return [Finding(label, "is not a directory", fix)]
    if not migration_file_names(os.listdir(path)):
        return [Finding(label, "holds no *.sql migration file", fix)]
    return []


def check_compose_paths(tree: Tree, compose: dict, compose_label: str, gaps: dict) -> list:
    """Every path the compose file mounts or starts exists in the release."""
    findings = []
    services = (compose or {}).get("services") or {}
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        binds = bind_mounts(service)
        seen = set()

        def missing(rel: str, what: str, fix: str, _seen=seen, _name=name) -> None:
            if rel in _seen:
                return
            _seen.add(rel)
            findings.append(Finding(compose_label, f"service {_name} {what} {rel}, {tree.describe(rel)}", fix))

        fix_release = ("pin paycraft_version to a release that has it, or report it to PayCraft "
                       "(the collection does not fill this gap)")
        for source, target in binds:
            rel = tree.rel(source)
            if rel is not None and not tree.exists(rel):
                missing(rel, f"mounts {source} at {target}:", fix_release)
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if isinstance(entry, dict) and entry.get("required") is False:
                continue
            rel = tree.rel(str(path)) if path else None
            # .env is the config role's link to the env file, not part of a release
            if rel is not None and posixpath.basename(rel) != ".env" and not tree.exists(rel):
                missing(rel, "reads the env_file", fix_release)
        build = service.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        if isinstance(context, str) and "://" not in context:
            rel = tree.rel(context)
            if rel is not None and not tree.exists(rel):
                missing(rel, "builds from", fix_release)
        # container paths the service starts or reads, through its bind mounts
        args = command_list(service.get("entrypoint")) + command_list(service.get("command"))
        values = [a.split("=", 1)[1] if a.startswith("-") and "=" in a else a for a in args]
        values += list(_environment(service).values())
        main_path = main_service_path(service.get("command"))
        for value in values:
            if not value.startswith("/") or "$" in value:
                continue
            source = _map_container_path(binds, value)
            rel = tree.rel(source) if source else None
            if rel is None or tree.exists(rel):
                continue
            if value == main_path and gaps["main"]["fill"]:
                continue  # the collection's router replaces it
            if value == main_path:
                missing(rel, f"starts {MAIN_FLAG} {value}, which is", (
                    f"set {FILL_VARIABLES['main']}: auto (or true) so the collection mounts its router, "
                    "or pin paycraft_version to a release that ships it"))
            else:
                missing(rel, f"uses {value}, which is", fix_release)
    return findings


def check_kong(tree: Tree, compose: dict, kong: dict | None, kong_label: str, gaps: dict) -> list:
    """Every route of Kong's declarative file resolves to a service that will run."""
    if kong is None:
        return []
    services = (compose or {}).get("services") or {}
    running = {}
    for name, service in services.items():
        service = service if isinstance(service, dict) else {}
        ports = listen_ports(name, service)
        running[name] = ports
        if service.get("container_name"):
            running[str(service["container_name"])] = ports
    if gaps["rest"]["fill"]:
        running[REST_SERVICE] = set(KNOWN_PORTS[REST_SERVICE])
        kong = kong_with_rest(kong)
    findings = []
    for entry in kong.get("services") or []:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or "(unnamed)"
        if entry.get("url"):
            parts = urlsplit(str(entry["url"]))
            host, scheme = parts.hostname, parts.scheme or "http"
            try:
                port = parts.port
            except ValueError:
                port = None
        else:
            host, scheme, port = entry.get("host"), entry.get("protocol", "http"), entry.get("port")
        if port is None:
            port = 443 if scheme == "https" else 80
        paths = [p for r in entry.get("routes") or [] if isinstance(r, dict) for p in r.get("paths") or []]
        route = f"route {name} ({', '.join(paths) or 'no path'})"
        is_rest = entry is rest_service_entry(kong)
        fix = (f"set {FILL_VARIABLES['rest']}: auto (or true) so the collection runs PostgREST as `rest` and "
               f"points {name} at {REST_URL}" if is_rest else
               "pin paycraft_version to a release whose kong.yml and compose file agree")
        target = f"{scheme}://{host}:{port}/"
        if not host or host not in running:
            findings.append(Finding(kong_label, f"{route} goes to {target}, a host no compose service answers to",
                                    fix))
        elif running[host] and int(port) not in running[host]:
            listens = ", ".join(str(p) for p in sorted(running[host]))
            findings.append(Finding(kong_label, f"{route} goes to {target}, where nothing listens ({host} listens "
                                                f"on {listens})", fix))
    return findings


def kong_file_of(tree: Tree, compose: dict) -> str | None:
    """The release path of the Kong declarative file the ``kong`` service reads, if it is mounted."""
    for service in ((compose or {}).get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        declared = _environment(service).get("KONG_DECLARATIVE_CONFIG")
        if declared:
            source = _map_container_path(bind_mounts(service), declared)
            return tree.rel(source) if source else None
    return None


def kong_mount_target(compose: dict) -> dict | None:
    """``{"service", "path"}``: the compose service that reads a Kong declarative file and where, in the container."""
    for name, service in ((compose or {}).get("services") or {}).items():
        if not isinstance(service, dict):
            continue
        declared = _environment(service).get("KONG_DECLARATIVE_CONFIG")
        if declared:
            return {"service": str(name), "path": declared}
    return None


def check_release(tree: Tree, compose: dict | None, kong: dict | None, *, compose_file: str, kong_rel: str,
                  migrations_dir: str, fill_rest="auto", fill_main="auto") -> tuple:
    """All findings of the release (except ``docker compose config``) and its gaps: ``(findings, gaps)``."""
    compose_label = posixpath.join(tree.selfhost_rel, compose_file)
    findings = check_migrations(tree, migrations_dir)
    if compose is None:
        findings.append(Finding(compose_label, "missing from the release (or not a YAML mapping)",
                                "pin paycraft_version to a PayCraft release with infra/selfhost"))
        return findings, plan_gaps(tree, {}, fill_rest, fill_main)
    gaps = plan_gaps(tree, compose, fill_rest, fill_main)
    findings += check_compose_paths(tree, compose, compose_label, gaps)
    findings += check_kong(tree, compose, kong, kong_rel, gaps)
    return findings, gaps


# --- docker compose config ----------------------------------------------------------------------------


def validation_env(existing: dict, keys: list) -> dict:
    """The env ``docker compose config`` sees: the env file's values, and a placeholder for each key the
    config role will write but the file does not hold yet (its value is generated later, e.g. secrets)."""
    out = dict(existing)
    for key in keys:
        if not out.get(key):
            out[key] = PLACEHOLDER
    return out


def scrub(text: str, values) -> str:
    """``text`` with every secret-sized value replaced by a mask."""
    for value in sorted({v for v in values if v and len(v) >= 6 and v != PLACEHOLDER}, key=len, reverse=True):
        text = text.replace(value, "********")
    return text


def compose_config_error(run, docker: str, tree: Tree, compose_file: str, project: str, env: dict,
                         workdir: str) -> str | None:
    """What ``docker compose config`` says against the release's compose file and ``env``; ``None`` when it
    accepts them. The env is written to a 0600 file in ``workdir`` and removed afterwards."""
    env_path = os.path.join(workdir, ".paycraft-validation.env")
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(render_line(k, v) + "\n" for k, v in sorted(env.items())))
    try:
        rc, out, err = run([docker, "compose", "--project-directory", tree.selfhost(), "-p", project,
                            "-f", os.path.join(tree.selfhost(), compose_file), "--env-file", env_path,
                            "config", "--quiet"], timeout=120)
    finally:
        os.unlink(env_path)
    if rc == 0:
        return None
    text = " ".join((err or out or f"exit {rc}").split())
    return scrub(text.replace(tree.root + "/", ""), env.values())
