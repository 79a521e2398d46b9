-- Webhook signing secrets, one per tenant and provider: Stripe's endpoint
-- secret (whsec_…) and Razorpay's webhook secret. Owners and admins of the
-- tenant (tenant_admins) set them from the dashboard; nobody reads a secret
-- back through the API (owners and admins see which provider has one, never
-- its value; viewers and anon nothing). The stripe-webhook and
-- razorpay-webhook functions read them with the service role key through
-- webhook_secrets_for(). Reference-only: PayCraft keeps per-mode secrets on
-- tenants (webhook_secret_test/live) and the providers' own, encrypted, in
-- tenant_providers.
CREATE TABLE IF NOT EXISTS public.webhook_secrets (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  provider    text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
  secret      text NOT NULL CHECK (length(secret) >= 16),
  enabled     boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, provider)
);

CREATE INDEX IF NOT EXISTS webhook_secrets_provider_idx ON public.webhook_secrets (provider) WHERE enabled;

CREATE OR REPLACE TRIGGER webhook_secrets_set_updated_at
  BEFORE UPDATE ON public.webhook_secrets
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

ALTER TABLE public.webhook_secrets ENABLE ROW LEVEL SECURITY;

CREATE POLICY webhook_secrets_select_admin ON public.webhook_secrets
  FOR SELECT TO authenticated USING (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid() AND a.role IN ('owner', 'admin')));
CREATE POLICY webhook_secrets_insert_admin ON public.webhook_secrets
  FOR INSERT TO authenticated WITH CHECK (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid() AND a.role IN ('owner', 'admin')));
CREATE POLICY webhook_secrets_update_admin ON public.webhook_secrets
  FOR UPDATE TO authenticated
  USING (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid() AND a.role IN ('owner', 'admin')))
  WITH CHECK (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid() AND a.role IN ('owner', 'admin')));
CREATE POLICY webhook_secrets_delete_admin ON public.webhook_secrets
  FOR DELETE TO authenticated USING (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid() AND a.role IN ('owner', 'admin')));

-- The database's default privileges grant every new table to anon and
-- authenticated: take that back. Owners/admins write the secret and read
-- every column but it.
REVOKE ALL ON TABLE public.webhook_secrets FROM PUBLIC, anon, authenticated;
GRANT INSERT, UPDATE, DELETE ON TABLE public.webhook_secrets TO authenticated;
GRANT SELECT (id, tenant_id, provider, enabled, created_at, updated_at) ON TABLE public.webhook_secrets
  TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.webhook_secrets TO service_role;

-- The enabled secrets of one provider (of one tenant when p_tenant is given),
-- for the webhook functions, which verify a delivery against each: the URL a
-- provider calls names no tenant. service_role only.
CREATE OR REPLACE FUNCTION public.webhook_secrets_for(p_provider text, p_tenant uuid DEFAULT NULL)
RETURNS TABLE (tenant_id uuid, secret text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
  SELECT s.tenant_id, s.secret
    FROM public.webhook_secrets s
   WHERE s.provider = p_provider
     AND s.enabled
     AND (p_tenant IS NULL OR s.tenant_id = p_tenant)
   ORDER BY s.created_at, s.id;
$$;

REVOKE ALL ON FUNCTION public.webhook_secrets_for(text, uuid) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.webhook_secrets_for(text, uuid) TO service_role;
