-- Prices carry their currency. Backfill: the product's metadata.currency if
-- set, else its tenant's default currency.
ALTER TABLE public.products ADD COLUMN IF NOT EXISTS currency text;

UPDATE public.products p
   SET currency = coalesce(upper(p.metadata ->> 'currency'), t.default_currency)
  FROM public.tenants t
 WHERE t.id = p.tenant_id
   AND p.currency IS NULL;

ALTER TABLE public.products
  ALTER COLUMN currency SET NOT NULL,
  ADD CONSTRAINT products_currency_iso CHECK (currency ~ '^[A-Z]{3}$');

-- New products default to their tenant's currency.
CREATE OR REPLACE FUNCTION public.products_default_currency()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF NEW.currency IS NULL THEN
    SELECT default_currency INTO NEW.currency FROM public.tenants WHERE id = NEW.tenant_id;
  END IF;
  RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER products_default_currency
  BEFORE INSERT ON public.products
  FOR EACH ROW EXECUTE FUNCTION public.products_default_currency();
