# -*- coding: utf-8 -*-
# Copyright: (c) 2026, paycraft.selfhost contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # PostgreSQL connection options shared by the paycraft.selfhost modules that log in to the database
    # (paycraft_migrate, paycraft_converged); the code is module_utils/_postgres.py.
    # Use with: extends_documentation_fragment: [paycraft.selfhost.postgres]
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server.
      - Ignored when O(login_unix_socket) is set.
    type: str
    default: 127.0.0.1
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
      - When empty, C(PAYCRAFT_DB_PASSWORD) of O(env_file) on the managed host, then the environment variables
        E(PAYCRAFT_DB_PASSWORD) and E(PGPASSWORD) of the module's process.
      - Passed to the driver as a keyword argument, never on a command line; never logged.
      - Prefer O(env_file), so that the secret never passes through the controller or a task result.
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
  env_file:
    description:
      - The env file on the managed host (the config role's C(/etc/paycraft/paycraft.env)); its
        C(PAYCRAFT_DB_PASSWORD) is the password when O(login_password) is empty. It is read on the host.
    type: path
requirements:
  - psycopg2 (or psycopg2-binary) on the managed host's Python
"""
