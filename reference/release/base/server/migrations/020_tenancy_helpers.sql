-- Membership test used by every RLS policy. SECURITY DEFINER so that the
-- policies on tenant_members do not recurse into themselves.
CREATE OR REPLACE FUNCTION public.is_tenant_member(p_tenant uuid, p_roles text[] DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
  RETURN EXISTS (
    SELECT 1
      FROM public.tenant_members m
     WHERE m.tenant_id = p_tenant
       AND m.user_id = auth.uid()
       AND (p_roles IS NULL OR m.role = ANY (p_roles))
  );
END;
$$;

REVOKE ALL ON FUNCTION public.is_tenant_member(uuid, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.is_tenant_member(uuid, text[]) TO authenticated, service_role;
