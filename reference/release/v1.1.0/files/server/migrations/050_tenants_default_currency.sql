-- Tenants get a default currency; existing tenants are backfilled from the
-- currency their products were priced in (metadata.currency), else USD.
BEGIN;

ALTER TABLE public.tenants ADD COLUMN IF NOT EXISTS default_currency text;

UPDATE public.tenants t
   SET default_currency = coalesce(
         (SELECT upper(p.metadata ->> 'currency')
            FROM public.products p
           WHERE p.tenant_id = t.id AND p.metadata ? 'currency'
           ORDER BY p.created_at
           LIMIT 1),
         'USD')
 WHERE t.default_currency IS NULL;

ALTER TABLE public.tenants
  ALTER COLUMN default_currency SET DEFAULT 'USD',
  ALTER COLUMN default_currency SET NOT NULL,
  ADD CONSTRAINT tenants_default_currency_iso CHECK (default_currency ~ '^[A-Z]{3}$');

COMMIT;
