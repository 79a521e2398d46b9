-- A tenant's admins read their tenant's row, keys included (what the
-- dashboard's settings page shows). PayCraft's 040_tenants_rls_select_policy.sql.
DROP POLICY IF EXISTS "tenants_admin_select" ON public.tenants;
CREATE POLICY "tenants_admin_select" ON public.tenants
  FOR SELECT
  USING (id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid()));
