-- Which auth user belongs to which tenant, and with what role.
CREATE TABLE IF NOT EXISTS public.tenant_members (
  tenant_id   uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id)
);

CREATE INDEX IF NOT EXISTS tenant_members_user_id_idx ON public.tenant_members (user_id);

-- Exactly one owner per tenant.
CREATE UNIQUE INDEX IF NOT EXISTS tenant_members_one_owner_idx
  ON public.tenant_members (tenant_id) WHERE role = 'owner';
