-- What a tenant sells through the paywall. Reference-only shape: PayCraft's
-- own table is tenant_products (028 onwards, with pricing modes, trials and
-- discounts); the config function reads this one into SuiteConfig.products.
CREATE TABLE IF NOT EXISTS public.products (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  sku          text NOT NULL CHECK (sku ~ '^[a-z0-9][a-z0-9_.-]*$'),
  name         text NOT NULL,
  description  text NOT NULL DEFAULT '',
  price_cents  integer NOT NULL CHECK (price_cents >= 0),
  "interval"   text NOT NULL DEFAULT 'month' CHECK ("interval" IN ('one_time', 'week', 'month', 'year')),
  active       boolean NOT NULL DEFAULT true,
  sort_order   integer NOT NULL DEFAULT 0,
  metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, sku)
);

CREATE OR REPLACE TRIGGER products_set_updated_at
  BEFORE UPDATE ON public.products
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
