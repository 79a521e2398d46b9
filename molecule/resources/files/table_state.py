#!/usr/bin/env python3
"""Row counts and checksums of PayCraft's business tables, read on the test host.

    table_state.py [COLUMNS_JSON]

Prints {table: {count, md5, columns}}. With COLUMNS_JSON (the "columns" of an
earlier run), each table is read through those columns only, so rows written
before an upgrade compare equal after migrations added columns. The rows of the scenario's
writer (tests/paycraft_writer.py: users writer-*@..., their tenants and products) are left
out: the writer's own check counts them. updated_at is left out: a migration that backfills
a new column touches it through the set_updated_at trigger without changing the row's data.
"""
import json
import subprocess
import sys

TABLES = ["auth.users", "public.tenants", "public.tenant_admins",
          "public.products", "public.providers", "public.paywall"]


# the writer's tenants, through the membership table of the release (tenant_members; PayCraft's tenant_admins)
WRITER_TENANTS = ("(SELECT m.tenant_id FROM public.{members} m JOIN auth.users u ON u.id = m.user_id "
                  "WHERE u.email LIKE 'writer-%')")


def psql(sql):
    return subprocess.run(["docker", "exec", "paycraft_db", "psql", "-U", "postgres", "-d", "postgres",
                           "-tAX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def main():
    wanted = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    has_members = psql("SELECT to_regclass('public.tenant_members') IS NOT NULL") == "t"
    writer_tenants = WRITER_TENANTS.format(members="tenant_members" if has_members else "tenant_admins")
    not_writer = {"auth.users": "WHERE email NOT LIKE 'writer-%'",
                  "public.tenants": f"WHERE id NOT IN {writer_tenants}"}
    out = {}
    for table in TABLES:
        schema, name = table.split(".")
        cols = (wanted.get(table) or {}).get("columns") or psql(
            "SELECT string_agg(quote_ident(column_name), ',' ORDER BY ordinal_position) "
            f"FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{name}' "
            "AND column_name <> 'updated_at'").split(",")
        row = psql(f"SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') "
                   f"FROM (SELECT {','.join(cols)} FROM {table} "
                   f"{not_writer.get(table, 'WHERE tenant_id NOT IN ' + writer_tenants)}) r")
        count, digest = row.split("|")
        out[table] = {"count": int(count), "md5": digest, "columns": cols}
    ledger = psql("SELECT string_agg(version, ',' ORDER BY version) FROM public._paycraft_migrations")
    out["_ledger"] = ledger.split(",")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
