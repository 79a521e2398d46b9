-- At most one paywall configuration per tenant (reference-only shape of
-- PayCraft's tenant_paywall). A tenant without a row gets the config
-- function's default paywall, as in PayCraft.
CREATE TABLE IF NOT EXISTS public.paywall (
  tenant_id   uuid PRIMARY KEY REFERENCES public.tenants (id) ON DELETE CASCADE,
  config      jsonb NOT NULL DEFAULT jsonb_build_object(
                'layout', 'default',
                'headline', 'Upgrade to Premium',
                'trial_days', 0,
                'show_close_button', true
              ),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE TRIGGER paywall_set_updated_at
  BEFORE UPDATE ON public.paywall
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
