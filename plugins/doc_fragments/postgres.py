# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # PostgreSQL connection options shared by the paycraft.selfhost database modules.
    # Use with: extends_documentation_fragment: [paycraft.selfhost.postgres]
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server.
      - Ignored when O(login_unix_socket) is set.
    type: str
    default: localhost
    aliases: [host]
  login_port:
    description:
      - TCP port of the PostgreSQL server (PayCraft publishes its database on C(54322)).
    type: int
    default: 54322
    aliases: [port]
  login_user:
    description:
      - Role to connect as.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user); runbook section 3 C(PAYCRAFT_DB_PASSWORD).
      - Falls back to the environment variables E(PAYCRAFT_DB_PASSWORD), then E(PGPASSWORD).
      - Passed to the driver as a keyword argument, never on a command line; never logged.
    type: str
    aliases: [password]
  login_db:
    description:
      - Database to connect to.
    type: str
    default: postgres
    aliases: [db, dbname]
  login_unix_socket:
    description:
      - Directory of the server's Unix domain socket; when set, it is used instead of O(login_host).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection before failing.
    type: int
    default: 10
requirements:
  - psycopg2 (or psycopg2-binary) on the managed host's Python
"""
