-- Dashboard RPCs for /settings/api-keys: create and revoke keys of a tenant
-- the caller administers.
BEGIN;

CREATE OR REPLACE FUNCTION public.create_api_key(p_tenant uuid, p_mode text DEFAULT 'test', p_label text DEFAULT '')
RETURNS public.api_keys
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_row public.api_keys;
BEGIN
  IF NOT public.is_tenant_member(p_tenant, ARRAY['owner', 'admin']) THEN
    RAISE EXCEPTION 'not an owner or admin of tenant %', p_tenant USING ERRCODE = '42501';
  END IF;
  INSERT INTO public.api_keys (tenant_id, key, mode, label)
  VALUES (p_tenant, public.generate_api_key(p_mode), p_mode, coalesce(p_label, ''))
  RETURNING * INTO v_row;
  RETURN v_row;
END;
$$;

CREATE OR REPLACE FUNCTION public.revoke_api_key(p_key_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_tenant uuid;
BEGIN
  SELECT tenant_id INTO v_tenant FROM public.api_keys WHERE id = p_key_id;
  IF v_tenant IS NULL OR NOT public.is_tenant_member(v_tenant, ARRAY['owner', 'admin']) THEN
    RAISE EXCEPTION 'no such API key' USING ERRCODE = '42501';
  END IF;
  UPDATE public.api_keys SET revoked_at = now() WHERE id = p_key_id AND revoked_at IS NULL;
END;
$$;

REVOKE ALL ON FUNCTION public.create_api_key(uuid, text, text) FROM PUBLIC, anon;
REVOKE ALL ON FUNCTION public.revoke_api_key(uuid) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.create_api_key(uuid, text, text) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.revoke_api_key(uuid) TO authenticated, service_role;

COMMIT;
