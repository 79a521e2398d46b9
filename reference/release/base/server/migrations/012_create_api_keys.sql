-- Publishable API keys the SDK sends to /functions/v1/config.
-- pk_test_… keys talk to provider sandboxes, pk_live_… keys to production.
BEGIN;

CREATE TABLE IF NOT EXISTS public.api_keys (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  key           text NOT NULL UNIQUE CHECK (key ~ '^pk_(test|live)_[0-9a-f]{32}$'),
  mode          text NOT NULL DEFAULT 'test' CHECK (mode IN ('test', 'live')),
  label         text NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  CONSTRAINT api_keys_mode_matches_prefix CHECK (key LIKE 'pk_' || mode || '_%')
);

CREATE INDEX IF NOT EXISTS api_keys_tenant_id_idx ON public.api_keys (tenant_id);

CREATE OR REPLACE FUNCTION public.generate_api_key(p_mode text DEFAULT 'test')
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = public, pg_temp
AS $$
BEGIN
  IF p_mode NOT IN ('test', 'live') THEN
    RAISE EXCEPTION 'unknown API key mode: %', p_mode USING ERRCODE = '22023';
  END IF;
  RETURN 'pk_' || p_mode || '_' || encode(extensions.gen_random_bytes(16), 'hex');
END;
$$;

COMMIT;
