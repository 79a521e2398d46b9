"""Generate the benchmark corpora for paycraft_migrate.

* ``realistic(dest, n=70)``: PayCraft-shaped migrations - tables, plpgsql functions with ``$$`` and
  ``$tag$`` bodies, RLS policies, triggers, DO blocks, views, grants, seed data, comments and
  strings with semicolons, every 7th file wrapped in its own ``BEGIN;`` / ``COMMIT;``.
* ``synthetic(dest, n=1000)``: small one-statement migrations.

Usage: python corpus.py realistic|synthetic DEST [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROLES = """-- Supabase-style roles the policies and grants refer to (cluster-wide, idempotent)
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN; END IF;
END
$roles$;
CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;
CREATE TABLE tenants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE memberships (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id uuid NOT NULL,
  role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  PRIMARY KEY (tenant_id, user_id)
);
"""


def _entity(i: int) -> str:
    return f"entity_{i:03d}"


def _file(i: int) -> str:
    e = _entity(i)
    kind = i % 6
    if kind == 0:
        body = f"""-- {e}: table with tenancy, RLS and policies; a comment; with a semicolon
CREATE TABLE {e} (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'past_due', 'canceled')),
  amount_cents bigint NOT NULL DEFAULT 0,
  metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  note text DEFAULT E'it''s; fine\\n',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {e}_tenant_idx ON {e}(tenant_id, created_at DESC);
ALTER TABLE {e} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {e}_tenant_read ON {e} FOR SELECT TO authenticated
  USING (tenant_id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = auth.uid()));
CREATE POLICY {e}_tenant_write ON {e} FOR ALL TO authenticated
  USING (tenant_id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = auth.uid() AND m.role <> 'member'))
  WITH CHECK (tenant_id IN (SELECT m.tenant_id FROM memberships m WHERE m.user_id = auth.uid()));
GRANT SELECT, INSERT, UPDATE, DELETE ON {e} TO authenticated, service_role;
GRANT USAGE, SELECT ON SEQUENCE {e}_id_seq TO authenticated, service_role;
"""
    elif kind == 1:
        t = _entity(i - 1)
        body = f"""/* {e}: plpgsql function (SECURITY DEFINER) and an updated_at trigger.
   /* nested comment; with ; semicolons */ */
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE OR REPLACE FUNCTION {e}_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();  -- ; inside the body
  RETURN NEW;
END;
$$;
CREATE TRIGGER {e}_touch BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {e}_touch();
CREATE OR REPLACE FUNCTION {e}_total(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $fn$
DECLARE
  v_total bigint;
BEGIN
  SELECT coalesce(sum(amount_cents), 0) INTO v_total FROM {t} WHERE tenant_id = p_tenant AND status <> 'canceled';
  IF v_total < 0 THEN
    RAISE EXCEPTION 'negative total for %: %', p_tenant, v_total USING ERRCODE = '22003';
  END IF;
  RETURN v_total;
END
$fn$;
REVOKE ALL ON FUNCTION {e}_total(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {e}_total(uuid) TO authenticated, service_role;
"""
    elif kind == 2:
        t = _entity(i - 2)
        body = f"""-- {e}: a DO block that backfills conditionally, and a view
DO $do$
DECLARE
  r record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_name = '{t}' AND column_name = 'currency') THEN
    EXECUTE 'ALTER TABLE {t} ADD COLUMN currency char(3) NOT NULL DEFAULT ''USD''';
  END IF;
  FOR r IN SELECT id FROM {t} WHERE metadata ? 'legacy' LOOP
    UPDATE {t} SET metadata = metadata - 'legacy' WHERE id = r.id;
  END LOOP;
END
$do$;
CREATE OR REPLACE VIEW {e}_active WITH (security_invoker = true) AS
  SELECT id, tenant_id, amount_cents, currency FROM {t} WHERE status = 'active';
GRANT SELECT ON {e}_active TO authenticated;
COMMENT ON VIEW {e}_active IS 'active rows; tenant-scoped through RLS on {t}';
"""
    elif kind == 3:
        body = f"""-- {e}: seed data (a few thousand rows) and an SQL function
INSERT INTO tenants(name) SELECT 'tenant-{i}-' || g FROM generate_series(1, 50) g;
INSERT INTO memberships(tenant_id, user_id, role)
  SELECT t.id, gen_random_uuid(), (ARRAY['owner','admin','member'])[1 + (row_number() OVER ()) % 3]
  FROM tenants t WHERE t.name LIKE 'tenant-{i}-%';
INSERT INTO {_entity(i - 3)}(tenant_id, status, amount_cents)
  SELECT t.id, 'active', (random() * 10000)::bigint
  FROM tenants t, generate_series(1, 40) g WHERE t.name LIKE 'tenant-{i}-%';
CREATE OR REPLACE FUNCTION {e}_tenant_names(p_prefix text) RETURNS SETOF text
LANGUAGE sql STABLE AS $$ SELECT name FROM tenants WHERE name LIKE p_prefix || '%' ORDER BY 1 $$;
"""
    elif kind == 4:
        body = f"""-- {e}: enum-ish lookup table, unique constraint, audit trigger
CREATE TABLE {e} (
  code text PRIMARY KEY,
  label text NOT NULL,
  "order" int NOT NULL DEFAULT 0
);
INSERT INTO {e}(code, label, "order") VALUES ('a', 'Alpha; first', 1), ('b', 'Beta''s', 2), ('c', $t$Gamma $$ ;$t$, 3);
CREATE TABLE {e}_audit (id bigserial PRIMARY KEY, op text, row_data jsonb, at timestamptz DEFAULT now());
CREATE OR REPLACE FUNCTION {e}_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  INSERT INTO {e}_audit(op, row_data) VALUES (TG_OP, to_jsonb(coalesce(NEW, OLD)));
  RETURN coalesce(NEW, OLD);
END;
$body$;
CREATE TRIGGER {e}_audit AFTER INSERT OR UPDATE OR DELETE ON {e}
  FOR EACH ROW EXECUTE FUNCTION {e}_audit_fn();
ALTER TABLE {e} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {e}_read ON {e} FOR SELECT TO anon, authenticated USING (true);
GRANT SELECT ON {e} TO anon, authenticated;
"""
    else:
        t = _entity(i - 5)
        body = f"""-- {e}: RPC used by the edge functions (SECURITY DEFINER, jsonb result)
CREATE OR REPLACE FUNCTION {e}_summary(p_tenant uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v jsonb;
BEGIN
  SELECT jsonb_build_object(
           'tenant_id', p_tenant,
           'count', count(*),
           'sum', coalesce(sum(amount_cents), 0),
           'statuses', coalesce(jsonb_agg(DISTINCT status), '[]'::jsonb))
    INTO v
    FROM {t} WHERE tenant_id = p_tenant;
  RETURN v;
END;
$$;
GRANT EXECUTE ON FUNCTION {e}_summary(uuid) TO service_role;
CREATE INDEX IF NOT EXISTS {t}_status_idx ON {t}(status) WHERE status <> 'canceled';
"""
    if i % 7 == 0:
        body = f"BEGIN;\n\n{body}\nCOMMIT;\n"
    return body


def realistic(dest: Path, n: int = 70) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = [dest / "001_roles_and_tenancy.sql"]
    out[0].write_text(ROLES)
    for i in range(2, n + 1):
        j = i + 4  # entity numbers start at 6 (a table), so every reference points backwards to a table
        p = dest / f"{i:03d}_{_entity(j)}.sql"
        p.write_text(_file(j))
        out.append(p)
    return out


def synthetic(dest: Path, n: int = 1000) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(1, n + 1):
        p = dest / f"{i:04d}_synthetic.sql"
        p.write_text(f"-- synthetic migration {i}\nCREATE TABLE IF NOT EXISTS syn_{i:04d}(id int PRIMARY KEY);\n")
        out.append(p)
    return out


if __name__ == "__main__":
    kind, dest = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else (70 if kind == "realistic" else 1000)
    files = {"realistic": realistic, "synthetic": synthetic}[kind](dest, n)
    print(f"{len(files)} files in {dest}")
