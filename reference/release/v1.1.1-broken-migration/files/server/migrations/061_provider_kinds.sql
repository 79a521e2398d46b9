-- Provider kinds become data, so new providers need no schema change.
BEGIN;

CREATE TABLE IF NOT EXISTS public.provider_kinds (
  kind        text PRIMARY KEY,
  label       text NOT NULL,
  sort_order  integer NOT NULL DEFAULT 0
);

INSERT INTO public.provider_kinds (kind, label, sort_order) VALUES
  ('stripe', 'Stripe', 10),
  ('razorpay', 'Razorpay', 20),
  ('custom', 'Custom', 30);

GRANT SELECT ON public.provider_kinds TO anon, authenticated, service_role;

INSERT INTO public.provider_kinds (kind, label, sort_order)
SELECT 'paypal', (SELECT label FROM public.provider_kinds WHERE kind = 'paypal'), 40;

ALTER TABLE public.providers
  DROP CONSTRAINT IF EXISTS providers_kind_check,
  ADD CONSTRAINT providers_kind_fkey FOREIGN KEY (kind) REFERENCES public.provider_kinds (kind);

COMMIT;
