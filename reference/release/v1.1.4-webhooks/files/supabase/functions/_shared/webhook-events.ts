// What the webhook functions share (reference-only module; PayCraft's share
// _shared/subscription-handler.ts and _shared/webhook-rate-limit.ts): the
// tenant named by the URL, the enabled secrets to verify a delivery against,
// and the record of a verified delivery. Secrets are never logged.
import { supabaseAdmin } from "./supabase-admin.ts";
import { describe, json } from "./respond.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class UpstreamError extends Error {
  constructor(readonly what: string, readonly code: string | null, readonly status: number) {
    super(`${what} failed: ${status} ${code ?? ""}`);
  }
}

// The tenant segment of PayCraft's per-tenant paths: .../<function>/<tenant_id>
// (provision_app hands out /functions/v1/stripe-webhook/<tenant_id>). The
// segment after the function's name, whatever prefix the gateway left:
// undefined when the URL names no tenant, null when the segment is not a uuid.
export function tenantFromPath(url: URL, fn: string): string | null | undefined {
  const parts = url.pathname.split("/").filter(Boolean);
  const at = parts.lastIndexOf(fn);
  if (at < 0 || at + 1 >= parts.length) return undefined;
  const segment = parts[at + 1];
  return UUID.test(segment) ? segment.toLowerCase() : null;
}

export interface TenantSecret {
  tenant_id: string;
  secret: string;
}

// Every enabled secret of the provider, or of one tenant.
export async function secretsFor(provider: string, tenant?: string): Promise<TenantSecret[]> {
  const { data, error, status } = await supabaseAdmin.rpc(
    "webhook_secrets_for",
    tenant ? { p_provider: provider, p_tenant: tenant } : { p_provider: provider },
  );
  if (error || !Array.isArray(data)) throw new UpstreamError("webhook_secrets_for", error?.code ?? null, status);
  return data as TenantSecret[];
}

// {"duplicate": true} when the provider redelivered an event already recorded.
export async function recordEvent(tenant: string, provider: string, eventId: string, type: string):
  Promise<boolean> {
  const { data, error, status } = await supabaseAdmin.rpc("record_webhook_event", {
    p_tenant: tenant, p_provider: provider, p_event_id: eventId, p_event_type: type,
  });
  if (error) throw new UpstreamError("record_webhook_event", error.code ?? null, status);
  return Boolean((data as { duplicate?: boolean } | null)?.duplicate);
}

export function upstreamFailure(fn: string, e: unknown): Response {
  if (e instanceof UpstreamError) {
    console.error(`${fn}: ${e.message}`);
    return json(502, { error: "upstream_error", status: e.status, code: e.code });
  }
  console.error(`${fn}: rest unreachable: ${describe({ message: String(e) })}`);
  return json(502, { error: "upstream_unreachable", message: "cannot reach SUPABASE_URL/rest/v1" });
}
