-- Row level security: a signed-in user sees the rows of the tenants it is a
-- member of; owners and admins may change them. service_role bypasses RLS.
BEGIN;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenants', 'tenant_members', 'api_keys', 'products', 'providers', 'paywall'] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
  END LOOP;
END;
$$;

CREATE POLICY tenants_select_member ON public.tenants
  FOR SELECT TO authenticated USING (public.is_tenant_member(id));
CREATE POLICY tenants_update_admin ON public.tenants
  FOR UPDATE TO authenticated
  USING (public.is_tenant_member(id, ARRAY['owner', 'admin']))
  WITH CHECK (public.is_tenant_member(id, ARRAY['owner', 'admin']));

CREATE POLICY tenant_members_select_member ON public.tenant_members
  FOR SELECT TO authenticated USING (public.is_tenant_member(tenant_id));
CREATE POLICY tenant_members_manage_owner ON public.tenant_members
  FOR ALL TO authenticated
  USING (public.is_tenant_member(tenant_id, ARRAY['owner']))
  WITH CHECK (public.is_tenant_member(tenant_id, ARRAY['owner']));

CREATE POLICY api_keys_select_member ON public.api_keys
  FOR SELECT TO authenticated USING (public.is_tenant_member(tenant_id));
CREATE POLICY api_keys_manage_admin ON public.api_keys
  FOR ALL TO authenticated
  USING (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']))
  WITH CHECK (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']));

CREATE POLICY products_select_member ON public.products
  FOR SELECT TO authenticated USING (public.is_tenant_member(tenant_id));
CREATE POLICY products_manage_admin ON public.products
  FOR ALL TO authenticated
  USING (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']))
  WITH CHECK (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']));

CREATE POLICY providers_select_member ON public.providers
  FOR SELECT TO authenticated USING (public.is_tenant_member(tenant_id));
CREATE POLICY providers_manage_admin ON public.providers
  FOR ALL TO authenticated
  USING (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']))
  WITH CHECK (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']));

CREATE POLICY paywall_select_member ON public.paywall
  FOR SELECT TO authenticated USING (public.is_tenant_member(tenant_id));
CREATE POLICY paywall_manage_admin ON public.paywall
  FOR ALL TO authenticated
  USING (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']))
  WITH CHECK (public.is_tenant_member(tenant_id, ARRAY['owner', 'admin']));

COMMIT;
