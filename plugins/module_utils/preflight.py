"""Preflight checks for a PayCraft host (runbook section 1, "Prerequisites").

Pure Python, no Ansible import: every check is a function that returns a list
of findings (and, where useful, facts). A finding is a dict::

    {"check": "docker_version", "severity": "error", "message": "...", "fix": "..."}

``severity`` is ``error`` (the deployment must not go on), ``warning`` or
``info``. Nothing here changes the host: the checks read ``/proc``, call
``os.statvfs``, look tools up on ``PATH``, try Python imports and run the
read-only ``docker version`` / ``docker compose version`` / ``docker ps``.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shutil
import sys

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
# Processes through which Docker publishes a container port on the host.
DOCKER_PUBLISHERS = frozenset({"docker-proxy", "dockerd", "rootlesskit", "rootlesskit-docker-proxy"})

TCP_LISTEN = "0A"

RUNBOOK_PREREQ = "runbook section 1"

# What each tool of the runbook's prerequisites is for, and how to get it on Debian/Ubuntu.
TOOL_PURPOSE = {
    "openssl": "generates the JWT and encryption secrets",
    "curl": "runs the smoke test (section 6)",
    "git": "fetches the PayCraft source",
    "psql": "migration bootstrap (optional: falls back to docker exec)",
}
TOOL_PACKAGE = {"openssl": "openssl", "curl": "curl", "git": "git", "psql": "postgresql-client"}

# Python modules the collection's modules need on the target, with who needs them and where to get them.
PYTHON_MODULE_INFO = {
    "psycopg2": ("paycraft_migrate", "python3-psycopg2", "psycopg2-binary"),
    "requests": ("community.docker", "python3-requests", "requests"),
    "docker": ("community.docker", "python3-docker", "docker"),
    "yaml": ("community.docker", "python3-yaml", "PyYAML"),
}

# The oldest Python the collection's modules and module_utils run on (RHEL 9: 3.9, Ubuntu 22.04: 3.10).
MIN_PYTHON = (3, 9)
PYTHON_FIX = (
    "Install python3.9+ on the host and set ansible_python_interpreter to it "
    "(for example ansible_python_interpreter=/usr/bin/python3.9 in the inventory)."
)

_SECRET_ARG = re.compile(r"(?i)((?:pass(?:word)?|secret|token|key)[\w-]*[=:])\S+")


def finding(check: str, severity: str, message: str, fix: str = "") -> dict:
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    return {"check": check, "severity": severity, "message": message, "fix": fix}


# ---------------------------------------------------------------- versions

_VERSION_RE = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``'20.10.24+dfsg1'`` -> (20, 10, 24); ``'v2.40.3'`` -> (2, 40, 3); ``'24'`` -> (24, 0, 0).

    A Debian epoch (``5:24.0.7-1``) is ignored. Returns None when no version is found.
    """
    if text is None:
        return None
    text = text.strip()
    text = re.sub(r"^\d+:", "", text)  # Debian epoch
    text = text.lstrip("vV")
    m = _VERSION_RE.match(text)
    if not m:
        return None
    return tuple(int(g) if g is not None else 0 for g in m.groups())  # type: ignore[return-value]


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def version_at_least(have: str | tuple, need: str | tuple) -> bool:
    h = parse_version(have) if isinstance(have, str) else tuple(have)
    n = parse_version(need) if isinstance(need, str) else tuple(need)
    if h is None or n is None:
        raise ValueError(f"cannot compare versions {have!r} and {need!r}")
    return h >= n


# ---------------------------------------------------------------- commands

# Commands run through the module's runner (module_utils/_cli.py: runner(argv) -> (rc, stdout, stderr);
# a missing binary is rc 127, a timeout rc 124). This library never starts a process itself.


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---------------------------------------------------------------- docker / compose

def check_docker(host: str, min_version: str, managed: bool, runner, docker: str = "docker"):
    """Docker Engine (server) version >= min_version. Returns (findings, facts)."""
    facts = {"docker_cli": shutil.which(docker), "docker_server_version": None}
    if facts["docker_cli"] is None:
        if managed:
            return [finding("docker_version", INFO,
                            f"Docker is not installed on {host}: it will be installed by the docker role.")], facts
        return [finding("docker_version", ERROR,
                        f"Docker is not installed on {host} ({RUNBOOK_PREREQ}: Docker Engine ≥ 24).",
                        "Install Docker Engine (docker --version to check), or set "
                        "paycraft_preflight_docker_managed: true to let the docker role install it.")], facts
    rc, out, err = runner([docker, "version", "--format", "{{.Server.Version}}"])
    raw = out.strip()
    version = parse_version(raw) if rc == 0 else None
    if version is None:
        reason = _first_line(err) or _first_line(out) or f"exit code {rc}"
        if managed:
            return [finding("docker_version", INFO,
                            f"The Docker Engine on {host} does not answer ({reason}): it will be installed "
                            "and started by the docker role.")], facts
        return [finding("docker_version", ERROR,
                        f"The Docker Engine on {host} does not answer: {reason}.",
                        "Start the daemon (systemctl start docker, or dockerd & without systemd) and check "
                        "with: docker info")], facts
    facts["docker_server_version"] = format_version(version)
    if not version_at_least(version, min_version):
        return [finding("docker_version", ERROR,
                        f"Docker Engine {format_version(version)} on {host} is older than the required "
                        f"{min_version} ({RUNBOOK_PREREQ}: Docker Engine ≥ 24).",
                        "Upgrade Docker, or lower paycraft_preflight_docker_min_version if you accept the risk.",
                        )], facts
    return [finding("docker_version", INFO,
                    f"Docker Engine {format_version(version)} on {host} meets the minimum {min_version}.")], facts


def check_compose(host: str, min_version: str, managed: bool, runner, docker: str = "docker"):
    """Docker Compose v2 (``docker compose``, no hyphen). Returns (findings, facts)."""
    facts = {"compose_version": None}
    if shutil.which(docker) is None:
        rc, out, err = 127, "", "docker CLI not found"
    else:
        rc, out, err = runner([docker, "compose", "version", "--short"])
    version = parse_version(out) if rc == 0 else None
    if version is None:
        if managed:
            return [finding("compose_version", INFO,
                            f"Docker Compose v2 (docker compose) is not available on {host}: it will be installed "
                            "by the docker role.")], facts
        reason = _first_line(err) or _first_line(out) or f"exit code {rc}"
        return [finding("compose_version", ERROR,
                        f"Docker Compose v2 (docker compose) is not available on {host} ({reason}; "
                        f"{RUNBOOK_PREREQ}: Docker Compose v2).",
                        "Install the Compose v2 plugin (package docker-compose-plugin) and check with: "
                        "docker compose version")], facts
    facts["compose_version"] = format_version(version)
    if not version_at_least(version, min_version):
        return [finding("compose_version", ERROR,
                        f"Docker Compose {format_version(version)} on {host} is older than the required "
                        f"{min_version} ({RUNBOOK_PREREQ}: Docker Compose v2, `docker compose` syntax).",
                        "Install the Compose v2 plugin (package docker-compose-plugin), or lower "
                        "paycraft_preflight_compose_min_version if you accept the risk.")], facts
    return [finding("compose_version", INFO,
                    f"Docker Compose {format_version(version)} on {host} meets the minimum {min_version}.")], facts


# ---------------------------------------------------------------- memory

def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` -> {field: kB}."""
    values = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0])
    return values


def mem_available_mb(proc_root: str = "/proc") -> int:
    with open(os.path.join(proc_root, "meminfo"), encoding="ascii") as fh:
        info = parse_meminfo(fh.read())
    if "MemAvailable" in info:
        kb = info["MemAvailable"]
    else:  # kernels before 3.14
        kb = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    return kb // 1024


def check_memory(host: str, min_mb: int, proc_root: str = "/proc"):
    available = mem_available_mb(proc_root)
    facts = {"memory_available_mb": available}
    if available < min_mb:
        return [finding("memory", ERROR,
                        f"Only {available} MB of RAM is available on {host}; {RUNBOOK_PREREQ} needs "
                        f"{min_mb} MB free (Postgres + Kong + Edge runtime + Node build).",
                        "Free memory (stop other services; check with free -m) or give the host more RAM, or "
                        "lower paycraft_preflight_min_memory_mb if you accept the risk.")], facts
    return [finding("memory", INFO, f"{available} MB of RAM available on {host} (minimum {min_mb} MB).")], facts


# ---------------------------------------------------------------- disk

def nearest_existing(path: str) -> str:
    """The path itself, or its nearest existing parent directory."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _gb(n: float) -> str:
    return f"{n:.1f}".rstrip("0").rstrip(".")


def check_disk(host: str, min_gb: float, paths: list[str]):
    findings, facts = [], {}
    for path in paths:
        measured = nearest_existing(path)
        # one figure for the fact and the message (rounding twice could print 66.2 beside 66.25 -> 66.3)
        free_gb = round(free_bytes(measured) / 1024**3, 2)
        facts[path] = {"measured_at": measured, "free_gb": free_gb}
        where = path if measured == os.path.abspath(path) else f"{path} (measured at {measured}, which exists)"
        if free_gb < min_gb:
            findings.append(finding(
                "disk", ERROR,
                f"Only {_gb(free_gb)} GB of disk is free for {where} on {host}; {RUNBOOK_PREREQ} needs "
                f"{_gb(min_gb)} GB free (container images + Postgres volume).",
                f"Free space (df -h {measured}; docker system prune removes unused images) or grow the disk, or "
                "lower paycraft_preflight_min_disk_gb if you accept the risk."))
        else:
            findings.append(finding("disk", INFO, f"{_gb(free_gb)} GB free for {where} on {host} "
                                                  f"(minimum {_gb(min_gb)} GB)."))
    return findings, {"disk": facts}


# ---------------------------------------------------------------- tools and python modules

def check_tools(host: str, tools: list[str]):
    findings, facts = [], {}
    for tool in tools:
        path = shutil.which(tool)
        facts[tool] = path
        if path:
            continue
        purpose = TOOL_PURPOSE.get(tool)
        why = f"{RUNBOOK_PREREQ}: {tool} {purpose}" if purpose else "listed in paycraft_preflight_required_tools"
        package = TOOL_PACKAGE.get(tool, tool)
        findings.append(finding("tools", ERROR, f"{tool} is not on the PATH on {host} ({why}).",
                                f"Install it (apt-get install {package}) and check with: command -v {tool}"))
    if tools and not findings:
        findings.append(finding("tools", INFO, f"{', '.join(tools)} found on {host}."))
    return findings, {"tools": facts}


def check_python_modules(host: str, modules: list[str], managed: bool, importer=importlib.import_module):
    findings, facts = [], {}
    for name in modules:
        try:
            importer(name)
        except Exception as exc:  # any import failure means "not usable"
            facts[name] = False
            needed_by, deb, pypi = PYTHON_MODULE_INFO.get(name, ("the collection's modules", f"python3-{name}", name))
            if managed:
                findings.append(finding(
                    "python_modules", INFO,
                    f"Python module {name} (needed by {needed_by}) is not importable on {host}: it will be "
                    "installed by the docker role."))
            else:
                findings.append(finding(
                    "python_modules", ERROR,
                    f"Python module {name} (needed by {needed_by}) cannot be imported by the target's Python on "
                    f"{host}: {type(exc).__name__}: {_first_line(str(exc))}.",
                    f"Install it for that interpreter (apt-get install {deb}, or pip install {pypi})."))
        else:
            facts[name] = True
    ok = [n for n in modules if facts[n]]
    if ok:
        findings.append(finding("python_modules", INFO, f"Python modules {', '.join(ok)} importable on {host}."))
    return findings, {"python_modules": facts}


def check_python(host: str, version=None, interpreter: str | None = None, minimum=MIN_PYTHON):
    """The target's Python is at least ``minimum`` (3.9). Returns (findings, facts).

    ``version`` is a string (``ansible_facts.python.version``, ``'3.8.10'``) or a version tuple;
    by default the interpreter running this code, as the module runs on the target's.
    """
    if version is None:
        version, interpreter = tuple(sys.version_info[:3]), interpreter or sys.executable
    have = parse_version(version) if isinstance(version, str) else tuple(int(p) for p in version)
    where = f" ({interpreter})" if interpreter else ""
    facts = {"python": {"version": format_version(have) if have else None, "interpreter": interpreter}}
    need = format_version(minimum)
    if have is None:
        return [finding("python", ERROR, f"The Python version{where} on {host} cannot be read ({version!r}); the "
                        f"collection's modules need Python {need}+.", PYTHON_FIX)], facts
    if have[:len(minimum)] < tuple(minimum):
        return [finding("python", ERROR, f"Python {format_version(have)}{where} on {host} is older than {need}, "
                        "the oldest the collection's modules run on.", PYTHON_FIX)], facts
    return [finding("python", INFO, f"Python {format_version(have)}{where} on {host}.")], facts


# ---------------------------------------------------------------- ports

def _decode_address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    if len(raw) == 16:
        # four 32-bit words, each in host (little-endian) byte order
        ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        addr = ipaddress.IPv6Address(ordered)
        return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    raise ValueError(f"unexpected address {hexaddr!r}")


def parse_proc_net_tcp(text: str) -> list[dict]:
    """Lines of ``/proc/net/tcp`` or ``/proc/net/tcp6`` -> [{address, port, state, listening, inode, uid}]."""
    sockets = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":") or ":" not in fields[1]:
            continue  # header or garbage
        local = fields[1]
        hexaddr, _, hexport = local.rpartition(":")
        try:
            sockets.append({
                "address": _decode_address(hexaddr),
                "port": int(hexport, 16),
                "state": fields[3],
                "listening": fields[3] == TCP_LISTEN,
                "uid": int(fields[7]),
                "inode": int(fields[9]),
            })
        except ValueError:
            continue
    return sockets


def tcp_listeners(proc_root: str = "/proc") -> dict[int, list[dict]]:
    """Listening TCP sockets (v4 and v6) by port."""
    result: dict[int, list[dict]] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc_root, "net", name), encoding="ascii") as fh:
                text = fh.read()
        except OSError:
            continue
        for sock in parse_proc_net_tcp(text):
            if sock["listening"]:
                result.setdefault(sock["port"], []).append(sock)
    return result


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _printable(text: str) -> str:
    """Control characters (a newline in a ``python -c`` script...) shown escaped: one finding, one line."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def redact_cmdline(cmdline: str) -> str:
    """Hide values of arguments that look like secrets (password=..., --token=...)."""
    return _SECRET_ARG.sub(r"\1***", cmdline)


def socket_holders(inodes, proc_root: str = "/proc") -> dict[int, list[dict]]:
    """Map socket inodes to the processes holding them: {inode: [{pid, comm, cmdline}]}."""
    wanted = {f"socket:[{i}]": int(i) for i in inodes}
    found: dict[int, list[dict]] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(proc_root, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # process gone, or not ours to read
            continue
        hits = set()
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in wanted:
                hits.add(wanted[target])
        if not hits:
            continue
        proc = _process_info(proc_root, int(entry))
        for inode in hits:
            found.setdefault(inode, []).append(proc)
    return found


def _process_info(proc_root: str, pid: int) -> dict:
    base = os.path.join(proc_root, str(pid))
    try:
        with open(os.path.join(base, "comm"), encoding="utf-8", errors="replace") as fh:
            comm = fh.read().strip()
    except OSError:
        comm = "?"
    try:
        with open(os.path.join(base, "cmdline"), "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    cmdline = _printable(redact_cmdline(" ".join(argv)))
    if len(cmdline) > 200:
        cmdline = cmdline[:197] + "..."
    return {"pid": pid, "comm": comm, "cmdline": cmdline}


def port_holders(ports, proc_root: str = "/proc") -> dict[int, dict]:
    """For each port: {"listening": [addresses], "holders": [{pid, comm, cmdline}], "inodes": [...]}."""
    listeners = tcp_listeners(proc_root)
    inodes = {s["inode"] for p in ports for s in listeners.get(p, [])}
    holders = socket_holders(inodes, proc_root)
    result = {}
    for port in ports:
        socks = listeners.get(port, [])
        procs, seen = [], set()
        for sock in socks:
            for proc in holders.get(sock["inode"], []):
                if proc["pid"] not in seen:
                    seen.add(proc["pid"])
                    procs.append(proc)
        result[port] = {
            "listening": sorted({s["address"] for s in socks}),
            "inodes": sorted({s["inode"] for s in socks}),
            "holders": sorted(procs, key=lambda p: p["pid"]),
        }
    return result


# The compose service publishing each of the runbook's host ports (docker-compose.yaml).
PORT_SERVICE = {54321: "kong", 54322: "db", 3000: "dashboard", 80: "proxy", 443: "proxy"}


def _port_fix(port: int) -> str:
    service = PORT_SERVICE.get(port)
    if service == "proxy":
        return (f"Identify the conflicting process: lsof -iTCP:{port} -sTCP:LISTEN -n -P ; the TLS proxy "
                "(paycraft_tls_enabled) needs 80 (ACME HTTP-01 and the redirect to https) and 443: stop the web "
                "server holding it (e.g. systemctl disable --now nginx), or set paycraft_tls_enabled: false and "
                "keep your own proxy in front of 127.0.0.1:54321 and 127.0.0.1:3000.")
    where = f"docker-compose.yaml ({service}.ports[0])" if service else "docker-compose.yaml"
    return (f"Identify the conflicting process: lsof -iTCP:{port} -sTCP:LISTEN -n -P ; stop the conflicting "
            f"service (often a stale Supabase CLI instance: supabase stop) ; or rebind PayCraft's port in {where} "
            "(runbook section 7: Port already in use).")


def _containers_publishing(port: int, project: str | None, runner, docker: str) -> list[str] | None:
    argv = [docker, "ps"]
    if project is not None:
        argv += ["--filter", f"label={COMPOSE_PROJECT_LABEL}={project}"]
    argv += ["--filter", f"publish={port}", "--format",
             "{{.Names}}" if project is not None else '{{.Names}} (compose project "{{.Label "'
             + COMPOSE_PROJECT_LABEL + '"}}")']
    rc, out, _err = runner(argv)
    if rc != 0:
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def check_ports(host: str, ports, project: str, proc_root: str = "/proc", runner=None,
                docker: str = "docker"):
    """Each port free, or published by a container of compose project ``project``."""
    findings = []
    info = port_holders(ports, proc_root)
    facts = {}
    for port in ports:
        entry = info[port]
        fact = {"free": not entry["listening"], "listening": entry["listening"], "holders": entry["holders"],
                "containers": []}
        facts[str(port)] = fact
        if not entry["listening"]:
            continue
        holders = entry["holders"]
        if holders and all(h["comm"] in DOCKER_PUBLISHERS for h in holders):
            ours = _containers_publishing(port, project, runner, docker) if runner and shutil.which(docker) else None
            if ours:
                fact["containers"] = ours
                findings.append(finding(
                    "ports", INFO,
                    f"Port {port} on {host} is already published by container {', '.join(ours)} of compose "
                    f"project {project} (this stack): OK."))
                continue
            others = (_containers_publishing(port, None, runner, docker)
                      if runner and shutil.which(docker) else None)
            who = ("container " + ", ".join(others)) if others else "a container of another compose project"
            fact["containers"] = others or []
            stop = (f"docker stop {' '.join(o.split()[0] for o in others)}" if others
                    else f"docker ps --filter publish={port}")
            pids = ", ".join(f"pid {h['pid']} ({h['comm']})" for h in holders)
            findings.append(finding(
                "ports", ERROR,
                f"Port {port} on {host} is already in use by {who} through {pids}, not by this stack "
                f"(compose project {project}).",
                f"Stop that container if it is stale ({stop}), or: " + _port_fix(port)))
            continue
        if holders:
            who = "; ".join(f"pid {h['pid']} ({h['comm']}: {h['cmdline'] or '?'})" for h in holders)
        else:
            who = (f"a process this check cannot see (socket inode {', '.join(map(str, entry['inodes']))}, "
                   f"listening on {', '.join(entry['listening'])})")
        findings.append(finding("ports", ERROR, f"Port {port} on {host} is already in use by {who}.",
                                _port_fix(port)))
    if ports and not any(f["severity"] == ERROR for f in findings):
        free = [str(p) for p in ports if facts[str(p)]["free"]]
        if free:
            findings.append(finding("ports", INFO, f"Ports {', '.join(free)} are free on {host}."))
    return findings, {"ports": facts}


# ---------------------------------------------------------------- all together

def run_all(host: str, *, docker_min_version: str = "24.0", compose_min_version: str = "2.0",
            docker_managed: bool = True, min_memory_mb: int = 4096, min_disk_gb: float = 5,
            disk_paths=("/opt/paycraft", "/var/lib/docker"), ports=(54321, 54322, 54323, 54324, 3000),
            compose_project: str = "selfhost", required_tools=("openssl", "curl"),
            python_modules=("psycopg2", "requests"), proc_root: str = "/proc", runner):
    """Run every check; returns (facts, findings). Never raises for a failed check."""
    findings: list[dict] = []
    facts: dict = {"host": host}
    steps = [
        lambda: check_docker(host, docker_min_version, docker_managed, runner),
        lambda: check_compose(host, compose_min_version, docker_managed, runner),
        lambda: check_memory(host, min_memory_mb, proc_root),
        lambda: check_disk(host, min_disk_gb, list(disk_paths)),
        lambda: check_ports(host, [int(p) for p in ports], compose_project, proc_root, runner),
        lambda: check_tools(host, list(required_tools)),
        lambda: check_python(host),
        lambda: check_python_modules(host, list(python_modules), docker_managed),
    ]
    for step in steps:
        f, fa = step()
        findings.extend(f)
        facts.update(fa)
    return facts, findings


def errors(findings) -> list[dict]:
    return [f for f in findings if f["severity"] == ERROR]


def finding_line(f: dict) -> str:
    """Message and fix on one line (whatever a message quoted, it never spans lines)."""
    return _printable(f"{f['message']} {f['fix']}".strip())


def failure_message(host: str, findings) -> str:
    """``Preflight failed on HOST: N problem(s)`` and one line per error with its fix."""
    errs = errors(findings)
    lines = [f"Preflight failed on {host}: {len(errs)} problem(s)"]
    lines += [f"- {finding_line(f)}" for f in errs]
    return "\n".join(lines)


def report_lines(findings) -> list[str]:
    """Every finding, one readable line each: ``[ERROR] docker_version: message fix``."""
    return [f"[{f['severity'].upper()}] {f['check']}: {finding_line(f)}" for f in findings]
