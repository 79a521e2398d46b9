"""Benchmark a backup and its drill against pg_dump and pg_restore alone, on the same data, in the same run.

Run by hand (root, PostgreSQL 15 server binaries installed, the project's virtualenv active):

    python benchmarks/backup/bench.py [--gib 1.0] [--reps 1] [--keep-data]

It starts its own throw-away PostgreSQL 15 cluster on a free loopback port (initdb as user postgres,
like tests/conftest.py), gives a database what the db image's initdb gives
(reference/images/db/00-supabase-bootstrap.sql), applies the reference release's migrations
(reference/release/base/server/migrations), then generates data through that schema - tenants,
products, API keys, the tables' own constraints and triggers in force - until pg_database_size is at
least --gib GiB. Then, in the same run, alternating:

  baseline dump      pg_dump -Fc -d <db> -f <file>
  backup             module_utils.backup.take(): pg_dump -Fc --snapshot, the per-table rows and
                     checksums read in the same snapshot while it runs, sha256 on the way, pg_dumpall
                     --globals-only, pg_restore --list, the manifest
  baseline restore   pg_restore -d <fresh database> <file> (the database created outside the timing)
  drill              module_utils.backup.drill(): sha256 of the files, CREATE DATABASE, pg_restore, the
                     per-table checksums of the restored database, compare, DROP DATABASE

Prints each time (median of --reps), the ratios, and the issue's target (at most 1.3x).
The client tools are this machine's, called as the module calls them in a container.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PG_BIN = Path(os.environ.get("PAYCRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))
BOOTSTRAP_SQL = REPO / "reference" / "images" / "db" / "00-supabase-bootstrap.sql"
MIGRATIONS = REPO / "reference" / "release" / "base" / "server" / "migrations"
sys.path.insert(0, os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections")))

from ansible_collections.paycraft.selfhost.plugins.module_utils import backup, snapshot  # noqa: E402

GIB = 1 << 30


def _as_postgres(cmd):
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="paycraft-bench-backup-", dir="/var/tmp"))
        self.password = uuid.uuid4().hex
        self.port = free_port()

    def start(self):
        data, sock, pw = self.base / "data", self.base / "sock", self.base / "pw"
        sock.mkdir()
        pw.write_text(self.password + "\n")
        if os.getuid() == 0:
            for p in (self.base, sock, pw):
                shutil.chown(p, "postgres")
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pw),
                      "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"])
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.base / "log"), "-w", "-t", "60",
                      "-o", f"-p {self.port} -h 127.0.0.1 -k {sock} -c fsync=off -c max_wal_size=4GB", "start"])

    def stop(self):
        try:
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def env(self) -> dict:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGPASSWORD": self.password, "PGUSER": "postgres",
                "PATH": f"{PG_BIN}:{os.environ['PATH']}"}

    def run(self, argv, **kw):
        res = subprocess.run(argv, env={**os.environ, **self.env()}, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, argv))} exited {res.returncode}: {res.stderr[-2000:]}")
        return res.stdout

    def psql(self, sql, db="paycraft"):
        return self.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]).strip()


GENERATE = """
INSERT INTO public.tenants(id, name, api_key_test, api_key_live, owner_email, plan)
  SELECT md5('tenant' || ({base} + g))::uuid, 'Tenant ' || g,
         'pk_test_' || md5('test' || ({base} + g)) || md5('t2' || ({base} + g)),
         'pk_live_' || md5('live' || ({base} + g)) || md5('l2' || ({base} + g)),
         'owner' || ({base} + g) || '@bench.invalid', (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3]
  FROM generate_series(1, {tenants}) g;
INSERT INTO public.products(tenant_id, sku, name, description, price_cents, "interval", sort_order, metadata)
  SELECT md5('tenant' || ({base} + 1 + g % {tenants}))::uuid, 'sku-' || ({base} + g), 'Product ' || g,
         repeat(md5(g::text), 4) || ' ' || md5(random()::text) || ' ' || md5(random()::text),
         (g * 37) % 100000, (ARRAY['one_time', 'week', 'month', 'year'])[1 + g % 4], g % 100,
         jsonb_build_object('color', md5(random()::text), 'weight', g % 977, 'tags',
                            jsonb_build_array('a' || g % 13, 'b' || g % 7))
  FROM generate_series(1, {products}) g;
"""


def generate(cluster: Cluster, gib: float) -> tuple[int, dict]:
    """Data through the schema until the database is at least ``gib`` GiB; returns (size, row counts)."""
    batch, tenants = 400_000, 20_000
    base = 0
    while True:
        size = int(cluster.psql("SELECT pg_database_size('paycraft')"))
        if size >= gib * GIB:
            break
        t0 = time.monotonic()
        cluster.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "paycraft", "-c",
                     GENERATE.format(base=base, tenants=tenants, products=batch)])
        base += batch
        print(f"  generated to {size / GIB:.2f} GiB (+{batch} products, {tenants} tenants "
              f"in {time.monotonic() - t0:.0f} s)", flush=True)
    cluster.psql("VACUUM ANALYZE")
    size = int(cluster.psql("SELECT pg_database_size('paycraft')"))
    counts = dict(line.split("|") for line in cluster.psql(
        "SELECT 'tenants', count(*) FROM tenants UNION ALL SELECT 'products', count(*) FROM products"
        ).splitlines())
    return size, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="database size to generate, GiB (default 1.0)")
    ap.add_argument("--reps", type=int, default=1, help="runs of each method; the median is reported")
    args = ap.parse_args()
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"PostgreSQL 15 server binaries not found in {PG_BIN} (apt-get install -y postgresql-15)")

    cluster = Cluster()
    cluster.start()
    work = Path(tempfile.mkdtemp(prefix="paycraft-bench-backup-work-", dir="/var/tmp"))
    try:
        print(f"cluster 127.0.0.1:{cluster.port}, work dir {work}", flush=True)
        cluster.psql("CREATE DATABASE paycraft", db="postgres")
        cluster.run(["psql", "-X", "-q", "-d", "paycraft", "-v", "ON_ERROR_STOP=1", "-v",
                     f"pgpass={cluster.password}", "-v", "jwt_secret=", "-v", "jwt_exp=3600", "-f",
                     str(BOOTSTRAP_SQL)])
        for mig in sorted(MIGRATIONS.glob("*.sql")):
            cluster.run(["psql", "-X", "-q", "-d", "paycraft", "-v", "ON_ERROR_STOP=1", "-f", str(mig)])
        t0 = time.monotonic()
        size, counts = generate(cluster, args.gib)
        print(f"database paycraft: {size / GIB:.2f} GiB (pg_database_size), rows {counts}, "
              f"generated in {time.monotonic() - t0:.0f} s", flush=True)

        db = snapshot.Database(None, user="postgres", database="paycraft", env=cluster.env())
        times = {"baseline dump": [], "backup": [], "baseline restore": [], "drill": []}
        dump_file = work / "baseline.dump"
        for rep in range(args.reps):
            t = time.monotonic()
            cluster.run(["pg_dump", "-Fc", "-d", "paycraft", "-f", str(dump_file)])
            times["baseline dump"].append(time.monotonic() - t)

            t = time.monotonic()
            m = backup.take(str(work / "backups"), db, f"bench{rep}")
            times["backup"].append(time.monotonic() - t)

            fresh = f"baseline_{rep}"
            cluster.psql(f"CREATE DATABASE {fresh} TEMPLATE template0", db="postgres")
            t = time.monotonic()
            cluster.run(["pg_restore", "-d", fresh, str(dump_file)])
            times["baseline restore"].append(time.monotonic() - t)
            cluster.psql(f"DROP DATABASE {fresh}", db="postgres")

            t = time.monotonic()
            report = backup.drill(db, m["path"])
            times["drill"].append(time.monotonic() - t)
            if not report["passed"]:
                raise SystemExit("the drill failed:\n" + "\n".join(backup.drill_lines(report)))
            print(f"  rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
                  + f"; dump {dump_file.stat().st_size / GIB:.2f} GiB, backup {m['size'] / GIB:.2f} GiB; "
                  f"drill {report['tables_ok']}/{len(report['tables'])} tables, timings {report['timings']}; "
                  f"backup timings {m['timings']}", flush=True)
            shutil.rmtree(m["path"])
            dump_file.unlink()

        med = {k: statistics.median(v) for k, v in times.items()}
        base_total = med["baseline dump"] + med["baseline restore"]
        ours_total = med["backup"] + med["drill"]
        print()
        print(f"{'method':<40} {'seconds':>9} {'ratio':>7}")
        for label, key, ref in (("pg_dump -Fc (baseline)", "baseline dump", None),
                                ("backup (take)", "backup", "baseline dump"),
                                ("pg_restore (baseline)", "baseline restore", None),
                                ("drill", "drill", "baseline restore")):
            ratio = f"{med[key] / med[ref]:.2f}x" if ref else ""
            print(f"{label:<40} {med[key]:>9.1f} {ratio:>7}")
        print(f"{'pg_dump + pg_restore (baseline)':<40} {base_total:>9.1f}")
        print(f"{'backup + drill':<40} {ours_total:>9.1f} {ours_total / base_total:>6.2f}x")
        worst = max(med["backup"] / med["baseline dump"], med["drill"] / med["baseline restore"],
                    ours_total / base_total)
        print(f"target: at most 1.3x -> backup {med['backup'] / med['baseline dump']:.2f}x, drill "
              f"{med['drill'] / med['baseline restore']:.2f}x, together {ours_total / base_total:.2f}x: "
              f"{'MET' if worst <= 1.3 else 'NOT MET'}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
