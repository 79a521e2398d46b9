"""Run the paycraft_migrate engine in its own process (stress tests and benchmarks).

Usage: python run_engine.py MIGRATIONS_DIR [lock_timeout] [rerun]   (rerun: rerun_interrupted=True)
Connection from PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD (never argv).
Prints the result as one JSON line; exit 0 on success, 1 with the error on stderr.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    sys.path.insert(0, os.environ["PAYCRAFT_COLLECTIONS_ROOT"])
    from ansible_collections.paycraft.selfhost.plugins.module_utils import migrate

    params = {
        "host": os.environ["PGHOST"],
        "port": int(os.environ["PGPORT"]),
        "user": os.environ["PGUSER"],
        "dbname": os.environ["PGDATABASE"],
        "password": os.environ.get("PGPASSWORD"),
    }
    lock_timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60
    try:
        rerun = len(sys.argv) > 3 and sys.argv[3] == "rerun"
        res = migrate.run(params, sys.argv[1], lock_timeout=lock_timeout, rerun_interrupted=rerun)
    except migrate.MigrateError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(json.dumps(res.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
