-- Which auth user administers which tenant, and with what role (PayCraft's
-- 018_dashboard_auth.sql). A user sees only its own rows; the service role
-- manages them; the provisioning RPCs (023, 048) insert the owner row.
-- Wrapped in its own transaction, as several of PayCraft's files are: under
-- `psql -1` that commits early and prints a warning.
BEGIN;

CREATE TABLE IF NOT EXISTS public.tenant_admins (
  id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid        NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  user_id     uuid        NOT NULL,
  role        text        NOT NULL DEFAULT 'admin' CHECK (role IN ('owner', 'admin', 'viewer')),
  invited_by  uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT tenant_admins_tenant_user_key UNIQUE (tenant_id, user_id)
);

CREATE INDEX IF NOT EXISTS idx_tenant_admins_user ON public.tenant_admins (user_id);

CREATE OR REPLACE TRIGGER tenant_admins_set_updated_at
  BEFORE UPDATE ON public.tenant_admins
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

ALTER TABLE public.tenant_admins ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS "tenant_admins_own" ON public.tenant_admins;
CREATE POLICY "tenant_admins_own" ON public.tenant_admins
  FOR SELECT
  USING (user_id = auth.uid());

DROP POLICY IF EXISTS "tenant_admins_service_role" ON public.tenant_admins;
CREATE POLICY "tenant_admins_service_role" ON public.tenant_admins
  FOR ALL
  USING (current_setting('role') = 'service_role')
  WITH CHECK (current_setting('role') = 'service_role');

COMMIT;
