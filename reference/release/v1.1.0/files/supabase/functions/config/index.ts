// GET /functions/v1/config?apiKey=pk_test_…  ->  the tenant's SuiteConfig.
//
// The shape of PayCraft's supabase/functions/config/index.ts: std's `serve`,
// a supabase-js client with the service role key, the key resolved with the
// `resolve_tenant` RPC, then the tenant's products, providers, paywall and
// plan read with that client. Answers, as PayCraft's:
//
//   405 "Method not allowed"            anything but GET
//   400 {"error":"missing_apiKey"}      no ?apiKey=
//   401 {"error":"invalid_apiKey"}      resolve_tenant failed for ANY reason: an unknown key, an inactive
//                                       tenant, but also a service role key rest rejects or rest being
//                                       unreachable (PayCraft does not tell them apart; the log does here)
//   200 SuiteConfig                     {schema_version: 2, tenant_id, plan, currency, products (each with
//                                        its currency), providers, paywall, features, locale,
//                                        cache_ttl_seconds}, Cache-Control: private, max-age=3600,
//                                        X-PayCraft-Config-Version: 2
//
// 1.1: prices carry a currency (tenant default, per product) and the paywall
// its feature flags (filled with defaults where a tenant has no paywall row).
import { serve } from "https://deno.land/std@0.208.0/http/server.ts";
import { createClient } from "https://esm.sh/@supabase/supabase-js@2";
import { describe, json } from "../_shared/respond.ts";

const CACHE_TTL_SECONDS = 3600;
const DEFAULT_FEATURES = { coupons: false, trials: false, restore_purchases: true };
const DEFAULT_PAYWALL = { layout: "default", headline: "Upgrade to Premium", trial_days: 0, show_close_button: true };

export async function handleConfigRequest(req: Request): Promise<Response> {
  if (req.method !== "GET") {
    return new Response("Method not allowed", { status: 405 });
  }
  const url = new URL(req.url);
  const apiKey = url.searchParams.get("apiKey");
  if (!apiKey) {
    return json(400, { error: "missing_apiKey" });
  }

  const acceptLanguage = req.headers.get("accept-language") ?? "en-US";
  const locale = (acceptLanguage.split(",")[0].split("-")[1] ?? "US").toUpperCase();

  const supabase = createClient(
    Deno.env.get("SUPABASE_URL") ?? "http://kong:8000",
    Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "",
    { auth: { persistSession: false, autoRefreshToken: false } },
  );

  const { data: tenantId, error: resolveError } = await supabase.rpc("resolve_tenant", { p_api_key: apiKey });
  if (resolveError || !tenantId) {
    // One answer for every cause, as PayCraft's; the cause goes to the log
    // (PGRST301/PGRST303: the service role key is not signed with the
    // current JWT secret; a fetch error: rest is unreachable).
    console.error(`config: resolve_tenant failed: ${describe(resolveError)}`);
    return json(401, { error: "invalid_apiKey" });
  }

  const [products, providers, paywall, tenant] = await Promise.all([
    supabase.from("products")
      .select("id,sku,name,description,price_cents,currency,interval")
      .eq("tenant_id", tenantId).eq("active", true)
      .order("sort_order").order("sku"),
    supabase.from("providers").select("id,kind,config").eq("tenant_id", tenantId).eq("enabled", true).order("kind"),
    supabase.from("paywall").select("config,features").eq("tenant_id", tenantId).maybeSingle(),
    supabase.from("tenants").select("plan,default_currency").eq("id", tenantId).single(),
  ]);
  for (const [what, res] of [["products", products], ["providers", providers], ["paywall", paywall],
                             ["tenants", tenant]] as const) {
    if (res.error) console.error(`config: reading ${what} failed: ${describe(res.error)}`);
  }

  const body = {
    schema_version: 2,
    tenant_id: tenantId,
    plan: tenant.data?.plan ?? "free",
    currency: tenant.data?.default_currency ?? "USD",
    products: products.data ?? [],
    providers: providers.data ?? [],
    paywall: paywall.data?.config ?? DEFAULT_PAYWALL,
    features: { ...DEFAULT_FEATURES, ...(paywall.data?.features ?? {}) },
    locale,
    cache_ttl_seconds: CACHE_TTL_SECONDS,
  };
  return json(200, body, {
    "cache-control": `private, max-age=${CACHE_TTL_SECONDS}`,
    "x-paycraft-config-version": "2",
  });
}

serve(handleConfigRequest);
