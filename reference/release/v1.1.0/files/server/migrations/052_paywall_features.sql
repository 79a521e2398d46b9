-- Feature flags the SDK reads from the SuiteConfig. Existing paywalls are
-- backfilled: trials are on where a trial length was configured.
ALTER TABLE public.paywall ADD COLUMN IF NOT EXISTS features jsonb;

UPDATE public.paywall
   SET features = jsonb_build_object(
         'coupons', false,
         'trials', coalesce((config ->> 'trial_days')::int, 0) > 0,
         'restore_purchases', true)
 WHERE features IS NULL;

ALTER TABLE public.paywall
  ALTER COLUMN features SET DEFAULT '{"coupons": false, "trials": false, "restore_purchases": true}'::jsonb,
  ALTER COLUMN features SET NOT NULL;
