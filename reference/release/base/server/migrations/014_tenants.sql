-- Tenants: one per app a PayCraft customer bills through the SDK. Each holds
-- its two publishable SDK keys (pk_test_… for provider sandboxes, pk_live_…
-- for production) and a webhook signing secret per mode. Modelled on
-- PayCraft's server/migrations/014_tenants.sql (columns, checks, policy name).
CREATE TABLE IF NOT EXISTS public.tenants (
  id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  name                 text        NOT NULL,
  api_key_test         text        NOT NULL UNIQUE CHECK (api_key_test ~ '^pk_test_[0-9a-f]+$'),
  api_key_live         text        NOT NULL UNIQUE CHECK (api_key_live ~ '^pk_live_[0-9a-f]+$'),
  webhook_secret_test  text,
  webhook_secret_live  text,
  status               text        NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'suspended', 'churned')),
  plan                 text        NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'enterprise')),
  subscriber_limit     integer     NOT NULL DEFAULT 100,
  owner_email          text        NOT NULL,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.tenants IS 'PayCraft tenants: one per app, with its pk_test_/pk_live_ SDK keys';

CREATE OR REPLACE TRIGGER tenants_set_updated_at
  BEFORE UPDATE ON public.tenants
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- Nobody but the service role reads or writes tenants (040 lets a tenant's
-- admins read their own row).
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS "service_role_only_tenants" ON public.tenants;
CREATE POLICY "service_role_only_tenants" ON public.tenants
  FOR ALL
  USING (current_setting('role') = 'service_role')
  WITH CHECK (current_setting('role') = 'service_role');

-- resolve_tenant() looks keys up in either column.
CREATE INDEX IF NOT EXISTS idx_tenants_api_key_test ON public.tenants (api_key_test);
CREATE INDEX IF NOT EXISTS idx_tenants_api_key_live ON public.tenants (api_key_live);
