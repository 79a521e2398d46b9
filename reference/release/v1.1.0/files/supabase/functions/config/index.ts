// GET /functions/v1/config?apiKey=pk_test_…  ->  the tenant's SuiteConfig.
//
// The SDK calls this with its publishable API key. The function reads the
// configuration through the gateway with the service role key, the way
// supabase-js does: POST ${SUPABASE_URL}/rest/v1/rpc/get_suite_config.

const SUPABASE_URL = Deno.env.get("SUPABASE_URL") ?? "http://kong:8000";
const SERVICE_ROLE_KEY = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";

const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, OPTIONS",
};

const DEFAULT_FEATURES = { coupons: false, trials: false, restore_purchases: true };

function json(status: number, body: unknown, extra: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...CORS, "Content-Type": "application/json", ...extra },
  });
}

interface PostgrestError {
  code?: string;
  message?: string;
  details?: string | null;
  hint?: string | null;
}

async function rpc(fn: string, args: Record<string, unknown>): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${SUPABASE_URL}/rest/v1/rpc/${fn}`, {
    method: "POST",
    headers: {
      apikey: SERVICE_ROLE_KEY,
      Authorization: `Bearer ${SERVICE_ROLE_KEY}`,
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-Client-Info": "paycraft-config/1.1.0",
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

Deno.serve(async (req: Request) => {
  if (req.method === "OPTIONS") {
    return new Response("ok", { headers: CORS });
  }
  if (req.method !== "GET") {
    return json(405, { error: "method_not_allowed" });
  }

  const url = new URL(req.url);
  const apiKey = url.searchParams.get("apiKey")?.trim();
  if (!apiKey) {
    return json(400, { error: "missing_apiKey", message: "pass ?apiKey=pk_test_… or pk_live_…" });
  }

  let result: { status: number; body: unknown };
  try {
    result = await rpc("get_suite_config", { p_api_key: apiKey });
  } catch (e) {
    console.error(`config: ${SUPABASE_URL} unreachable: ${e}`);
    return json(502, { error: "upstream_unreachable", message: `cannot reach ${SUPABASE_URL}/rest/v1` });
  }

  const err = (result.body ?? {}) as PostgrestError;
  if (result.status === 401 || result.status === 403) {
    // PostgREST rejected the service role key itself (PGRST301 bad signature,
    // PGRST303 expired): the key was not signed with PAYCRAFT_JWT_SECRET.
    console.error(`config: rest rejected the service role key: ${err.code ?? ""} ${err.message ?? ""}`);
    return json(401, {
      error: "service_role_key_rejected",
      message: "The gateway rejected SUPABASE_SERVICE_ROLE_KEY (" + (err.code ?? result.status) + "): " +
        "PAYCRAFT_SERVICE_ROLE_KEY was not signed with the current PAYCRAFT_JWT_SECRET. " +
        "The JWT secret changed since the keys were generated: re-run ./generate-keys.sh " +
        "and update .env (anon + service role both).",
    });
  }
  if (result.status >= 400) {
    if (err.message === "invalid_apiKey") {
      return json(401, { error: "invalid_apiKey" });
    }
    console.error(`config: get_suite_config failed: ${result.status} ${JSON.stringify(result.body)}`);
    return json(502, { error: "upstream_error", status: result.status, code: err.code ?? null });
  }
  if (!result.body || typeof result.body !== "object") {
    return json(401, { error: "invalid_apiKey" });
  }

  // SuiteConfig v2 (PayCraft 1.1): currency + features; SDKs cache it for
  // cache_ttl_seconds, so say so to HTTP caches as well.
  const config = result.body as Record<string, unknown>;
  const ttl = typeof config.cache_ttl_seconds === "number" ? config.cache_ttl_seconds : 3600;
  const body = {
    ...config,
    currency: config.currency ?? "USD",
    features: { ...DEFAULT_FEATURES, ...((config.features as Record<string, unknown>) ?? {}) },
  };
  return json(200, body, { "Cache-Control": `public, max-age=${ttl}`, "X-PayCraft-Config-Version": "2" });
});
