-- Grants for the Supabase API roles. RLS (021) decides which rows; these
-- decide which statements. anon gets nothing on tenant data.
BEGIN;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

GRANT SELECT, INSERT, UPDATE, DELETE
  ON public.tenants, public.tenant_members, public.api_keys,
     public.products, public.providers, public.paywall
  TO authenticated, service_role;

ALTER DEFAULT PRIVILEGES IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO authenticated, service_role;

-- The migration ledger is not API surface.
DO $$
BEGIN
  IF to_regclass('public._paycraft_migrations') IS NOT NULL THEN
    REVOKE ALL ON TABLE public._paycraft_migrations FROM PUBLIC, anon, authenticated;
  END IF;
END;
$$;

COMMIT;
