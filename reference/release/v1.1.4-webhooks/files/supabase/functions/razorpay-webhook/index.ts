// POST /functions/v1/razorpay-webhook  <-  Razorpay's webhook deliveries.
//
// Razorpay signs each delivery with the webhook's secret:
// `X-Razorpay-Signature: <hex HMAC-SHA256 of the raw body>`. The URL names no
// tenant, so the signature is checked against every enabled Razorpay secret
// (webhook_secrets_for, read with the service role key as the config function
// reads the SuiteConfig) and the tenant is the one whose secret matches;
// `?tenant=<uuid>` narrows the check to one tenant. The event id is Razorpay's
// `X-Razorpay-Event-Id` header (else the body's SHA-256, so a retried delivery
// is still a duplicate). Secrets are never logged.
//
//   400 {"error":"missing_signature"}   no X-Razorpay-Signature header
//   400 {"error":"invalid_signature"}   not 64 hex digits, or no enabled secret matches
//   400 {"error":"invalid_payload"}     signed, but not a JSON event
//   405 {"error":"method_not_allowed"}  anything but POST
//   502 {"error":"upstream_unreachable"|"upstream_error"}  /rest/v1 unreachable or failing
//   200 {"received":true,"provider":"razorpay","event_id":…,"duplicate":false}

const SUPABASE_URL = Deno.env.get("SUPABASE_URL") ?? "http://kong:8000";
const SERVICE_ROLE_KEY = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
const PROVIDER = "razorpay";
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

async function rpc(fn: string, args: Record<string, unknown>): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${SUPABASE_URL}/rest/v1/rpc/${fn}`, {
    method: "POST",
    headers: {
      apikey: SERVICE_ROLE_KEY,
      Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-Client-Info": "paycraft-razorpay-webhook/1.1.4",
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
  console.error(`razorpay-webhook: ${fn} failed: ${result.status} ${code ?? ""}`);
  return json(502, { error: "upstream_error", status: result.status, code });
}

Deno.serve(async (req: Request) => {
  if (req.method !== "POST") {
    return json(405, { error: "method_not_allowed", message: "Razorpay delivers webhooks with POST" });
  }
  const header = req.headers.get("X-Razorpay-Signature");
  const raw = new Uint8Array(await req.arrayBuffer());
  if (!header) {
    return json(400, { error: "missing_signature", message: "no X-Razorpay-Signature header" });
  }
  const signature = fromHex(header.trim());
  if (!signature || signature.length !== 32) {
    return json(400, { error: "invalid_signature", message: "X-Razorpay-Signature must be 64 hex digits" });
  }
  const tenant = new URL(req.url).searchParams.get("tenant");
  if (tenant !== null && !UUID.test(tenant)) {
    return json(400, { error: "invalid_tenant", message: "?tenant= must be a tenant uuid" });
  }

  let secrets: { status: number; body: unknown };
  try {
    secrets = await rpc("webhook_secrets_for", tenant ? { p_provider: PROVIDER, p_tenant: tenant } : { p_provider: PROVIDER });
  } catch (e) {
    console.error(`razorpay-webhook: ${SUPABASE_URL} unreachable: ${e}`);
    return json(502, { error: "upstream_unreachable", message: `cannot reach ${SUPABASE_URL}/rest/v1` });
  }
  if (secrets.status >= 400 || !Array.isArray(secrets.body)) return upstreamFailure("webhook_secrets_for", secrets);

  let matched: string | null = null;
  for (const row of secrets.body as { tenant_id: string; secret: string }[]) {
    if (await hmacMatches(row.secret, raw, signature)) {
      matched = row.tenant_id;
      break;
    }
  }
  if (!matched) {
    return json(400, { error: "invalid_signature", message: "no enabled Razorpay webhook secret matches the signature" });
  }

  let event: { event?: unknown };
  try {
    event = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    return json(400, { error: "invalid_payload", message: "the body is not JSON" });
  }
  if (!event || typeof event !== "object") {
    return json(400, { error: "invalid_payload", message: "the body is not a JSON object" });
  }
  const type = typeof event.event === "string" ? event.event : "";
  let eventId = (req.headers.get("X-Razorpay-Event-Id") ?? "").trim();
  if (!eventId) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
    eventId = "sha256:" + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  let recorded: { status: number; body: unknown };
  try {
    recorded = await rpc("record_webhook_event", {
      p_tenant: matched, p_provider: PROVIDER, p_event_id: eventId, p_event_type: type,
    });
  } catch (e) {
    console.error(`razorpay-webhook: ${SUPABASE_URL} unreachable: ${e}`);
    return json(502, { error: "upstream_unreachable", message: `cannot reach ${SUPABASE_URL}/rest/v1` });
  }
  if (recorded.status >= 400) return upstreamFailure("record_webhook_event", recorded);
  const duplicate = Boolean((recorded.body as { duplicate?: boolean } | null)?.duplicate);
  console.log(`razorpay-webhook: ${type || "event"} ${eventId} for tenant ${matched}${duplicate ? " (duplicate)" : ""}`);
  return json(200, { received: true, provider: PROVIDER, event_id: eventId, type, duplicate });
});
