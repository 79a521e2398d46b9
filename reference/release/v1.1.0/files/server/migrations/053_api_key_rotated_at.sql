-- When each SDK key was last rotated (PayCraft's 065_api_key_rotated_at.sql:
-- the settings page shows the key's age and asks for a rotation after 90
-- days). Existing tenants are backfilled with their creation time.
ALTER TABLE public.tenants
  ADD COLUMN IF NOT EXISTS api_key_test_rotated_at timestamptz,
  ADD COLUMN IF NOT EXISTS api_key_live_rotated_at timestamptz;

UPDATE public.tenants
   SET api_key_test_rotated_at = coalesce(api_key_test_rotated_at, created_at),
       api_key_live_rotated_at = coalesce(api_key_live_rotated_at, created_at)
 WHERE api_key_test_rotated_at IS NULL OR api_key_live_rotated_at IS NULL;

COMMENT ON COLUMN public.tenants.api_key_test_rotated_at IS 'Last rotation of api_key_test (pk_test_…)';
COMMENT ON COLUMN public.tenants.api_key_live_rotated_at IS 'Last rotation of api_key_live (pk_live_…)';
