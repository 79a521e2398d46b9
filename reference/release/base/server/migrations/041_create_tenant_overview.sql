-- Dashboard home: one row per tenant the caller belongs to (RLS applies
-- through security_invoker).
CREATE OR REPLACE VIEW public.tenant_overview
WITH (security_invoker = true) AS
SELECT t.id,
       t.name,
       t.slug,
       t.plan,
       (SELECT count(*) FROM public.products p WHERE p.tenant_id = t.id AND p.active)   AS active_products,
       (SELECT count(*) FROM public.providers pr WHERE pr.tenant_id = t.id AND pr.enabled) AS enabled_providers,
       (SELECT count(*) FROM public.api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL) AS active_api_keys,
       t.created_at
  FROM public.tenants t;

GRANT SELECT ON public.tenant_overview TO authenticated, service_role;
