-- One account, many apps (PayCraft's 048_multi_app_tenant_admins.sql): the
-- signed-in user creates a tenant per app with provision_app and becomes its
-- owner; tenant_admins is unique per (tenant, user) only.

-- A new tenant owned by the caller (auth.uid()), named p_app_name:
-- {tenant_id, name, api_key_test, api_key_live, webhook_url}.
CREATE OR REPLACE FUNCTION public.provision_app(p_app_name text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, extensions
AS $$
DECLARE
  v_user   uuid := auth.uid();
  v_tenant tenants%ROWTYPE;
BEGIN
  IF v_user IS NULL THEN
    RAISE EXCEPTION 'unauthenticated';
  END IF;

  INSERT INTO tenants (name, api_key_test, api_key_live, webhook_secret_test, webhook_secret_live,
                       owner_email, plan, subscriber_limit)
  SELECT p_app_name,
         'pk_test_' || encode(gen_random_bytes(24), 'hex'),
         'pk_live_' || encode(gen_random_bytes(24), 'hex'),
         'whsec_test_' || encode(gen_random_bytes(24), 'hex'),
         'whsec_live_' || encode(gen_random_bytes(24), 'hex'),
         u.email, 'free', 100
    FROM auth.users u
   WHERE u.id = v_user
  RETURNING * INTO v_tenant;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unauthenticated';
  END IF;

  INSERT INTO tenant_admins (tenant_id, user_id, role) VALUES (v_tenant.id, v_user, 'owner');

  RETURN jsonb_build_object(
    'tenant_id', v_tenant.id,
    'name', v_tenant.name,
    'api_key_test', v_tenant.api_key_test,
    'api_key_live', v_tenant.api_key_live,
    'webhook_url', '/functions/v1/stripe-webhook/' || v_tenant.id
  );
END;
$$;

GRANT EXECUTE ON FUNCTION public.provision_app(text) TO authenticated;

-- The caller's tenants and its role in each.
CREATE OR REPLACE FUNCTION public.tenant_admins_list_for_user()
RETURNS TABLE (tenant_id uuid, role text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = public
AS $$
  SELECT a.tenant_id, a.role FROM tenant_admins a WHERE a.user_id = auth.uid();
$$;

GRANT EXECUTE ON FUNCTION public.tenant_admins_list_for_user() TO authenticated;
