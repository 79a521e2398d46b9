-- Deliveries that passed the signature check, one row per provider event id
-- (providers retry: a second delivery of the same event is a duplicate, not
-- an error). The tenant's admins (any role) read them; only the webhook functions
-- write, through record_webhook_event() with the service role key.
CREATE TABLE IF NOT EXISTS public.webhook_events (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  provider     text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
  event_id     text NOT NULL,
  event_type   text NOT NULL DEFAULT '',
  received_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, provider, event_id)
);

ALTER TABLE public.webhook_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY webhook_events_select_member ON public.webhook_events
  FOR SELECT TO authenticated USING (tenant_id IN (SELECT a.tenant_id FROM public.tenant_admins a WHERE a.user_id = auth.uid()));

REVOKE ALL ON TABLE public.webhook_events FROM PUBLIC, anon, authenticated;
GRANT SELECT ON TABLE public.webhook_events TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.webhook_events TO service_role;

-- Record one verified delivery: {"recorded": true} the first time,
-- {"recorded": false, "duplicate": true} when the event id was seen before.
CREATE OR REPLACE FUNCTION public.record_webhook_event(p_tenant uuid, p_provider text, p_event_id text,
                                                       p_event_type text DEFAULT '')
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_id uuid;
BEGIN
  IF p_event_id IS NULL OR length(p_event_id) = 0 OR length(p_event_id) > 255 THEN
    RAISE EXCEPTION 'invalid_event_id' USING ERRCODE = 'P0001';
  END IF;
  INSERT INTO public.webhook_events (tenant_id, provider, event_id, event_type)
  VALUES (p_tenant, p_provider, p_event_id, left(coalesce(p_event_type, ''), 255))
  ON CONFLICT (tenant_id, provider, event_id) DO NOTHING
  RETURNING id INTO v_id;
  RETURN jsonb_build_object('recorded', v_id IS NOT NULL, 'duplicate', v_id IS NULL);
END;
$$;

REVOKE ALL ON FUNCTION public.record_webhook_event(uuid, text, text, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.record_webhook_event(uuid, text, text, text) TO service_role;
