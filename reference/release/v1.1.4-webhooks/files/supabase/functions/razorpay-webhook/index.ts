// POST /functions/v1/razorpay-webhook[/<tenant_id>]  <-  Razorpay's deliveries.
//
// PayCraft's shape (supabase/functions/razorpay-webhook/index.ts): std's
// `serve`, `x-razorpay-signature: <hex HMAC-SHA256 of the raw body>` checked
// with WebCrypto (crypto.subtle.verify: constant time), and the per-tenant
// path /functions/v1/razorpay-webhook/<tenant_id>. With a tenant in the path
// only its secret is tried; without one every enabled Razorpay secret is.
// The event id is Razorpay's `x-razorpay-event-id` header (else the body's
// SHA-256, so that a retried delivery is still a duplicate).
//
//   400 {"error":"missing_signature"}   no x-razorpay-signature header (before any database access)
//   400 {"error":"invalid_tenant"}      the path's tenant segment is not a uuid
//   400 {"error":"invalid_signature"}   not 64 hex digits, or no enabled secret verifies it
//   400 {"error":"invalid_payload"}     verified, but not a JSON object
//   405 {"error":"method_not_allowed"}  anything but POST
//   502 {"error":"upstream_unreachable"|"upstream_error"}  /rest/v1 unreachable or failing
//   200 {"received":true,"provider":"razorpay","event_id":…,"type":…,"duplicate":false}
//
// PayCraft answers 400 "Missing x-razorpay-signature" and 401 "Invalid
// signature" as plain text; see reference/README.md.
import { serve } from "https://deno.land/std@0.177.0/http/server.ts";
import { json } from "../_shared/respond.ts";
import { recordEvent, secretsFor, tenantFromPath, upstreamFailure } from "../_shared/webhook-events.ts";

const FN = "razorpay-webhook";
const PROVIDER = "razorpay";
const encoder = new TextEncoder();

function fromHex(hex: string): Uint8Array | null {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function hmacMatches(secret: string, payload: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" },
    false, ["verify"]);
  return await crypto.subtle.verify("HMAC", key, signature, payload);
}

serve(async (req: Request) => {
  if (req.method !== "POST") {
    return json(405, { error: "method_not_allowed", message: "Razorpay delivers webhooks with POST" });
  }
  const header = req.headers.get("x-razorpay-signature");
  const raw = new Uint8Array(await req.arrayBuffer());
  if (!header) {
    return json(400, { error: "missing_signature", message: "no x-razorpay-signature header" });
  }
  const signature = fromHex(header.trim());
  if (!signature || signature.length !== 32) {
    return json(400, { error: "invalid_signature", message: "x-razorpay-signature must be 64 hex digits" });
  }
  const tenant = tenantFromPath(new URL(req.url), FN);
  if (tenant === null) {
    return json(400, { error: "invalid_tenant", message: `the path is /${FN}/<tenant uuid>` });
  }

  let candidates;
  try {
    candidates = await secretsFor(PROVIDER, tenant);
  } catch (e) {
    return upstreamFailure(FN, e);
  }
  let matched: string | null = null;
  for (const row of candidates) {
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
  let eventId = (req.headers.get("x-razorpay-event-id") ?? "").trim();
  if (!eventId) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
    eventId = "sha256:" + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  let duplicate: boolean;
  try {
    duplicate = await recordEvent(matched, PROVIDER, eventId, type);
  } catch (e) {
    return upstreamFailure(FN, e);
  }
  console.log(`${FN}: ${type || "event"} ${eventId} for tenant ${matched}${duplicate ? " (duplicate)" : ""}`);
  return json(200, { received: true, provider: PROVIDER, event_id: eventId, type, duplicate });
});
