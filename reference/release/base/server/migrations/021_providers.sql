-- Payment providers enabled per tenant (reference-only shape of PayCraft's
-- tenant_providers). Secrets never live here: `config` is public
-- configuration and may not carry secret-looking keys.
CREATE TABLE IF NOT EXISTS public.providers (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  kind        text NOT NULL CHECK (kind IN ('stripe', 'razorpay', 'custom')),
  enabled     boolean NOT NULL DEFAULT false,
  config      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, kind),
  CONSTRAINT providers_config_has_no_secrets
    CHECK (NOT (config ?| ARRAY['secret_key', 'api_secret', 'webhook_secret', 'access_token']))
);

CREATE OR REPLACE TRIGGER providers_set_updated_at
  BEFORE UPDATE ON public.providers
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
