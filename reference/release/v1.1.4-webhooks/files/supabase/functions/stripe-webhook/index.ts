// POST /functions/v1/stripe-webhook[/<tenant_id>]  <-  Stripe's deliveries.
//
// PayCraft's shape (supabase/functions/stripe-webhook/index.ts): std's
// `serve`, the `stripe` module from esm.sh verifying `Stripe-Signature`
// (t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">, any v1= may match while
// a secret is rolled, t within 300 s), and the per-tenant path that
// provision_app hands out. With a tenant in the path only that tenant's
// secret is tried; without one (self-hosted, one tenant) every enabled
// Stripe secret is, and the tenant is the one whose secret verifies.
//
//   400 {"error":"missing_signature"}          no Stripe-Signature header (before any database access)
//   400 {"error":"invalid_tenant"}             the path's tenant segment is not a uuid
//   400 {"error":"invalid_signature"}          malformed header, or no enabled secret verifies it
//   400 {"error":"timestamp_out_of_tolerance"} verified, but t is more than 300 s away from now
//   400 {"error":"invalid_payload"}            verified, but not a JSON event with an id
//   405 {"error":"method_not_allowed"}         anything but POST
//   502 {"error":"upstream_unreachable"|"upstream_error"}  /rest/v1 unreachable or failing
//   200 {"received":true,"provider":"stripe","event_id":…,"type":…,"duplicate":false}
//
// PayCraft answers with plain text instead ("Missing stripe-signature",
// "Webhook Error: …"); see reference/README.md.
import { serve } from "https://deno.land/std@0.177.0/http/server.ts";
import Stripe from "https://esm.sh/stripe@14.0.0?target=deno";
import { json } from "../_shared/respond.ts";
import { recordEvent, secretsFor, tenantFromPath, upstreamFailure } from "../_shared/webhook-events.ts";

const FN = "stripe-webhook";
const PROVIDER = "stripe";
const TOLERANCE_SECONDS = 300;

// Verifying a signature needs no API call: the secret key is a placeholder
// unless the operator sets one.
const stripe = new Stripe(Deno.env.get("STRIPE_SECRET_KEY") || "sk_test_reference", {
  apiVersion: "2023-10-16",
  httpClient: Stripe.createFetchHttpClient(),
});
const cryptoProvider = Stripe.createSubtleCryptoProvider();

type Verdict = { event: Stripe.Event } | { error: "invalid_signature" | "timestamp_out_of_tolerance" | "invalid_payload" };

async function verify(raw: string, header: string, secret: string): Promise<Verdict> {
  try {
    const event = await stripe.webhooks.constructEventAsync(raw, header, secret, TOLERANCE_SECONDS, cryptoProvider);
    return { event };
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (e instanceof SyntaxError) return { error: "invalid_payload" };
    if (/tolerance/i.test(message)) return { error: "timestamp_out_of_tolerance" };
    return { error: "invalid_signature" };
  }
}

serve(async (req: Request) => {
  if (req.method !== "POST") {
    return json(405, { error: "method_not_allowed", message: "Stripe delivers webhooks with POST" });
  }
  const header = req.headers.get("stripe-signature");
  const raw = await req.text();
  if (!header) {
    return json(400, { error: "missing_signature", message: "no Stripe-Signature header" });
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

  let matched: { tenant: string; event: Stripe.Event } | null = null;
  let refusal: "invalid_signature" | "timestamp_out_of_tolerance" | "invalid_payload" = "invalid_signature";
  for (const row of candidates) {
    const verdict = await verify(raw, header, row.secret);
    if ("event" in verdict) {
      matched = { tenant: row.tenant_id, event: verdict.event };
      break;
    }
    // a signature that matched this secret but failed later is the answer
    if (verdict.error !== "invalid_signature") {
      refusal = verdict.error;
      break;
    }
  }
  if (!matched) {
    const messages = {
      invalid_signature: "no enabled Stripe webhook secret matches the signature",
      timestamp_out_of_tolerance: `the signature's timestamp is more than ${TOLERANCE_SECONDS} s from the server's clock`,
      invalid_payload: "the body is not a JSON event",
    };
    return json(400, { error: refusal, message: messages[refusal] });
  }
  const { event } = matched;
  if (!event || typeof event.id !== "string" || !event.id) {
    return json(400, { error: "invalid_payload", message: "the event has no id" });
  }
  const type = typeof event.type === "string" ? event.type : "";

  let duplicate: boolean;
  try {
    duplicate = await recordEvent(matched.tenant, PROVIDER, event.id, type);
  } catch (e) {
    return upstreamFailure(FN, e);
  }
  console.log(`${FN}: ${type || "event"} ${event.id} for tenant ${matched.tenant}${duplicate ? " (duplicate)" : ""}`);
  return json(200, { received: true, provider: PROVIDER, event_id: event.id, type, duplicate });
});
