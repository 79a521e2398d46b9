# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor: every entry of the runbook's section 7 (Troubleshooting) as a check of a live host.

Each check reads (the env file, the release on disk, ``docker inspect``/``logs``/``top``/``ps``,
``/proc/net/tcp``, the gateway, Postgres through ``docker exec paycraft_db psql``) and gives one
result per subject: ``ok``, ``warn`` or ``fail``, what it found, the fix, and the runbook entry it
comes from. Nothing is changed, ever.

Pure Python 3.9+, no Ansible import. Commands run through a *runner*
(``runner(argv, cwd=None, timeout=None) -> (rc, out, err)``, see ``_cli.py``); HTTP through
``http(url, timeout) -> (status, body_text)`` or raises OSError; the clock is ``now()`` (epoch seconds).
Values of the env file's secrets never appear in a result: log lines quoted are redacted.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as keyslib
from ansible_collections.paycraft.selfhost.plugins.module_utils import preflight
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
STATUSES = (OK, WARN, FAIL, SKIPPED)

# The entries of runbook section 7, in the runbook's order: check name -> entry title.
RUNBOOK = {
    "ports": "Port already in use",
    "postgres": "Postgres container exits during boot",
    "config_function": "Edge function returns 404 for /functions/v1/config",
    "migrations_connect": 'migrations-bootstrap.sh aborts with "could not connect"',
    "dashboard_npm": "Dashboard build hangs at npm install",
    "anon_key": 'SDK throws "401 Unauthorized" from a self-hosted backend',
    "tenant_trigger": "Tenant not auto-created on first signup",
}
CHECKS = tuple(RUNBOOK)

# How a release makes a tenant (check tenant_trigger): the older signup trigger, or PayCraft's provisioning RPCs
# (migrations 023/039 provision_tenant, 048 provision_app) with tenant_admins (018).
PROVISIONING_RPCS = ("provision_app", "provision_tenant")
TENANCY_OBJECTS = {
    "handle_new_user_tenancy": re.compile(
        r"create\s+(or\s+replace\s+)?function\s+(public\.)?\"?handle_new_user_tenancy\b", re.I),
    "provision_app": re.compile(r"create\s+(or\s+replace\s+)?function\s+(public\.)?\"?provision_app\b", re.I),
    "provision_tenant": re.compile(r"create\s+(or\s+replace\s+)?function\s+(public\.)?\"?provision_tenant\b", re.I),
    "tenant_admins": re.compile(r"create\s+table\s+(if\s+not\s+exists\s+)?(public\.)?\"?tenant_admins\b", re.I),
}

DEFAULT_CONTAINERS = {
    "db": "paycraft_db",
    "kong": "paycraft_kong",
    "edge-runtime": "paycraft_edge_runtime",
    "dashboard": "paycraft_dashboard",
    "auth": "paycraft_auth",
}
# The runbook's host ports and the service that publishes each (docker-compose.yaml).
DEFAULT_PORTS = {54321: "kong", 54322: "db", 3000: "dashboard"}
NPM_INSTALL_LIMIT = 300  # runbook: "sits at npm install for >5 min"
LOG_TAIL = 200
REDACTED = "********"

PASSWORD_FAILED_RE = re.compile(r'password authentication failed for user "([^"]+)"')
# A data directory that this Postgres cannot use (runbook: "an empty data directory", "created by a prior
# supabase start run and is incompatible").
BAD_DATADIR_RES = (
    re.compile(r"database files are incompatible with server.*"),
    re.compile(r"initdb: error: directory .* exists but is not empty.*"),
    re.compile(r"database is uninitialized and (?:superuser )?(?:password|POSTGRES_PASSWORD) is not "
               r"(?:set|specified).*"),
    re.compile(r"could not open file \"[^\"]*PG_VERSION\".*"),
    re.compile(r"could not access the server configuration file .*"),
    re.compile(r"this data directory has no record of a finished bootstrap.*"),
)
# Lines of the edge runtime's log that say why a function did not load: the import error itself first,
# then any error line (the runtime's own "exited before it served requests (see the log above)" last).
IMPORT_ERROR_RE = re.compile(r"(?i)(module not found|cannot find module|syntaxerror|uncaught|import)")
RUNTIME_ERROR_RE = re.compile(r"(?i)(boot error|\berror\b|exited \(code)")


def runtime_error(logs: list[str]) -> str:
    """The line of the edge runtime's log that says why a function did not load ("" when none does)."""
    for rx in (IMPORT_ERROR_RE, RUNTIME_ERROR_RE):
        for text in reversed(logs):
            if rx.search(text) and "see the log above" not in text:
                return text.strip()
    return ""
NPM_INSTALL_RE = re.compile(r"^(?:\S*/)?(?:node\s+\S*npm(?:-cli\.js)?\s+|npm\s+)(?:install|i|ci)(?:\s|$)")


def runbook_ref(check: str) -> str:
    return f"runbook section 7, '{RUNBOOK[check]}'"


def _flat(text: str) -> str:
    """Whitespace (newlines of a quoted body or log) collapsed: every result stays one line."""
    return re.sub(r"\s+", " ", text).strip()


def result(check: str, status: str, message: str, fix: str = "", subject: str = "") -> dict:
    return {"check": check, "subject": subject, "status": status, "message": _flat(message), "fix": _flat(fix),
            "runbook": runbook_ref(check)}


def line(res: dict) -> str:
    """One line per result: ``OK   ports 54321: ...`` / ``FAIL ...  Fix: ...  (runbook section 7, '...')``."""
    name = res["check"] + (f" {res['subject']}" if res.get("subject") else "")
    text = f"{res['status'].upper():<4} {name}: {res['message']}"
    if res.get("fix"):
        text += f" Fix: {res['fix']}"
    return f"{text} ({res['runbook']})"


def redact(text: str, secrets) -> str:
    for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def parse_docker_time(text: str) -> float | None:
    """Epoch seconds of Docker's RFC 3339 timestamps (``2026-11-29T02:10:11.123456789Z``)."""
    if not text or text.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", text.strip())
    if not m:
        return None
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    if m.group(2) != "Z":
        sign = 1 if m.group(2)[0] == "+" else -1
        hours, minutes = m.group(2)[1:].split(":")
        base -= sign * (int(hours) * 3600 + int(minutes) * 60)
    return base


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def default_http(url: str, timeout: float):
    """GET ``url``: ``(status, body text)``; OSError when nothing answers."""
    req = urllib.request.Request(url, method="GET", headers={"User-Agent": "paycraft-doctor"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the host's own ports
            return resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(65536).decode("utf-8", "replace")
    except urllib.error.URLError as err:
        raise OSError(str(err.reason)) from None


def pg_ping(host: str, port: int, timeout: float) -> tuple[str, str]:
    from ansible_collections.paycraft.selfhost.plugins.module_utils import smoke

    return smoke.pg_ping(host, port, timeout)


# The parameters of a Doctor and their defaults (the module's options).
DEFAULTS = {
    "env_file": "/etc/paycraft/paycraft.env",
    "selfhost_dir": "/opt/paycraft/src/infra/selfhost",
    "functions_dir": None,  # default: <selfhost_dir>/../../supabase/functions (the compose mount)
    "dashboard_dir": None,  # default: <selfhost_dir>/../../dashboard
    "migrations_dir": None,  # default: <selfhost_dir>/../../server/migrations
    "ledger": "_paycraft_migrations",
    "compose_project": "selfhost",
    "api_url": "http://127.0.0.1:54321",
    "db_host": "127.0.0.1",
    "db_port": 54322,
    "ports": None,  # {port: service}
    "containers": None,  # {service: container name}
    "npm_install_limit": NPM_INSTALL_LIMIT,
    "sdk_anon_key": None,
    "timeout": 5.0,
    "docker": "docker",
    "proc_root": "/proc",
}


class Doctor:
    """The checks of one host. ``params``: see ``DEFAULTS``."""


    def __init__(self, params: dict, runner, http=default_http, now=time.time, pinger=pg_ping):
        p = dict(DEFAULTS)
        p.update({k: v for k, v in (params or {}).items() if v is not None})
        release = os.path.normpath(os.path.join(p["selfhost_dir"], "..", ".."))
        p["functions_dir"] = p["functions_dir"] or os.path.join(release, "supabase", "functions")
        p["dashboard_dir"] = p["dashboard_dir"] or os.path.join(release, "dashboard")
        p["migrations_dir"] = p["migrations_dir"] or os.path.join(release, "server", "migrations")
        p["ports"] = {int(k): v for k, v in (p["ports"] or DEFAULT_PORTS).items()}
        p["containers"] = {**DEFAULT_CONTAINERS, **(p["containers"] or {})}
        self.p = p
        self.run = runner
        self.http = http
        self.now = now
        self.pinger = pinger
        self._inspect: dict = {}
        self.env = EnvFile.read(p["env_file"])
        self.env_present = os.path.isfile(p["env_file"])
        self.secrets = [self.env.get(k) or "" for k in keyslib.SECRET_KEYS]
        if p.get("sdk_anon_key"):
            self.secrets.append(p["sdk_anon_key"])

    # ---------------------------------------------------------------- docker
    def container(self, service: str) -> str:
        return self.p["containers"][service]

    def inspect(self, name: str) -> dict | None:
        if name not in self._inspect:
            rc, out, _err = self.run([self.p["docker"], "inspect", "--type", "container", name], timeout=30)
            data = None
            if rc == 0:
                try:
                    data = (json.loads(out) or [None])[0]
                except ValueError:
                    data = None
            self._inspect[name] = data
        return self._inspect[name]

    def logs(self, name: str, tail: int = LOG_TAIL) -> list[str]:
        rc, out, err = self.run([self.p["docker"], "logs", "--tail", str(tail), name], timeout=30)
        if rc != 0:
            return []
        return [redact(x, self.secrets) for x in (out + err).splitlines() if x.strip()]

    def state_text(self, info: dict) -> str:
        """``running (up 3 min)`` / ``restarting (exit code 1, 7 restarts)`` / ``exited (code 137, 2 min ago)``."""
        st = info.get("State") or {}
        status = st.get("Status") or ("running" if st.get("Running") else "stopped")
        restarts = info.get("RestartCount") or 0
        extra = []
        if status == "running":
            started = parse_docker_time(st.get("StartedAt", ""))
            if started:
                extra.append(f"up {_ago(self.now() - started)}")
        else:
            extra.append(f"exit code {st.get('ExitCode', '?')}")
            finished = parse_docker_time(st.get("FinishedAt", ""))
            if finished:
                extra.append(f"stopped {_ago(self.now() - finished)} ago")
        if restarts:
            extra.append(f"{restarts} restart(s)")
        if st.get("Error"):
            extra.append(f"docker: {st['Error']}")
        return f"{status} ({', '.join(extra)})" if extra else status

    @staticmethod
    def running(info: dict | None) -> bool:
        st = (info or {}).get("State") or {}
        return bool(st.get("Running")) and not st.get("Restarting")

    def psql(self, sql: str) -> tuple[bool, str]:
        """``docker exec paycraft_db psql -U postgres -d postgres`` (the runbook's own command)."""
        rc, out, err = self.run([self.p["docker"], "exec", self.container("db"), "psql", "-U", "postgres",
                                 "-d", "postgres", "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=30)
        return rc == 0, (out if rc == 0 else (err or out)).strip()

    def _missing_container(self, check, service, subject=""):
        name = self.container(service)
        return result(check, FAIL, f"there is no container {name} on this host.",
                      f"docker compose up -d {service} (in {self.p['selfhost_dir']}), or run site.yml.", subject)

    # ---------------------------------------------------------------- checks
    def check_ports(self) -> list[dict]:
        ports = self.p["ports"]
        holders = preflight.port_holders(list(ports), self.p["proc_root"])
        results = []
        for port, service in ports.items():
            want = self.container(service)
            subject = str(port)
            rc, out, _ = self.run([self.p["docker"], "ps", "--filter", f"publish={port}", "--format",
                                   "{{.Names}}"], timeout=30)
            publishers = [x.strip() for x in out.splitlines() if x.strip()] if rc == 0 else []
            entry = holders[port]
            procs = [h for h in entry["holders"] if h["comm"] not in preflight.DOCKER_PUBLISHERS]
            rebind = (f"stop it, or rebind PayCraft's port in docker-compose.yaml ({service}.ports[0]); "
                      f"check: lsof -iTCP:{port} -sTCP:LISTEN -n -P")
            if want in publishers:
                results.append(result("ports", OK, f"published by {want}.", subject=subject))
            elif publishers:
                results.append(result(
                    "ports", FAIL,
                    f"held by container {', '.join(publishers)}, not {want}.",
                    f"docker stop {' '.join(publishers)} (often a stale Supabase CLI stack: supabase stop), or "
                    + rebind + f"; then docker compose up -d {service}.", subject))
            elif procs:
                who = ", ".join(f"{h['comm']} (pid {h['pid']}: {h['cmdline'] or '?'})" for h in procs)
                results.append(result(
                    "ports", FAIL, f"held by process {who}, not {want}.",
                    f"kill {' '.join(str(h['pid']) for h in procs)} or " + rebind
                    + f"; then docker compose up -d {service}.", subject))
            elif entry["listening"]:
                via = ", ".join(f"{h['comm']} (pid {h['pid']})" for h in entry["holders"])
                who = (f"a container through {via}" if via else
                       f"a process this check cannot see (listening on {', '.join(entry['listening'])})")
                results.append(result("ports", FAIL, f"held by {who}, not {want}.", rebind + ".", subject))
            else:
                info = self.inspect(want)
                if info is None:
                    results.append(result("ports", FAIL, f"free, and there is no container {want}.",
                                          f"docker compose up -d {service}.", subject))
                elif self.running(info):
                    results.append(result("ports", WARN, f"free, but {want} runs without publishing it.",
                                          f"docker compose up -d --force-recreate {service}.", subject))
                else:
                    results.append(result("ports", FAIL, f"free; {want} is {self.state_text(info)}.",
                                          f"docker compose up -d {service}; docker logs {want} --tail 50.",
                                          subject))
        return results

    def check_postgres(self) -> list[dict]:
        check, name = "postgres", self.container("db")
        info = self.inspect(name)
        if info is None:
            return [self._missing_container(check, "db")]
        logs = self.logs(name)
        volume = f"{self.p['compose_project']}_paycraft-db"
        reset = (f"take a backup first, then docker compose down; docker volume rm {volume}; "
                 "docker compose up -d db (this destroys all subscriptions data)")
        failed_users: dict[str, int] = {}
        for text in logs:
            m = PASSWORD_FAILED_RE.search(text)
            if m:
                failed_users[m.group(1)] = failed_users.get(m.group(1), 0) + 1
        bad_dir = next((m.group(0) for text in reversed(logs) for rx in BAD_DATADIR_RES
                        for m in [rx.search(text)] if m), None)
        login = self._login()
        if login == "password":
            users = ", ".join(f"{u} x{n}" for u, n in sorted(failed_users.items()))
            seen = f"; docker logs {name} shows 'password authentication failed' ({users})" if users else ""
            return [result(check, FAIL,
                           f"Postgres refuses PAYCRAFT_DB_PASSWORD of {self.p['env_file']} for user postgres{seen}: "
                           "the password changed after the paycraft-db volume was created.",
                           "put the password the volume was created with back into the env file, or " + reset + ".")]
        if not self.running(info):
            why = f" The log says: {bad_dir.rstrip('.')}." if bad_dir else ""
            last = "" if bad_dir else (f" Last log line: {logs[-1].rstrip('.')}." if logs else "")
            fix = (f"the volume {volume} holds a data directory this Postgres cannot use: " + reset
                   if bad_dir else f"docker logs {name} --tail 50; docker compose up -d db")
            return [result(check, FAIL, f"{name} is {self.state_text(info)}.{why}{last}", fix + ".")]
        if failed_users and login is None:
            users = ", ".join(f"{u} x{n}" for u, n in sorted(failed_users.items()))
            return [result(check, WARN,
                           f"{name} runs, and its log shows 'password authentication failed' ({users}); "
                           "the env file's password could not be tried (psycopg2 missing or port closed).",
                           f"docker logs {name} --tail 50; compare PAYCRAFT_DB_PASSWORD with the password the volume "
                           "was created with.")]
        restarts = info.get("RestartCount") or 0
        users = f"; older 'password authentication failed' lines for {', '.join(sorted(failed_users))}" \
            if failed_users else ""
        how = "logs in with the env file's password" if login == "ok" else "runs"
        return [result(check, OK, f"{name} {how} ({self.state_text(info)}{', ' if restarts else ''}"
                       f"{'restarted ' + str(restarts) + ' time(s) before' if restarts else ''}){users}.")]

    def _login(self) -> str | None:
        """``ok``, ``password`` (refused), ``other`` or None (not tried) for the env file's password."""
        password = self.env.get(keyslib.DB_PASSWORD)
        if not password:
            return None
        from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres

        try:
            conn = _postgres.connect({"host": self.p["db_host"], "port": self.p["db_port"], "user": "postgres",
                                      "password": password, "dbname": "postgres"}, "paycraft_doctor",
                                     max(1, round(self.p["timeout"])))
        except _postgres.PostgresError as exc:
            if "psycopg2 is not installed" in exc.reason:
                return None
            kind = _postgres.login_failure_kind(exc.reason)
            return "password" if kind == "password" else ("other" if kind != "starting" else None)
        conn.close()
        return "ok"

    def check_migrations_connect(self) -> list[dict]:
        check, name = "migrations_connect", self.container("db")
        where = f"{self.p['db_host']}:{self.p['db_port']}"
        state, detail = self.pinger(self.p["db_host"], self.p["db_port"], self.p["timeout"])
        if state == "accepting":
            return [result(check, OK, f"Postgres on {where} accepts connections (pg_isready: accepting connections).")]
        rc, out, err = self.run([self.p["docker"], "exec", name, "pg_isready", "-U", "postgres"], timeout=30)
        inside = (out or err).strip().splitlines()
        inside_text = inside[-1] if inside else f"docker exec failed (rc {rc})"
        logs = self.logs(name, 50)
        last = next((x for x in reversed(logs) if re.search(r"FATAL|ERROR|PANIC|error", x)), logs[-1] if logs else "")
        status = WARN if state == "rejecting" else FAIL
        msg = (f"Postgres on {where}: {state} ({detail}); inside {name}: {inside_text}"
               + (f"; last log line: {last}" if last else "") + ".")
        return [result(check, status, msg,
                       f"wait 30 seconds and retry ./migrations-bootstrap.sh; if it persists: docker exec {name} "
                       f"pg_isready -U postgres (want 'accepting connections'), docker logs {name} --tail 50.")]

    def check_config_function(self) -> list[dict]:
        check, name = "config_function", self.container("edge-runtime")
        fdir = os.path.join(self.p["functions_dir"], "config")
        if not os.path.isfile(os.path.join(fdir, "index.ts")):
            return [result(check, FAIL,
                           f"the config function is not on disk: {fdir}/index.ts is missing (the edge runtime "
                           f"serves {self.p['functions_dir']}), so /functions/v1/config answers 404.",
                           "this release predates it: move to a newer release (playbooks/upgrade.yml -e "
                           "paycraft_version=<tag>; by hand: git pull && ./migrations-bootstrap.sh).")]
        info = self.inspect(name)
        if info is None:
            return [self._missing_container(check, "edge-runtime")]
        if not self.running(info):
            err = runtime_error(self.logs(name, 100))
            return [result(check, FAIL, f"{name} is {self.state_text(info)}"
                           + (f"; its log: {err}" if err else "") + ".",
                           f"docker logs {name} --tail 100; docker compose up -d edge-runtime.")]
        url = self.p["api_url"].rstrip("/") + "/functions/v1/config?apiKey=paycraft-doctor"
        try:
            status, body = self.http(url, self.p["timeout"])
        except OSError as exc:
            return [result(check, FAIL, f"nothing answers {url.split('?')[0]} ({exc}).",
                           "see the ports check; docker logs paycraft_kong --tail 50.")]
        not_found = status == 404 and "function not found" in body.lower()
        # the config function itself answers 400 (missing/empty apiKey) or 401 (unknown key) to this probe
        if status < 500 and status != 404:
            return [result(check, OK, f"{fdir} is on disk and GET /functions/v1/config answers {status} "
                           "(the function runs).")]
        if status == 404 and "no route matched" in body.lower():
            return [result(check, FAIL, "Kong answers 404 'no Route matched' for /functions/v1/config: kong.yml has no "
                           "route to the edge runtime.", "grep -n 'functions/v1' kong.yml; docker logs paycraft_kong.")]
        if status == 404 and not not_found:
            return [result(check, FAIL, f"GET /functions/v1/config answers 404 {_flat(body)[:80]}, not the gateway's "
                           "or the runtime's answer: something else holds the gateway's port.",
                           "see the ports check (lsof -iTCP:54321 -sTCP:LISTEN -n -P).")]
        # a function is booted on its first request: its import error is in the log only after the probe
        logs = self.logs(name, 100)
        if not not_found and "boot error" not in body.lower():
            err = next((x.strip() for x in reversed(logs) if RUNTIME_ERROR_RE.search(x) or "failed" in x), "")
            return [result(check, FAIL,
                           f"GET /functions/v1/config answers {status} {_flat(body)[:120]}: the function loads but "
                           "fails" + (f"; its log: {err}" if err else "") + ".",
                           f"docker logs {name} --tail 100; when the database refuses it, see the postgres line.")]
        err = runtime_error(logs)
        what = '404 {"message":"Function not found"}' if not_found else f"{status} {_flat(body)[:120]}"
        return [result(check, FAIL,
                       f"{fdir} is on disk but GET /functions/v1/config answers {what}: the runtime failed to "
                       "import it" + (f"; its log: {err}" if err else f" (no error in docker logs {name})") + ".",
                       f"fix the function's import (docker logs {name} --tail 100), then docker compose "
                       "restart edge-runtime.")]

    def check_dashboard_npm(self) -> list[dict]:
        check, name = "dashboard_npm", self.container("dashboard")
        info = self.inspect(name)
        if info is None:
            return [self._missing_container(check, "dashboard")]
        port = next((p for p, s in self.p["ports"].items() if s == "dashboard"), 3000)
        fix = (f"cd {self.p['dashboard_dir']} && npm install --no-audit --no-fund; then docker compose up -d "
               "dashboard (the mounted node_modules is reused).")
        if not self.running(info):
            logs = self.logs(name, 20)
            return [result(check, FAIL, f"{name} is {self.state_text(info)}"
                           + (f"; last log line: {logs[-1]}" if logs else "") + ".",
                           f"docker logs {name} --tail 50; docker compose up -d dashboard.")]
        try:
            status, _ = self.http(f"http://127.0.0.1:{port}/", self.p["timeout"])
        except OSError:
            status = None
        if status is not None and status < 500:
            return [result(check, OK, f"{name} answers {status} on port {port}.")]
        started = parse_docker_time(((info.get("State") or {}).get("StartedAt")) or "")
        age = self.now() - started if started else 0
        rc, out, _ = self.run([self.p["docker"], "top", name, "-o", "pid,args"], timeout=30)
        installing = npm_install_processes(out) if rc == 0 else []
        answer = "nothing answers" if status is None else f"it answers {status}"
        if installing:
            pid, args = installing[0]
            if age > self.p["npm_install_limit"]:
                return [result(check, FAIL, f"{name} has sat at npm install for {_ago(age)} ({args}, pid {pid}); "
                               f"{answer} on port {port}.", fix)]
            return [result(check, WARN, f"{name} runs npm install since {_ago(age)} (pid {pid}); the runbook "
                           f"calls it stuck after {_ago(self.p['npm_install_limit'])}.", "wait, or: " + fix)]
        logs = self.logs(name, 20)
        return [result(check, FAIL if age > self.p["npm_install_limit"] else WARN,
                       f"{name} is up {_ago(age)}, past npm install, but {answer} on port {port}"
                       + (f"; last log line: {logs[-1]}" if logs else "") + ".",
                       f"docker logs {name} --tail 50.")]

    def check_anon_key(self) -> list[dict]:
        check = "anon_key"
        if not self.env_present:
            return [result(check, FAIL, f"{self.p['env_file']} does not exist.", "run site.yml (config phase).")]
        anon, secret = self.env.get(keyslib.ANON_KEY) or "", self.env.get(keyslib.JWT_SECRET) or ""
        regen = ("sign both keys again with the current secret: site.yml -e paycraft_config_resign_keys=true "
                 "(by hand: ./generate-keys.sh and update .env, anon and service role both), then "
                 "docker compose up -d.")
        if not anon or not secret:
            missing = [k for k, v in ((keyslib.ANON_KEY, anon), (keyslib.JWT_SECRET, secret)) if not v]
            return [result(check, FAIL, f"{', '.join(missing)} empty in {self.p['env_file']}.", regen)]
        if anon != anon.strip():
            return [result(check, FAIL, f"{keyslib.ANON_KEY} in {self.p['env_file']} has leading or trailing "
                           "whitespace: the SDK's key and the gateway's are not byte-identical.",
                           "remove the whitespace, then docker compose up -d.")]
        problems = []
        for var, role in ((keyslib.ANON_KEY, "anon"), (keyslib.SERVICE_ROLE_KEY, "service_role")):
            value = self.env.get(var) or ""
            if not value:
                continue
            status, claims = keyslib.verify_role_key(value, secret, role, now=int(self.now()))
            if status == keyslib.BAD_SIGNATURE:
                problems.append(f"{var} is not signed by {keyslib.JWT_SECRET} (the JWT secret changed after the "
                                "key was generated)")
            elif status == keyslib.WRONG_ROLE:
                problems.append(f"{var} is a {claims.get('role')!s} key, not {role}")
            elif status == keyslib.EXPIRED:
                problems.append(f"{var} has expired")
            elif status != keyslib.OK:
                problems.append(f"{var} is not a JWT")
        if problems:
            return [result(check, FAIL, "; ".join(problems) + f" in {self.p['env_file']}.", regen)]
        # The running containers got their values when they were created: an env file edited since differs.
        stale = []
        for service, var, env_name in (("kong", "SUPABASE_ANON_KEY", keyslib.ANON_KEY),
                                       ("auth", "GOTRUE_JWT_SECRET", keyslib.JWT_SECRET),
                                       ("dashboard", "NEXT_PUBLIC_SUPABASE_ANON_KEY", keyslib.ANON_KEY)):
            info = self.inspect(self.container(service))
            if info is None:
                continue
            running_env = dict(x.partition("=")[::2] for x in ((info.get("Config") or {}).get("Env") or []))
            if var in running_env and running_env[var] != self.env.get(env_name):
                stale.append(f"{self.container(service)} runs with another {env_name} ({var})")
        if stale:
            return [result(check, FAIL, "; ".join(stale) + f" than {self.p['env_file']}.",
                           "docker compose up -d (recreates the containers with the env file's values).")]
        sdk = self.p.get("sdk_anon_key")
        if sdk is not None and sdk != anon:
            why = ("it differs only by surrounding whitespace (a trailing newline)" if sdk.strip() == anon
                   else "they differ")
            return [result(check, FAIL,
                           f"the SDK's supabaseAnonKey is not byte-identical to {keyslib.ANON_KEY}: {why}.",
                           f"paste {keyslib.ANON_KEY} of {self.p['env_file']} into the SDK, trimmed.")]
        return [result(check, OK, f"{keyslib.ANON_KEY} and {keyslib.SERVICE_ROLE_KEY} are signed by "
                       f"{keyslib.JWT_SECRET}, and the running gateway, auth and dashboard use the env file's values.")]

    def _tenancy_owners(self, mdir, names):
        """Which migration (file name without .sql) first creates each tenancy object the release has."""
        owners = {}
        for n in names:
            try:
                with open(os.path.join(mdir, n), encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            for obj, rx in TENANCY_OBJECTS.items():
                if obj not in owners and rx.search(text):
                    owners[obj] = n[:-4]
        return owners

    def check_tenant_trigger(self) -> list[dict]:
        """How this release makes a tenant: a signup trigger (handle_new_user_tenancy(), the older reference
        shape), or provisioning RPCs the dashboard calls (PayCraft's provision_app / provision_tenant with
        tenant_admins). Each is checked in the database; the trigger is not expected where the RPCs are used."""
        check, db = "tenant_trigger", self.container("db")
        mdir = self.p["migrations_dir"]
        try:
            names = sorted(n for n in os.listdir(mdir) if n.endswith(".sql"))
        except OSError as exc:
            return [result(check, SKIPPED, f"cannot list {mdir}: {exc.strerror}.")]
        owners = self._tenancy_owners(mdir, names)
        rpcs = [r for r in PROVISIONING_RPCS if r in owners]
        if "handle_new_user_tenancy" not in owners and not rpcs:
            return [result(check, FAIL, f"no migration in {mdir} creates a tenant for a new user: neither the "
                           "signup trigger's handle_new_user_tenancy() nor a provisioning RPC (provision_app, "
                           "provision_tenant).",
                           "this release predates tenancy: move to a newer release (upgrade.yml), or point "
                           "paycraft_migrations_dir at the release's migrations if they live elsewhere.")]
        if not self.running(self.inspect(db)):
            return [result(check, SKIPPED, f"{db} is not running (see the postgres check).")]
        ledger = self.p["ledger"]
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$", ledger):
            return [result(check, SKIPPED, f"ledger name {ledger!r} is not a plain identifier.")]
        if "handle_new_user_tenancy" in owners:
            return [self._tenant_trigger(check, db, ledger, owners["handle_new_user_tenancy"])]
        return [self._tenant_rpcs(check, db, ledger, owners, rpcs)]

    def _tenant_rpcs(self, check, db, ledger, owners, rpcs):
        wanted = sorted({owners[o] for o in (*rpcs, "tenant_admins") if o in owners})
        versions = ", ".join(f"'{v}'" for v in wanted if re.match(r"^[A-Za-z0-9_.-]+$", v))
        columns = [f"(SELECT coalesce(string_agg(version, ','), '') FROM {ledger} "
                   f"WHERE version IN ({versions or 'NULL'}))",
                   "(to_regclass('public.tenant_admins') IS NOT NULL)::int",
                   "(SELECT count(*) FROM pg_roles WHERE rolname = 'authenticated')"]
        for rpc in rpcs:
            proc = ("FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    f"WHERE n.nspname = 'public' AND p.proname = '{rpc}'")
            columns += [f"(SELECT count(*) {proc})",
                        f"(SELECT count(*) {proc} AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') "
                        "AND has_function_privilege('authenticated', p.oid, 'EXECUTE'))"]
        ok, out = self.psql("SELECT " + ", ".join(columns))
        if not ok:
            return result(check, FAIL, f"could not read {ledger} in {db}: {redact(out, self.secrets)[:200]}.",
                          "./migrations-bootstrap.sh (or site.yml --tags migrations) creates the ledger.")
        try:
            applied, *numbers = out.split("|")
            values = [int(x) for x in numbers]
            admins = values[0]
            found = {rpc: (values[2 + 2 * i], values[3 + 2 * i]) for i, rpc in enumerate(rpcs)}
        except (ValueError, IndexError):
            return result(check, FAIL, f"unexpected answer from {db}: {out[:200]!r}.", "")
        how = " and ".join(f"{r}()" for r in rpcs)
        missing = [f"{r}()" for r in rpcs if not found[r][0]] + ([] if admins else ["the table tenant_admins"])
        unapplied = [v for v in wanted if v not in set(applied.split(","))]
        if missing or unapplied:
            what = "; ".join(([f"{', '.join(missing)} missing in {db}"] if missing else [])
                             + ([f"{', '.join(unapplied)} not in {ledger}"] if unapplied else []))
            return result(check, FAIL,
                          f"this release makes tenants through {how} (the dashboard calls them after sign-up; "
                          f"migrations {', '.join(wanted)}), but {what}.",
                          "re-run ./migrations-bootstrap.sh (or site.yml --tags migrations): it applies them; then "
                          f"check: docker exec {db} psql -U postgres -d postgres -c "
                          f"\"SELECT version FROM {ledger} ORDER BY version;\"")
        refused = [r for r in rpcs if not found[r][1]]
        if refused:
            grants = "; ".join(f"GRANT EXECUTE ON FUNCTION public.{r} TO authenticated" for r in refused)
            verb = "exists" if len(refused) == 1 else "exist"
            return result(check, FAIL,
                          f"{', '.join(f'{r}()' for r in refused)} {verb} in {db} "
                          "but the role authenticated may not execute it: a signed-in user gets no tenant.",
                          f"docker exec {db} psql -U postgres -d postgres -c \"{grants};\" (its migration grants it: "
                          "a later change revoked it).")
        return result(check, OK, f"this release makes tenants through {how} (migrations {', '.join(wanted)} in "
                      f"{ledger}); each exists, the role authenticated may execute it, and tenant_admins exists. "
                      "No signup trigger is expected: the runbook's entry about one does not apply to this release.")

    def _tenant_trigger(self, check, db, ledger, owner):
        ok, out = self.psql(
            f"SELECT (SELECT count(*) FROM {ledger} WHERE version = '{owner}'), "
            "(SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE p.proname = 'handle_new_user_tenancy' AND NOT t.tgisinternal "
            "AND t.tgrelid = to_regclass('auth.users') AND t.tgenabled <> 'D')")
        if not ok:
            return result(check, FAIL, f"could not read {ledger} in {db}: {redact(out, self.secrets)[:200]}.",
                          "./migrations-bootstrap.sh (or site.yml --tags migrations) creates the ledger.")
        try:
            in_ledger, triggers = (int(x) for x in out.split("|"))
        except ValueError:
            return result(check, FAIL, f"unexpected answer from {db}: {out[:200]!r}.", "")
        if in_ledger and triggers:
            return result(check, OK, f"{owner} is in {ledger} and auth.users has its trigger on "
                          "handle_new_user_tenancy().")
        if not in_ledger:
            trig = "" if triggers else "; auth.users has no trigger calling handle_new_user_tenancy() either"
            return result(check, FAIL, f"{owner} is not in {ledger}{trig}.",
                          "re-run ./migrations-bootstrap.sh (or site.yml --tags migrations): it applies it.")
        return result(check, FAIL,
                      f"{owner} is in {ledger}, but auth.users has no enabled trigger calling "
                      "handle_new_user_tenancy(): it was dropped after the migration ran.",
                      f"delete its ledger row (docker exec {db} psql -U postgres -c \"DELETE FROM {ledger} WHERE "
                      f"version = '{owner}'\"), then re-run ./migrations-bootstrap.sh.")

    # ---------------------------------------------------------------- all
    def run_checks(self, checks=CHECKS) -> list[dict]:
        results = []
        for name in CHECKS:
            if name not in checks:
                continue
            try:
                results.extend(getattr(self, f"check_{name}")())
            except Exception as exc:  # one broken check must not hide the others' findings
                results.append(result(name, FAIL, f"the check itself failed: {exc.__class__.__name__}: "
                                      f"{redact(str(exc), self.secrets)}", "report this as a bug of paycraft_doctor."))
        return results


def npm_install_processes(top_output: str) -> list[tuple[int, str]]:
    """``docker top NAME -o pid,args`` -> [(pid, args)] of processes that are npm install / ci."""
    found = []
    for row in top_output.splitlines()[1:]:
        pid, _, args = row.strip().partition(" ")
        args = args.strip()
        if pid.isdigit() and NPM_INSTALL_RE.match(args):
            found.append((int(pid), args))
    return found


def summary(results: list[dict]) -> str:
    counts = {s: sum(1 for r in results if r["status"] == s) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checks ran"


def validate(params: dict) -> list[str]:
    errors = []
    unknown = [c for c in params.get("checks") or [] if c not in CHECKS]
    if unknown:
        errors.append(f"unknown checks {unknown}: choose from {list(CHECKS)}")
    if (params.get("npm_install_limit") or NPM_INSTALL_LIMIT) <= 0:
        errors.append("npm_install_limit must be a positive number of seconds")
    return errors

