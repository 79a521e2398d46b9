# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options and connecting, for every module of the collection that logs in.

Private (the leading underscore): the shape follows community.postgresql's
``module_utils/postgres.py`` (``postgres_common_argument_spec`` + one connect function) and its
``doc_fragments/postgres.py``; our fragment is ``paycraft.selfhost.postgres``. Used by
``paycraft_migrate``, ``paycraft_converged`` and the ``postgres`` probe of ``paycraft_smoke``.

The password's one owner is the env file on the managed host: modules read ``PAYCRAFT_DB_PASSWORD``
from ``env_file`` themselves, so no task result or fact on the controller has to carry it.
Order: ``login_password``, then ``PAYCRAFT_DB_PASSWORD`` of ``env_file``, then the environment
variables ``PAYCRAFT_DB_PASSWORD`` and ``PGPASSWORD`` of the module's process.

Pure Python (psycopg2 imported lazily); no Ansible import.
"""

from __future__ import annotations

import os

from ansible_collections.paycraft.selfhost.plugins.module_utils.envfile import EnvFile, EnvFileError

PASSWORD_KEY = "PAYCRAFT_DB_PASSWORD"  # noqa: S105 - the name of the env file key
PASSWORD_ENVIRONMENT = ("PAYCRAFT_DB_PASSWORD", "PGPASSWORD")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 54322
REDACTED = "********"


def postgres_common_argument_spec() -> dict:
    """The options of the paycraft.selfhost.postgres doc fragment (AnsibleModule argument_spec form)."""
    return dict(
        login_host=dict(type="str", default=DEFAULT_HOST, aliases=["host"]),
        login_port=dict(type="int", default=DEFAULT_PORT, aliases=["port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        login_db=dict(type="str", default="postgres", aliases=["db", "dbname"]),
        login_unix_socket=dict(type="path"),
        connect_timeout=dict(type="int", default=10),
        env_file=dict(type="path"),
    )


class PostgresError(Exception):
    """A connection that could not be made, with an operator-facing message (no secret in it)."""

    def __init__(self, message: str, reason: str = "", sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.sqlstate = sqlstate


def password_from_env_file(path: str | None) -> str | None:
    """``PAYCRAFT_DB_PASSWORD`` of the env file, or None (no path given, or no such key)."""
    if not path:
        return None
    if not os.path.exists(path):
        raise PostgresError(f"cannot read the database password from {path}: no such file (the config role "
                            "writes it: run the playbook with --tags config)")
    try:
        value = EnvFile.read(path).get(PASSWORD_KEY)
    except OSError as exc:
        raise PostgresError(f"cannot read the database password from {path}: {exc.strerror or exc}") from None
    except EnvFileError as exc:
        raise PostgresError(f"cannot read the database password from {path}: {exc}") from None
    return value or None


def connection_params(params: dict, environ=None) -> dict:
    """psycopg2 keyword arguments from the module options (the password resolved as the module doc says)."""
    environ = os.environ if environ is None else environ
    password = params.get("login_password") or password_from_env_file(params.get("env_file"))
    if not password:
        password = next((environ[k] for k in PASSWORD_ENVIRONMENT if environ.get(k)), None)
    return {
        "host": params.get("login_unix_socket") or params.get("login_host") or DEFAULT_HOST,
        "port": params.get("login_port") or DEFAULT_PORT,
        "user": params.get("login_user") or "postgres",
        "password": password,
        "dbname": params.get("login_db") or "postgres",
    }


def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0].strip() if text else ""


def redact(text: str, password: str | None) -> str:
    return text.replace(password, REDACTED) if password else text


def connect(params: dict, application_name: str, connect_timeout: int = 10, autocommit: bool = True):
    """Open a psycopg2 connection from keyword parameters (never a DSN on a command line).

    ``params`` are psycopg2 keywords (from :func:`connection_params`). Raises :class:`PostgresError`
    whose ``message`` names host, port, user and database and PostgreSQL's reason, the password
    redacted; ``sqlstate`` is the server's code when the server sent one at login.
    """
    try:
        import psycopg2
    except ImportError:
        raise PostgresError("psycopg2 is not installed on the managed host (pip install psycopg2-binary)",
                            "psycopg2 is not installed") from None
    kw = {k: v for k, v in params.items() if v not in (None, "")}
    kw.setdefault("connect_timeout", connect_timeout)
    kw["application_name"] = application_name
    try:
        conn = psycopg2.connect(**kw)
    except psycopg2.Error as exc:
        reason = redact(_first_line(exc) or "connection failed", kw.get("password"))
        where = kw.get("host", "local socket")
        raise PostgresError(
            f"could not connect to PostgreSQL at {where} port {kw.get('port', 5432)} as "
            f"{kw.get('user', '?')} (database {kw.get('dbname', '?')}): {reason}",
            reason,
            getattr(exc, "pgcode", None),
        ) from None
    conn.autocommit = autocommit
    return conn


def login_failure_kind(reason: str) -> str:
    """Classify a login failure message of libpq: ``password``, ``starting``, ``no_database``, ``other``."""
    lowered = reason.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered \
            or "authentication failed" in lowered:
        return "password"
    if "starting up" in lowered or "shutting down" in lowered or "in recovery mode" in lowered:
        return "starting"
    if "does not exist" in lowered and "database" in lowered:
        return "no_database"
    return "other"
