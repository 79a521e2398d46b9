-- SDK key -> tenant id, for the functions (config calls it with the service
-- role key). PayCraft defines it in 015_add_tenant_id.sql: same name,
-- argument, result, NULL for an empty key, an exception for an unknown key or
-- a tenant that is not active, EXECUTE granted to anon and authenticated.
CREATE OR REPLACE FUNCTION public.resolve_tenant(p_api_key text)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = public
AS $$
DECLARE
  v_tenant uuid;
BEGIN
  IF coalesce(p_api_key, '') = '' THEN
    RETURN NULL;  -- no key: single-tenant (self-hosted) mode
  END IF;

  SELECT t.id
    INTO v_tenant
    FROM tenants t
   WHERE p_api_key IN (t.api_key_test, t.api_key_live)
     AND t.status = 'active'
   LIMIT 1;

  IF v_tenant IS NULL THEN
    RAISE EXCEPTION 'Invalid or inactive API key';
  END IF;
  RETURN v_tenant;
END;
$$;

GRANT EXECUTE ON FUNCTION public.resolve_tenant(text) TO anon, authenticated;
