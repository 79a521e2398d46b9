-- Tenancy on signup: every new auth user becomes the `owner` of a fresh
-- tenant, with a default paywall and a pk_test_… API key. (Team members are
-- added later from the dashboard, into an existing tenant.)
CREATE OR REPLACE FUNCTION public.handle_new_user_tenancy()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_tenant uuid;
  v_name   text;
  v_slug   text;
BEGIN
  v_name := coalesce(
    nullif(trim(NEW.raw_user_meta_data ->> 'company'), ''),
    nullif(split_part(coalesce(NEW.email, ''), '@', 1), ''),
    'tenant'
  );
  v_slug := trim(BOTH '-' FROM lower(regexp_replace(v_name, '[^a-zA-Z0-9]+', '-', 'g')));
  v_slug := left(coalesce(nullif(v_slug, ''), 'tenant'), 40)
            || '-' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 8);

  INSERT INTO public.tenants (name, slug)
  VALUES (left(v_name, 200), v_slug)
  RETURNING id INTO v_tenant;

  INSERT INTO public.tenant_members (tenant_id, user_id, role)
  VALUES (v_tenant, NEW.id, 'owner');

  INSERT INTO public.api_keys (tenant_id, key, mode, label)
  VALUES (v_tenant, public.generate_api_key('test'), 'test', 'Default test key');

  INSERT INTO public.paywall (tenant_id) VALUES (v_tenant);

  RETURN NEW;
END;
$$;

REVOKE ALL ON FUNCTION public.handle_new_user_tenancy() FROM PUBLIC, anon, authenticated;

DROP TRIGGER IF EXISTS on_auth_user_created_tenancy ON auth.users;
CREATE TRIGGER on_auth_user_created_tenancy
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user_tenancy();
