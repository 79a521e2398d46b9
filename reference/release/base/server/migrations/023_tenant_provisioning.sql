-- Tenant provisioning and key rotation, in the shape PayCraft's dashboard
-- calls them after a signup (023_tenant_provisioning.sql, its search_path fix
-- 038 and the idempotent provision_tenant of 039): names, arguments, results,
-- key formats (pk_test_/pk_live_ + 48 hex, whsec_test_/whsec_live_ + 48 hex)
-- and grants are PayCraft's. Neither RPC checks that p_user_id is the caller:
-- PayCraft's do not either (see reference/README.md).

-- A new tenant owned by p_user_id, or the tenant p_user_id already
-- administers (a second call returns the same keys).
CREATE OR REPLACE FUNCTION public.provision_tenant(p_user_id uuid, p_app_name text, p_email text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, extensions
AS $$
DECLARE
  v_tenant tenants%ROWTYPE;
BEGIN
  SELECT t.* INTO v_tenant
    FROM tenant_admins a
    JOIN tenants t ON t.id = a.tenant_id
   WHERE a.user_id = p_user_id
   ORDER BY a.created_at
   LIMIT 1;

  IF NOT FOUND THEN
    INSERT INTO tenants (name, api_key_test, api_key_live, webhook_secret_test, webhook_secret_live,
                         owner_email, plan, subscriber_limit)
    VALUES (p_app_name,
            'pk_test_' || encode(gen_random_bytes(24), 'hex'),
            'pk_live_' || encode(gen_random_bytes(24), 'hex'),
            'whsec_test_' || encode(gen_random_bytes(24), 'hex'),
            'whsec_live_' || encode(gen_random_bytes(24), 'hex'),
            p_email, 'free', 100)
    RETURNING * INTO v_tenant;

    INSERT INTO tenant_admins (tenant_id, user_id, role) VALUES (v_tenant.id, p_user_id, 'owner');
  END IF;

  RETURN jsonb_build_object(
    'tenant_id', v_tenant.id,
    'api_key_test', v_tenant.api_key_test,
    'api_key_live', v_tenant.api_key_live,
    'webhook_url', '/functions/v1/stripe-webhook/' || v_tenant.id
  );
END;
$$;

GRANT EXECUTE ON FUNCTION public.provision_tenant(uuid, text, text) TO authenticated;

-- Replace the test or live key of the tenant p_user_id owns or administers:
-- {"new_key", "mode"}, or {"error": …} (not an owner/admin, unknown mode).
CREATE OR REPLACE FUNCTION public.rotate_api_key(p_user_id uuid, p_mode text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, extensions
AS $$
DECLARE
  v_tenant uuid;
  v_key    text;
BEGIN
  SELECT a.tenant_id INTO v_tenant
    FROM tenant_admins a
   WHERE a.user_id = p_user_id AND a.role IN ('owner', 'admin')
   ORDER BY a.created_at
   LIMIT 1;
  IF v_tenant IS NULL THEN
    RETURN jsonb_build_object('error', 'unauthorized');
  END IF;
  IF p_mode NOT IN ('test', 'live') THEN
    RETURN jsonb_build_object('error', 'invalid mode, use test or live');
  END IF;

  v_key := 'pk_' || p_mode || '_' || encode(gen_random_bytes(24), 'hex');
  IF p_mode = 'test' THEN
    UPDATE tenants SET api_key_test = v_key WHERE id = v_tenant;
  ELSE
    UPDATE tenants SET api_key_live = v_key WHERE id = v_tenant;
  END IF;
  RETURN jsonb_build_object('new_key', v_key, 'mode', p_mode);
END;
$$;

GRANT EXECUTE ON FUNCTION public.rotate_api_key(uuid, text) TO authenticated;
