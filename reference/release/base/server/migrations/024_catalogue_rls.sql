-- Row level security for products, providers and paywall: a tenant's admins
-- (any role) read its rows, owners and admins write them; the service role
-- bypasses RLS. Membership is read from tenant_admins, whose own policy shows
-- a user its rows only (PayCraft's policies use the same subquery).
BEGIN;

ALTER TABLE public.products ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.paywall ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['products', 'providers', 'paywall'] LOOP
    EXECUTE format('DROP POLICY IF EXISTS %I ON public.%I', t || '_admin_select', t);
    EXECUTE format(
      'CREATE POLICY %I ON public.%I FOR SELECT TO authenticated USING ('
      'tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid()))',
      t || '_admin_select', t);
    EXECUTE format('DROP POLICY IF EXISTS %I ON public.%I', t || '_admin_write', t);
    EXECUTE format(
      'CREATE POLICY %I ON public.%I FOR ALL TO authenticated '
      'USING (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a '
      '                      WHERE a.user_id = auth.uid() AND a.role IN (''owner'', ''admin''))) '
      'WITH CHECK (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a '
      '                      WHERE a.user_id = auth.uid() AND a.role IN (''owner'', ''admin'')))',
      t || '_admin_write', t);
  END LOOP;
END;
$$;

-- The migration ledger is not API surface.
DO $$
BEGIN
  IF to_regclass('public._paycraft_migrations') IS NOT NULL THEN
    REVOKE ALL ON TABLE public._paycraft_migrations FROM PUBLIC, anon, authenticated;
  END IF;
END;
$$;

COMMIT;
