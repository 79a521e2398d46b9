-- SuiteConfig v2: currency (tenant default and per product) and features.
CREATE OR REPLACE FUNCTION public.get_suite_config(p_api_key text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_key    public.api_keys;
  v_result jsonb;
BEGIN
  IF p_api_key IS NULL OR p_api_key !~ '^pk_(test|live)_[0-9a-f]{32}$' THEN
    RAISE EXCEPTION 'invalid_apiKey'
      USING ERRCODE = 'P0001', DETAIL = 'malformed API key',
            HINT = 'API keys look like pk_test_… or pk_live_…';
  END IF;

  SELECT * INTO v_key FROM public.api_keys k WHERE k.key = p_api_key AND k.revoked_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'invalid_apiKey' USING ERRCODE = 'P0001', DETAIL = 'unknown or revoked API key';
  END IF;

  SELECT jsonb_build_object(
           'schema_version', 2,
           'tenant_id', 'tenant-' || t.id::text,
           'mode', v_key.mode,
           'currency', t.default_currency,
           'products', coalesce((
              SELECT jsonb_agg(jsonb_build_object(
                       'id', p.id, 'sku', p.sku, 'name', p.name, 'description', p.description,
                       'price_cents', p.price_cents, 'currency', p.currency, 'interval', p."interval")
                     ORDER BY p.sort_order, p.sku)
                FROM public.products p
               WHERE p.tenant_id = t.id AND p.active), '[]'::jsonb),
           'providers', coalesce((
              SELECT jsonb_agg(jsonb_build_object('id', pr.id, 'kind', pr.kind, 'config', pr.config)
                     ORDER BY pr.kind)
                FROM public.providers pr
               WHERE pr.tenant_id = t.id AND pr.enabled), '[]'::jsonb),
           'paywall', coalesce((SELECT pw.config FROM public.paywall pw WHERE pw.tenant_id = t.id), '{}'::jsonb),
           'features', coalesce((SELECT pw.features FROM public.paywall pw WHERE pw.tenant_id = t.id),
                                '{"coupons": false, "trials": false, "restore_purchases": true}'::jsonb),
           'cache_ttl_seconds', 3600)
    INTO v_result
    FROM public.tenants t
   WHERE t.id = v_key.tenant_id;

  RETURN v_result;
END;
$$;

REVOKE ALL ON FUNCTION public.get_suite_config(text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_suite_config(text) TO service_role;
