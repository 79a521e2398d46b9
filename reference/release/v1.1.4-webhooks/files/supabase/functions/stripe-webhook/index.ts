// POST /functions/v1/stripe-webhook  <-  Stripe's webhook deliveries.
//
// Stripe signs each delivery with the endpoint's secret (whsec_…) in
// `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
// (several v1= entries while a secret is being rolled). The URL names no
// tenant, so the signature is checked against every enabled Stripe secret
// (webhook_secrets_for, read with the service role key as the config function
// reads the SuiteConfig) and the tenant is the one whose secret matches;
// `?tenant=<uuid>` narrows the check to one tenant. Secrets are never logged.
//
//   400 {"error":"missing_signature"}          no Stripe-Signature header
//   400 {"error":"invalid_signature"}          malformed header, or no enabled secret matches
//   400 {"error":"timestamp_out_of_tolerance"} signed, but t is more than 300 s away from now
//   400 {"error":"invalid_payload"}            signed, but not a JSON event with an id
//   405 {"error":"method_not_allowed"}         anything but POST
//   502 {"error":"upstream_unreachable"|"upstream_error"}  /rest/v1 unreachable or failing
//   200 {"received":true,"provider":"stripe","event_id":…,"duplicate":false}

const SUPABASE_URL = Deno.env.get("SUPABASE_URL") ?? "http://kong:8000";
const SERVICE_ROLE_KEY = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
const PROVIDER = "stripe";
const TOLERANCE_SECONDS = 300;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const encoder = new TextEncoder();

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function fromHex(hex: string): Uint8Array | null {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// crypto.subtle.verify compares in constant time.
async function hmacMatches(secret: string, payload: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" },
    false, ["verify"]);
  return await crypto.subtle.verify("HMAC", key, signature, payload);
}

function parseHeader(header: string): { t: number | null; v1: Uint8Array[] } {
  let t: number | null = null;
  const v1: Uint8Array[] = [];
  for (const part of header.split(",")) {
    const i = part.indexOf("=");
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    if (k === "t" && /^\d{1,12}$/.test(v)) t = Number(v);
    if (k === "v1") {
      const sig = fromHex(v);
      // at most 8 (Stripe sends one, two while a secret is rolled): each costs a check per secret
      if (sig && sig.length === 32 && v1.length < 8) v1.push(sig);
    }
  }
  return { t, v1 };
}

async function rpc(fn: string, args: Record<string, unknown>): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${SUPABASE_URL}/rest/v1/rpc/${fn}`, {
    method: "POST",
    headers: {
      apikey: SERVICE_ROLE_KEY,
      Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-Client-Info": "paycraft-stripe-webhook/1.1.4",
    },
    body: JSON.stringify(args),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // keep the raw text
  }
  return { status: res.status, body };
}

function upstreamFailure(fn: string, result: { status: number; body: unknown }): Response {
  const code = (result.body as { code?: string } | null)?.code ?? null;
  console.error(`stripe-webhook: ${fn} failed: ${result.status} ${code ?? ""}`);
  return json(502, { error: "upstream_error", status: result.status, code });
}

Deno.serve(async (req: Request) => {
  if (req.method !== "POST") {
    return json(405, { error: "method_not_allowed", message: "Stripe delivers webhooks with POST" });
  }
  const header = req.headers.get("Stripe-Signature");
  const raw = new Uint8Array(await req.arrayBuffer());
  if (!header) {
    return json(400, { error: "missing_signature", message: "no Stripe-Signature header" });
  }
  const { t, v1 } = parseHeader(header);
  if (t === null || v1.length === 0) {
    return json(400, { error: "invalid_signature", message: "Stripe-Signature needs t=<timestamp> and v1=<hex>" });
  }
  const tenant = new URL(req.url).searchParams.get("tenant");
  if (tenant !== null && !UUID.test(tenant)) {
    return json(400, { error: "invalid_tenant", message: "?tenant= must be a tenant uuid" });
  }

  let secrets: { status: number; body: unknown };
  try {
    secrets = await rpc("webhook_secrets_for", tenant ? { p_provider: PROVIDER, p_tenant: tenant } : { p_provider: PROVIDER });
  } catch (e) {
    console.error(`stripe-webhook: ${SUPABASE_URL} unreachable: ${e}`);
    return json(502, { error: "upstream_unreachable", message: `cannot reach ${SUPABASE_URL}/rest/v1` });
  }
  if (secrets.status >= 400 || !Array.isArray(secrets.body)) return upstreamFailure("webhook_secrets_for", secrets);

  const prefix = encoder.encode(`${t}.`);
  const signed = new Uint8Array(prefix.length + raw.length);
  signed.set(prefix);
  signed.set(raw, prefix.length);
  let matched: string | null = null;
  for (const row of secrets.body as { tenant_id: string; secret: string }[]) {
    for (const sig of v1) {
      if (await hmacMatches(row.secret, signed, sig)) {
        matched = row.tenant_id;
        break;
      }
    }
    if (matched) break;
  }
  if (!matched) {
    return json(400, { error: "invalid_signature", message: "no enabled Stripe webhook secret matches the signature" });
  }
  if (Math.abs(Date.now() / 1000 - t) > TOLERANCE_SECONDS) {
    return json(400, {
      error: "timestamp_out_of_tolerance",
      message: `the signature's timestamp is more than ${TOLERANCE_SECONDS} s from the server's clock`,
    });
  }

  let event: { id?: unknown; type?: unknown };
  try {
    event = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    return json(400, { error: "invalid_payload", message: "the body is not JSON" });
  }
  if (!event || typeof event.id !== "string" || !event.id) {
    return json(400, { error: "invalid_payload", message: "the event has no id" });
  }
  const type = typeof event.type === "string" ? event.type : "";

  let recorded: { status: number; body: unknown };
  try {
    recorded = await rpc("record_webhook_event", {
      p_tenant: matched, p_provider: PROVIDER, p_event_id: event.id, p_event_type: type,
    });
  } catch (e) {
    console.error(`stripe-webhook: ${SUPABASE_URL} unreachable: ${e}`);
    return json(502, { error: "upstream_unreachable", message: `cannot reach ${SUPABASE_URL}/rest/v1` });
  }
  if (recorded.status >= 400) return upstreamFailure("record_webhook_event", recorded);
  const duplicate = Boolean((recorded.body as { duplicate?: boolean } | null)?.duplicate);
  console.log(`stripe-webhook: ${type || "event"} ${event.id} for tenant ${matched}${duplicate ? " (duplicate)" : ""}`);
  return json(200, { received: true, provider: PROVIDER, event_id: event.id, type, duplicate });
});
