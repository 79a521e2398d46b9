# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotate ``PAYCRAFT_DB_PASSWORD`` or ``PAYCRAFT_JWT_SECRET`` on a running PayCraft, data intact (issue #22).

The runbook says the database password "cannot be rotated without a db reset" (section 3) and that
rotating the JWT secret "invalidates every outstanding session and SDK token" (section 3). The first is
only true of ``POSTGRES_PASSWORD``, which the image reads at initdb: the roles' passwords live in
``pg_authid`` and ``ALTER ROLE ... PASSWORD`` changes them on the running database. This library does
that, and the JWT secret's rotation, in this order:

1. **plan** (:func:`plan_db_password`, :func:`plan_jwt_secret`): which roles get the new password (the
   roles the release's services connect as, read from the compose files: ``postgres://USER:${VAR}@``
   URLs, ``POSTGRES_PASSWORD``/``POSTGRES_USER``, ``PGPASSWORD``/``PGUSER``; plus every other role whose
   password is the current one, found by checking the verifiers in ``pg_authid``), which env variables
   change, which database settings (``app.settings.jwt_secret``) and which services read them. Names only:
   this is check mode's answer.
2. **record** (state file, 0600, written atomically before anything changes): the old and new env file
   texts and the old password verifiers / settings, so a failure, or a run that dies, can be reverted.
3. **alter**: one transaction, as a superuser, with statement logging switched off for it
   (``SET LOCAL log_statement = 'none'`` ...). Passwords are sent as SCRAM-SHA-256 (or md5, as the server's
   ``password_encryption`` says) verifiers computed here, never as plain text: nothing a server log,
   ``pg_stat_statements`` or ``pg_stat_activity`` could keep would let anyone log in.
4. **verify**: a fresh TCP login per role with the new password is accepted and with the old one refused
   (the JWT: the new keys verify against the new secret, the old anon key does not, the database setting
   reads back the new value).
5. **env file**: the new values written atomically, mode and owner kept.

Any failure after step 3 puts the old verifiers, settings and env file back (:func:`revert`) before the
error is raised; the playbook calls :func:`revert` itself when a later step (recreate, smoke) fails, and
:func:`finish` (removes the state file) once the smoke test passed.

No secret ever leaves this library: plans, results and error messages hold names and statuses only, and
database error texts are scrubbed of every value in play.

Pure Python (psycopg2 through ``_postgres``); no Ansible import.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
from urllib.parse import unquote

from ansible_collections.paycraft.selfhost.plugins.module_utils import _postgres
from ansible_collections.paycraft.selfhost.plugins.module_utils import keys as keymod
from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile, write_atomic
from ansible_collections.paycraft.selfhost.plugins.module_utils.snapshot import write_json_atomic

DB_PASSWORD = "db_password"  # noqa: S105 - the name of a kind of rotation
JWT_SECRET = "jwt_secret"  # noqa: S105 - the name of a kind of rotation
KINDS = (DB_PASSWORD, JWT_SECRET)
VARIABLES = {
    DB_PASSWORD: (keymod.DB_PASSWORD,),
    JWT_SECRET: (keymod.JWT_SECRET, keymod.ANON_KEY, keymod.SERVICE_ROLE_KEY),
}
# The database settings that carry the JWT secret (supabase/postgres and the reference image set it at
# initdb from JWT_SECRET: ALTER DATABASE postgres SET "app.settings.jwt_secret").
JWT_SETTINGS = ("app.settings.jwt_secret",)
APPLICATION = "paycraft_rotate"
STATE_VERSION = 1
REDACTED = "********"

# ${VAR}, ${VAR:-x}, ${VAR:?x}, $VAR; "$$" is compose's escaped dollar
_REF_RE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
# scheme://user:${VAR}@host (user may be percent-encoded)
_URL_USER_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^:/@\s]+):\$\{?([A-Za-z_][A-Za-z0-9_]*)[^@]*@")
# VAR_PASSWORD -> VAR_USER (the images' conventions), and the user when none is set
_PASSWORD_USER_KEYS = {"POSTGRES_PASSWORD": ("POSTGRES_USER", "postgres"), "PGPASSWORD": ("PGUSER", "postgres")}

ACCEPTED, REFUSED, NOT_ENFORCED = "accepted", "refused", "not_enforced"


class RotateError(Exception):
    """Something the operator has to act on. The message names what and what next, never a value."""


# --- the compose files: who reads what -------------------------------------------------------------------

def _services(compose_docs) -> dict:
    """``{service: [its definition in each file]}`` in first-seen order (later files override, as compose)."""
    out: dict = {}
    for doc in compose_docs or []:
        if not isinstance(doc, dict):
            continue
        for name, service in (doc.get("services") or {}).items():
            out.setdefault(str(name), []).append(service if isinstance(service, dict) else {})
    return out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def references(text: str) -> set:
    """The variables ``text`` interpolates (compose syntax)."""
    return {a or b for a, b in _REF_RE.findall(text)}


def _environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).split("=", 1) if "=" in str(item) else (str(item), "") for item in env)
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def _depends_on(defs: list) -> list:
    out = []
    for service in defs:
        dep = service.get("depends_on") or []
        out.extend(str(d) for d in (dep.keys() if isinstance(dep, dict) else dep))
    return out


def service_order(compose_docs) -> list:
    """Every service, dependencies first (depends_on), otherwise in file order."""
    services = _services(compose_docs)
    order: list = []
    visiting: set = set()

    def visit(name: str) -> None:
        if name in order or name in visiting or name not in services:
            return
        visiting.add(name)
        for dep in _depends_on(services[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def services_reading(compose_docs, variables) -> dict:
    """``{service: sorted variables of ``variables`` it reads}``, dependencies first.

    A service with an ``env_file`` may read anything: it is listed with ``env_file`` as its reason.
    """
    wanted = set(variables)
    services = _services(compose_docs)
    out = {}
    for name in service_order(compose_docs):
        read: set = set()
        for service in services[name]:
            for text in _strings(service):
                read |= references(text) & wanted
            if service.get("env_file"):
                read.add("env_file")
        if read:
            out[name] = sorted(read)
    return out


def roles_connecting(compose_docs, variable: str = keymod.DB_PASSWORD) -> tuple[dict, list]:
    """The database roles the services log in as with ``variable``: ``({role: [services]}, unknown)``.

    ``unknown`` lists ``service: KEY`` where the variable is read but the role cannot be told (add such
    roles to ``extra_roles``).
    """
    roles: dict = {}
    unknown: list = []
    services = _services(compose_docs)
    for name in service_order(compose_docs):
        env: dict = {}
        for service in services[name]:
            env.update(_environment(service))
        found_here = False
        for key, value in env.items():
            if variable not in references(value):
                continue
            users = [unquote(u) for u, var in _URL_USER_RE.findall(value) if var == variable]
            if not users and key in _PASSWORD_USER_KEYS:
                user_key, default = _PASSWORD_USER_KEYS[key]
                user = env.get(user_key, "") or default
                users = [user] if not references(user) else []
            if users:
                for user in users:
                    roles.setdefault(user, [])
                    if name not in roles[user]:
                        roles[user].append(name)
                found_here = True
            else:
                unknown.append(f"{name}: {key}")
        # the variable in a command or elsewhere than the environment: the role cannot be told either
        if not found_here:
            for service in services[name]:
                rest = {k: v for k, v in service.items() if k != "environment"}
                if any(variable in references(t) for t in _strings(rest)):
                    unknown.append(f"{name}: (outside environment)")
                    break
    return roles, unknown


# --- password verifiers (what ALTER ROLE is given instead of the password) --------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677; ``pg_authid.rolpassword`` form).

    ASCII passwords only: SASLprep leaves them as they are (generated ones always are; the keys module
    refuses others), so this is byte for byte what the server computes.
    """
    if not password.isascii():
        raise RotateError("the new database password must be ASCII (the keys module's rule for it: "
                          "A-Z a-z 0-9 . _ ~ -)")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def md5_verifier(password: str, role: str) -> str:
    return "md5" + hashlib.md5((password + role).encode("utf-8")).hexdigest()  # noqa: S324 - PostgreSQL's md5 format


def verifier(password: str, role: str, encryption: str = "scram-sha-256", iterations: int = 4096) -> str:
    if encryption == "md5":
        return md5_verifier(password, role)
    return scram_verifier(password, iterations=iterations)


def verifier_matches(stored: str | None, password: str, role: str) -> bool:
    """Whether ``stored`` (``pg_authid.rolpassword``) is the verifier of ``password`` for ``role``."""
    if not stored or not password:
        return False
    if stored.startswith("md5"):
        return hmac.compare_digest(stored, md5_verifier(password, role))
    m = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", stored)
    if not m or not password.isascii():
        return False
    try:
        again = scram_verifier(password, base64.b64decode(m.group(2)), int(m.group(1)))
    except (ValueError, RotateError):
        return False
    return hmac.compare_digest(stored, again)


# --- the plan (names only) -------------------------------------------------------------------------------

class Plan:
    """What a rotation changes. Names only: safe to return, print and diff."""

    def __init__(self, kind: str):
        self.kind = kind
        self.roles: list = []  # roles that get the new password
        self.roles_from_compose: dict = {}  # role -> services that connect as it
        self.roles_sharing_password: list = []  # other roles whose password is the current one
        self.env_keys: list = []  # env variables whose value changes
        self.settings: list = []  # database settings that change ("database postgres: app.settings.jwt_secret")
        self.services: list = []  # services to recreate, dependencies first
        self.services_reading: dict = {}
        self.warnings: list = []
        self.errors: list = []

    def as_dict(self) -> dict:
        return {
            "secret": self.kind,
            "roles": list(self.roles),
            "roles_from_compose": {k: list(v) for k, v in self.roles_from_compose.items()},
            "roles_sharing_password": list(self.roles_sharing_password),
            "env_keys": list(self.env_keys),
            "settings": list(self.settings),
            "services": list(self.services),
            "services_reading": {k: list(v) for k, v in self.services_reading.items()},
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }

    def lines(self) -> list:
        """What would change, one line each, for check mode and the summary."""
        out = [f"secret: {VARIABLES[self.kind][0]}"]
        if self.roles:
            out.append(f"database roles whose password changes: {', '.join(self.roles)}")
        if self.roles_sharing_password:
            out.append("  of which not named by the compose files (same password as PAYCRAFT_DB_PASSWORD now): "
                       + ", ".join(self.roles_sharing_password))
        if self.settings:
            out.append(f"database settings that change: {', '.join(self.settings)}")
        out.append(f"env file variables that change: {', '.join(self.env_keys) or 'none'}")
        out.append(f"services recreated (they read them): {', '.join(self.services) or 'none'}")
        return out


def _conflicts(kind: str, current: dict, given: dict, value: str, host: str) -> list:
    """The inventory pins a value this rotation replaces: the next site.yml would undo it or refuse."""
    errors = []
    main = VARIABLES[kind][0]
    label = main.lower()
    pinned = str(given.get(main) or "").strip()
    if pinned and pinned == current.get(main, ""):
        if value:
            errors.append(
                f"{host}: {label} in the inventory holds the current {main}; after the rotation it would be stale "
                f"(the next site.yml would {'refuse to run' if kind == DB_PASSWORD else 'put the old one back'}). "
                f"Put the new value in {label} (Vault) instead of giving it to the rotation, or empty {label}."
            )
        else:
            errors.append(
                f"{host}: {label} in the inventory holds the current {main}; after the rotation it would be stale. "
                f"Put the new value in {label} (Vault) and run again (the rotation then uses it), or empty {label} "
                "(the env file on the host stays the one source of the value and the rotation generates one)."
            )
    elif pinned and value and pinned != value:
        errors.append(f"{host}: {label} in the inventory and the value given to the rotation differ; give one of them.")
    if kind == JWT_SECRET:
        for key in (keymod.ANON_KEY, keymod.SERVICE_ROLE_KEY):
            if str(given.get(key) or "").strip():
                errors.append(
                    f"{host}: {key.lower()} is set in the inventory; a new JWT secret re-signs it, so the inventory's "
                    f"key would be stale. Empty {key.lower()} (the rotation writes the new key to the env file)."
                )
    return errors


def new_value(kind: str, current: dict, given: dict | None = None, value: str | None = None,
              generate: bool = True) -> str:
    """The value the rotation sets: ``value``, else the inventory's when it differs from the current one,
    else a generated one (``""`` when ``generate`` is false: check mode)."""
    main = VARIABLES[kind][0]
    value = (value or "").strip()
    if value:
        return value
    pinned = str((given or {}).get(main) or "").strip()
    if pinned and pinned != current.get(main, ""):
        return pinned
    return keymod.GENERATORS[main]() if generate else ""


def secret_values(env: dict) -> list:
    """The values of ``env`` that must never be shown (scrubbed from any message)."""
    keys = set(keymod.SECRET_KEYS) | set(keymod.ANON_MIRRORS)
    return [v for k, v in env.items() if v and (k in keys or keymod.SECRET_LOOKING_RE.search(k))]


def _check_old_and_new(p: Plan, key: str, current: dict, new: str, given: dict | None, host: str) -> None:
    """Errors of ``p`` about the env file's value of ``key`` (there must be one) and the new value given (valid,
    not the current one, not in conflict with the inventory)."""
    old = current.get(key, "")
    if not old:
        p.errors.append(f"{host}: the env file holds no {key}: nothing to rotate (run site.yml first).")
    if new:
        problem = keymod.check_value(key, new)
        if problem:
            p.errors.append(f"{host}: the new {key} {problem}.")
        elif new == old:
            p.errors.append(f"{host}: the new {key} is the current one; give another or let one be generated.")
    p.errors.extend(_conflicts(p.kind, current, given or {}, new if new != old else "", host))


def plan_db_password(compose_docs, current: dict, role_facts: dict, *, new: str = "", given: dict | None = None,
                     extra_roles=(), include_sharing: bool = True, host: str = "localhost") -> Plan:
    """The plan of a database password rotation.

    ``role_facts``: ``{role: {"exists": bool, "login": bool, "matches_current": bool}}`` for every role of
    the cluster with a password plus every candidate (:func:`read_role_facts`).
    """
    p = Plan(DB_PASSWORD)
    _check_old_and_new(p, keymod.DB_PASSWORD, current, new, given, host)
    roles, unknown = roles_connecting(compose_docs)
    p.roles_from_compose = roles
    for ref in unknown:
        p.warnings.append(
            f"{host}: {ref} reads PAYCRAFT_DB_PASSWORD but the role it logs in as cannot be told from the compose "
            "files; name it in paycraft_rotate_extra_roles if it is a database role."
        )
    wanted = list(roles) + [r for r in extra_roles if r not in roles]
    for role in wanted:
        fact = role_facts.get(role) or {}
        if not fact.get("exists"):
            where = ", ".join(roles.get(role, [])) or "paycraft_rotate_extra_roles"
            p.errors.append(f"{host}: role {role} ({where}) does not exist in the database; fix the release or "
                            "the inventory before rotating.")
    if include_sharing:
        p.roles_sharing_password = sorted(r for r, f in role_facts.items()
                                          if f.get("matches_current") and r not in wanted)
    p.roles = wanted + p.roles_sharing_password
    for role in p.roles:
        if role_facts.get(role, {}).get("exists") and not role_facts[role].get("login"):
            p.warnings.append(f"{host}: role {role} cannot log in (NOLOGIN); its password changes, no login is tried.")
    p.env_keys = [keymod.DB_PASSWORD]
    p.services_reading = services_reading(compose_docs, [keymod.DB_PASSWORD])
    p.services = list(p.services_reading)
    return p


def jwt_env_changes(current: dict, names=None) -> list:
    """Env variables that change with the JWT secret: the section 3 ones, and every other one holding the old
    secret or an old key (the anon key's mirrors, NEXT_PUBLIC_*)."""
    names = list(names if names is not None else current)
    olds = {current.get(k) for k in VARIABLES[JWT_SECRET]} - {None, ""}
    out = [k for k in VARIABLES[JWT_SECRET]]
    out += [k for k in names if k not in out and current.get(k) in olds]
    return out


def plan_jwt_secret(compose_docs, current: dict, settings_found: list, *, new: str = "",
                    given: dict | None = None, host: str = "localhost") -> Plan:
    """The plan of a JWT secret rotation; ``settings_found``: names of the database settings that hold it."""
    p = Plan(JWT_SECRET)
    _check_old_and_new(p, keymod.JWT_SECRET, current, new, given, host)
    p.env_keys = jwt_env_changes(current)
    p.settings = list(settings_found)
    p.services_reading = services_reading(compose_docs, p.env_keys)
    p.services = list(p.services_reading)
    return p


# --- the database ----------------------------------------------------------------------------------------

def _scrub(text: str, values) -> str:
    text = str(text)
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def _query(conn, sql, params=None) -> list:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def require_superuser(conn, host: str = "localhost") -> None:
    row = _query(conn, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    if not row or not row[0][1]:
        who = row[0][0] if row else "?"
        raise RotateError(f"{host}: {who} is not a superuser: rotating passwords reads pg_authid and alters other "
                          "roles; log in as postgres (login_user).")


def read_role_facts(conn, candidates, current_password: str) -> dict:
    """``{role: {"exists", "login", "matches_current"}}`` for ``candidates`` and every role with a password.

    ``matches_current``: the stored verifier is the one of ``current_password`` (checked here, in Python;
    the verifiers never leave this function).
    """
    rows = _query(conn, "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid "
                        "WHERE rolpassword IS NOT NULL OR rolname = ANY(%s)", (list(candidates),))
    facts = {r: {"exists": False, "login": False, "matches_current": False} for r in candidates}
    for name, login, stored in rows:
        facts[name] = {"exists": True, "login": bool(login),
                       "matches_current": verifier_matches(stored, current_password, name)}
    return facts


def password_settings(conn) -> tuple[str, int]:
    encryption = _query(conn, "SHOW password_encryption")[0][0]
    iterations = _query(conn, "SELECT current_setting('scram_iterations', true)")[0][0]
    return encryption, int(iterations or 4096)


def _setting_label(database: str | None, role: str | None, name: str) -> str:
    if database and role:
        return f"role {role} in database {database}: {name}"
    if database:
        return f"database {database}: {name}"
    return f"role {role}: {name}"


def find_settings(conn, names=JWT_SETTINGS) -> list:
    """``[(database|None, role|None, name, value)]`` of the per-database / per-role settings ``names``."""
    rows = _query(conn, "SELECT d.datname, r.rolname, s.setconfig FROM pg_db_role_setting s "
                        "LEFT JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole")
    out = []
    for database, role, config in rows:
        for item in config or []:
            key, _, value = item.partition("=")
            if key in names:
                out.append((database, role, key, value))
    return sorted(out, key=lambda t: (t[0] or "", t[1] or "", t[2]))


def _set_statement(sqlmod, database, role, name, value):
    target = []
    if role:
        target.append(sqlmod.SQL("ROLE {}").format(sqlmod.Identifier(role)))
        if database:
            target.append(sqlmod.SQL("IN DATABASE {}").format(sqlmod.Identifier(database)))
    else:
        target.append(sqlmod.SQL("DATABASE {}").format(sqlmod.Identifier(database)))
    if value is None:
        return sqlmod.SQL("ALTER {} RESET {}").format(sqlmod.SQL(" ").join(target), sqlmod.Identifier(name))
    return sqlmod.SQL("ALTER {} SET {} TO {}").format(sqlmod.SQL(" ").join(target), sqlmod.Identifier(name),
                                                      sqlmod.Literal(value))


def quiet_transaction_sql(conn) -> list:
    """``SET LOCAL`` statements that keep the transaction's statements out of the server's logs."""
    out = ["SET LOCAL log_statement = 'none'", "SET LOCAL log_min_duration_statement = -1",
           "SET LOCAL log_min_error_statement = 'panic'"]
    if _query(conn, "SELECT count(*) FROM pg_settings WHERE name = 'pg_stat_statements.track_utility'")[0][0]:
        out.append("SET LOCAL pg_stat_statements.track_utility = off")
    return out


def apply_changes(conn, verifiers: dict, settings: list, scrub=()) -> None:
    """One transaction: ``ALTER ROLE r PASSWORD <verifier>`` for each role (``None``: ``PASSWORD NULL``) and
    ``ALTER DATABASE/ROLE ... SET name TO value`` for each ``(database, role, name, value)``."""
    from psycopg2 import Error as PgError
    from psycopg2 import sql as sqlmod

    was = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for statement in quiet_transaction_sql(conn):
                cur.execute(statement)
            for role, ver in verifiers.items():
                cur.execute(sqlmod.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sqlmod.Identifier(role), sqlmod.Literal(ver) if ver is not None else sqlmod.SQL("NULL")))
            for database, role, name, value in settings:
                cur.execute(_set_statement(sqlmod, database, role, name, value))
        conn.commit()
    except PgError as exc:
        conn.rollback()
        values = list(scrub) + [v for v in verifiers.values() if v] + [s[3] for s in settings if s[3]]
        reason = _scrub(getattr(exc, "pgerror", None) or exc, values).strip().splitlines()
        raise RotateError(f"the database refused the change ({reason[0] if reason else 'error'}); nothing "
                          "changed in it") from None
    finally:
        conn.autocommit = was


def try_login(params: dict, role: str, password: str, timeout: int = 10) -> str:
    """``accepted`` or ``refused`` for a fresh login of ``role`` with ``password``; RotateError otherwise."""
    try:
        conn = _postgres.connect(dict(params, user=role, password=password), APPLICATION, connect_timeout=timeout)
    except _postgres.PostgresError as exc:
        if _postgres.login_failure_kind(exc.reason) == "password":
            return REFUSED
        raise RotateError(_scrub(exc.message, [password])) from None
    conn.close()
    return ACCEPTED


def verify_passwords(params: dict, roles, new: str, old: str, timeout: int = 10) -> tuple[dict, list]:
    """Per role ``{"new": accepted|..., "old": refused|...}`` and the problems (the new one refused, the old
    one accepted). Where a random password is accepted too, the server does not ask for one (``trust`` in
    pg_hba.conf): ``not_enforced``, a warning rather than a failure."""
    result, problems = {}, []
    for role in roles:
        got_new = try_login(params, role, new, timeout)
        got_old = try_login(params, role, old, timeout) if old else REFUSED
        if got_old == ACCEPTED and try_login(params, role, secrets.token_urlsafe(24), timeout) == ACCEPTED:
            result[role] = {"new": NOT_ENFORCED, "old": NOT_ENFORCED}
            continue
        result[role] = {"new": got_new, "old": got_old}
        if got_new != ACCEPTED:
            problems.append(f"role {role}: the new password is refused")
        if got_old != REFUSED:
            problems.append(f"role {role}: the old password is still accepted")
    return result, problems


def verify_jwt(values: dict, old: dict, now: int | None = None) -> tuple[dict, list]:
    """The new keys verify against the new secret and the old anon / service keys do not."""
    secret = values[keymod.JWT_SECRET]
    result, problems = {}, []
    for key, role in keymod.JWT_ROLES.items():
        status, _ = keymod.verify_role_key(values[key], secret, role, now)
        result[key] = status
        if status != keymod.OK:
            problems.append(f"the new {key} does not verify against the new secret ({status})")
        if old.get(key):
            old_status, _ = keymod.verify_role_key(old[key], secret, role, now)
            result[f"old {key}"] = "refused" if old_status != keymod.OK else "accepted"
            if old_status == keymod.OK:
                problems.append(f"the old {key} still verifies against the new secret")
    return result, problems


# --- the state file (the record a revert reads) -----------------------------------------------------------

def default_state_file(env_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(env_file)), "rotate.json")


def read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RotateError(f"the rotation record {path} cannot be read ({exc.__class__.__name__}); look at it, "
                          "then move it aside") from None
    return data if isinstance(data, dict) else None


def describe_state(state: dict) -> str:
    return (f"a {state.get('kind', '?')} rotation started at {state.get('started_at', '?')} "
            f"(status {state.get('status', '?')})")


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _write_env(path: str, text: str) -> None:
    """Write the env file atomically with its current mode and owner."""
    st = os.stat(path)
    write_atomic(path, text, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)


# --- the operations ----------------------------------------------------------------------------------------

class Outcome:
    """What a rotation or a revert did; names and statuses only."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.changed = False
        self.verification: dict = {}
        self.reverted = False
        self.messages: list = []

    def as_dict(self) -> dict:
        return {"changed": self.changed, "plan": self.plan.as_dict(), "verification": self.verification,
                "reverted": self.reverted, "messages": list(self.messages)}


def _admin_params(params: dict, password: str) -> dict:
    return dict(params, password=password)


def rotate(kind: str, env_file: str, params: dict, compose_docs, *, state_file: str | None = None,
           value: str = "", given: dict | None = None, extra_roles=(), include_sharing: bool = True,
           jwt_settings=JWT_SETTINGS, issuer: str = keymod.DEFAULT_ISSUER,
           expiry_days: int = keymod.DEFAULT_EXPIRY_DAYS, check: bool = False, host: str = "localhost",
           timeout: int = 10, now: int | None = None) -> Outcome:
    """Plan (``check``), or rotate ``kind`` and verify; any failure after the change reverts it, then raises.

    ``params``: psycopg2 keywords of the admin login (superuser); its password, when empty, is the env file's
    current ``PAYCRAFT_DB_PASSWORD``.
    """
    if kind not in KINDS:
        raise RotateError(f"{host}: unknown secret {kind!r}; expected one of {', '.join(KINDS)}")
    state_file = state_file or default_state_file(env_file)
    pending = read_state(state_file)
    if pending is not None:
        raise RotateError(
            f"{host}: {state_file} records {describe_state(pending)} that did not finish. Nothing was changed. "
            "Put the old values back first: run rotate.yml again with -e paycraft_rotate_revert=true."
        )
    if not os.path.exists(env_file):
        raise RotateError(f"{host}: the env file {env_file} does not exist: nothing to rotate (run site.yml first).")
    env = EnvFile.read(env_file)
    current = env.as_dict()
    old_password = current.get(keymod.DB_PASSWORD, "")
    admin = _admin_params(params, params.get("password") or old_password)
    values_in_play = secret_values(current)
    try:
        conn = _postgres.connect(admin, APPLICATION, connect_timeout=timeout, autocommit=True)
    except _postgres.PostgresError as exc:
        raise RotateError(f"{host}: {_scrub(exc.message, values_in_play)}; nothing was changed") from None
    try:
        require_superuser(conn, host)
        new = new_value(kind, current, given, value, generate=not check)
        if kind == DB_PASSWORD:
            candidates = list(roles_connecting(compose_docs)[0]) + list(extra_roles)
            facts = read_role_facts(conn, candidates, old_password)
            plan = plan_db_password(compose_docs, current, facts, new=new, given=given, extra_roles=extra_roles,
                                    include_sharing=include_sharing, host=host)
        else:
            found = find_settings(conn, jwt_settings)
            plan = plan_jwt_secret(compose_docs, current, [_setting_label(d, r, n) for d, r, n, _v in found],
                                   new=new, given=given, host=host)
        outcome = Outcome(plan)
        if plan.errors:
            raise RotateError("\n".join([*plan.errors, "Nothing was changed."]))
        if check:
            outcome.changed = True
            outcome.messages = ["check mode: " + line for line in plan.lines()]
            return outcome
        if kind == DB_PASSWORD:
            _rotate_db_password(conn, env, current, new, plan, outcome, env_file, state_file, admin, host, timeout)
        else:
            _rotate_jwt(conn, env, current, new, plan, outcome, env_file, state_file, found, issuer, expiry_days,
                        host, now)
        return outcome
    finally:
        conn.close()


def _record(state_file: str, data: dict) -> None:
    write_json_atomic(state_file, data, mode=0o600)


def _rotate_db_password(conn, env, current, new, plan, outcome, env_file, state_file, admin, host, timeout):
    old = current.get(keymod.DB_PASSWORD, "")
    encryption, iterations = password_settings(conn)
    old_verifiers = {r: v for r, v in _query(conn, "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                                              (plan.roles,))}
    new_verifiers = {r: verifier(new, r, encryption, iterations) for r in plan.roles}
    new_env = env.copy()
    new_env.set(keymod.DB_PASSWORD, new)
    old_text = _read_text(env_file)
    _record(state_file, {"version": STATE_VERSION, "kind": DB_PASSWORD, "status": "started", "host": host,
                         "started_at": _now_iso(), "env_file": env_file, "old_env": old_text,
                         "new_env": new_env.render(), "roles": plan.roles, "old_verifiers": old_verifiers,
                         "settings": [], "services": plan.services})
    scrub = [old, new, *old_verifiers.values(), *new_verifiers.values()]
    apply_changes(conn, new_verifiers, [], scrub=scrub)
    outcome.changed = True
    try:
        login_roles = [r for r in plan.roles if _can_login(conn, r)]
        verification, problems = verify_passwords(admin, login_roles, new, old, timeout)
        outcome.verification = verification
        if problems:
            raise RotateError("verification failed: " + "; ".join(problems))
        _write_env(env_file, new_env.render())
        _record(state_file, dict(read_state(state_file) or {}, status="applied", applied_at=_now_iso()))
    except BaseException as exc:
        reason = _scrub(exc, scrub) if isinstance(exc, (RotateError, OSError)) else exc.__class__.__name__
        _put_back(conn, old_verifiers, [], env_file, old_text, scrub)
        _drop(state_file)
        outcome.reverted = True
        raise RotateError(
            f"{host}: the PAYCRAFT_DB_PASSWORD rotation failed after ALTER ROLE ({reason}). The old password was "
            f"put back on {', '.join(plan.roles)} and {env_file} is as it was; the services were not touched. "
            "Next: fix the cause, then run rotate.yml again."
        ) from None
    outcome.messages = [
        f"PAYCRAFT_DB_PASSWORD rotated on {host}: roles {', '.join(plan.roles)}; {env_file} written.",
        f"Next: recreate {', '.join(plan.services) or 'no service'} (they read it), then smoke.",
    ]


def _rotate_jwt(conn, env, current, new, plan, outcome, env_file, state_file, found, issuer, expiry_days, host, now):
    new_values = {keymod.JWT_SECRET: new}
    for key, role in keymod.JWT_ROLES.items():
        new_values[key] = keymod.make_role_key(role, new, issuer, expiry_days, now)
    by_old = {current.get(k): new_values[k] for k in VARIABLES[JWT_SECRET] if current.get(k)}
    new_env = env.copy()
    for key in plan.env_keys:
        new_env.set(key, new_values.get(key) or by_old.get(current.get(key), ""))
    old_text = _read_text(env_file)
    old_settings = [(d, r, n, v) for d, r, n, v in found]
    new_settings = [(d, r, n, new) for d, r, n, _v in found]
    _record(state_file, {"version": STATE_VERSION, "kind": JWT_SECRET, "status": "started", "host": host,
                         "started_at": _now_iso(), "env_file": env_file, "old_env": old_text,
                         "new_env": new_env.render(), "roles": [], "old_verifiers": {},
                         "settings": [list(s) for s in old_settings], "services": plan.services})
    scrub = [*secret_values(current), *new_values.values()]
    if new_settings:
        apply_changes(conn, {}, new_settings, scrub=scrub)
        outcome.changed = True
    try:
        verification, problems = verify_jwt(new_values, current, now)
        readback = {(d, r, n): v for d, r, n, v in find_settings(conn, [s[2] for s in found])}
        for d, r, n, _v in found:
            ok = hmac.compare_digest(readback.get((d, r, n), ""), new)
            verification[_setting_label(d, r, n)] = "updated" if ok else "not updated"
            if not ok:
                problems.append(f"{_setting_label(d, r, n)} does not hold the new secret")
        outcome.verification = verification
        if problems:
            raise RotateError("verification failed: " + "; ".join(problems))
        _write_env(env_file, new_env.render())
        outcome.changed = True
        _record(state_file, dict(read_state(state_file) or {}, status="applied", applied_at=_now_iso()))
    except BaseException as exc:
        reason = _scrub(exc, scrub) if isinstance(exc, (RotateError, OSError)) else exc.__class__.__name__
        _put_back(conn, {}, old_settings, env_file, old_text, scrub)
        _drop(state_file)
        outcome.reverted = True
        raise RotateError(
            f"{host}: the PAYCRAFT_JWT_SECRET rotation failed ({reason}). The old secret was put back "
            f"({', '.join(plan.settings) or 'no database setting'}; {env_file} as it was); the services were not "
            "touched. Next: fix the cause, then run rotate.yml again."
        ) from None
    outcome.messages = [
        f"PAYCRAFT_JWT_SECRET rotated on {host}: new secret, anon and service role keys re-signed; {env_file} "
        "written.",
        f"Next: recreate {', '.join(plan.services) or 'no service'} (they read them), then smoke with the new anon "
        "key.",
    ]


def _can_login(conn, role: str) -> bool:
    row = _query(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
    return bool(row and row[0][0])


def _put_back(conn, old_verifiers: dict, old_settings: list, env_file: str, old_text: str, scrub) -> None:
    if old_verifiers or old_settings:
        apply_changes(conn, old_verifiers, old_settings, scrub=scrub)
    if _read_text(env_file) != old_text:
        _write_env(env_file, old_text)


def _drop(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def revert(env_file: str, params: dict, *, state_file: str | None = None, host: str = "localhost",
           timeout: int = 10, check: bool = False) -> Outcome:
    """Put back what the recorded rotation changed: the roles' old verifiers, the old settings, the old env
    file; then check the old password logs in again. Logs in as the admin with whichever password works
    (the new one, the old one)."""
    state_file = state_file or default_state_file(env_file)
    state = read_state(state_file)
    plan = Plan((state or {}).get("kind", DB_PASSWORD))
    outcome = Outcome(plan)
    if state is None:
        outcome.messages = [f"{host}: no rotation is recorded in {state_file}: nothing to revert."]
        return outcome
    plan.roles = list(state.get("roles") or [])
    plan.services = list(state.get("services") or [])
    plan.settings = [_setting_label(d, r, n) for d, r, n, _v in state.get("settings") or []]
    old_env = EnvFile.parse(state["old_env"]).as_dict()
    new_env = EnvFile.parse(state["new_env"]).as_dict()
    plan.env_keys = [k for k in new_env if new_env.get(k) != old_env.get(k)]
    if check:
        outcome.changed = True
        outcome.messages = [f"check mode: would put back {describe_state(state)}", *plan.lines()]
        return outcome
    old_pw, new_pw = old_env.get(keymod.DB_PASSWORD, ""), new_env.get(keymod.DB_PASSWORD, "")
    scrub = [*secret_values(old_env), *secret_values(new_env), *(state.get("old_verifiers") or {}).values()]
    conn, last = None, None
    for password in [p for p in (params.get("password"), new_pw, old_pw) if p]:
        try:
            conn = _postgres.connect(_admin_params(params, password), APPLICATION, connect_timeout=timeout)
            break
        except _postgres.PostgresError as exc:
            last = exc
    if conn is None:
        raise RotateError(
            f"{host}: cannot log in to put the old values back ({_scrub(last.message if last else '?', scrub)}). "
            f"{state_file} is kept. Next: docker exec -i <db container> psql -U postgres, then ALTER ROLE ... "
            "PASSWORD for the roles it names, and copy its old_env to the env file."
        )
    try:
        require_superuser(conn, host)
        settings = [tuple(s) for s in state.get("settings") or []]
        _put_back(conn, state.get("old_verifiers") or {}, settings, env_file, state["old_env"], scrub)
        outcome.changed = True
        outcome.reverted = True
        if state.get("kind") == DB_PASSWORD and old_pw:
            login_roles = [r for r in plan.roles if _can_login(conn, r)]
            verification, problems = verify_passwords(params, login_roles, old_pw, new_pw, timeout)
            outcome.verification = verification
            if problems:
                raise RotateError(f"{host}: the old values were put back but: " + "; ".join(problems)
                                  + f". {state_file} is kept.")
    finally:
        conn.close()
    _drop(state_file)
    outcome.messages = [f"{host}: put back the values before {describe_state(state)}; {env_file} restored.",
                        f"Next: recreate {', '.join(plan.services) or 'no service'} so they read them again."]
    return outcome


def finish(env_file: str, *, state_file: str | None = None, check: bool = False) -> bool:
    """The rotation is done (the smoke test passed): drop its record, which holds the old values."""
    state_file = state_file or default_state_file(env_file)
    if not os.path.exists(state_file):
        return False
    if not check:
        _drop(state_file)
    return True
