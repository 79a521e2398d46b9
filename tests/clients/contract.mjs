#!/usr/bin/env node
// PayCraft's client contract, checked with the real supabase-js client through the gateway.
//
//   node contract.mjs <gateway URL> [anon key]
//   (the anon key may come from PAYCRAFT_ANON_KEY instead, to keep it out of the process list)
//
// What a dashboard user and an SDK do on a fresh install:
//   1. sign up (email autoconfirm: the signup returns a session);
//   2. provision_app(p_app_name) -> {tenant_id, name, api_key_test, api_key_live, webhook_url};
//   3. read the tenant under RLS (exactly its own) and its owner row in tenant_admins;
//   4. GET /functions/v1/config?apiKey=<pk_test_ key> -> the SuiteConfig;
//   5. a forged key (well formed, unknown) -> 401;
//   6. a second user with its own app sees neither the first user's tenant nor its keys, and the
//      first user does not see the second's.
// One line per check (PASS/FAIL), then `N passed, M failed`; exit 1 on any failure, 2 on bad usage.
// No key, password or token is printed: keys appear as their prefix and length only.
import { randomBytes } from "node:crypto";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";

const REQUEST_TIMEOUT_MS = 30000;
const EMAIL_DOMAIN = "paycraft-selfhost.invalid";

const [gatewayArg, anonArg] = process.argv.slice(2);
const gateway = (gatewayArg ?? "").replace(/\/+$/, "");
const anonKey = anonArg ?? process.env.PAYCRAFT_ANON_KEY ?? "";
if (!/^https?:\/\/[^/]+/.test(gateway) || anonKey === "") {
  console.error("usage: node contract.mjs <gateway URL, e.g. http://127.0.0.1:54321> [anon key]");
  console.error("       (or the anon key in PAYCRAFT_ANON_KEY)");
  process.exit(2);
}

const results = [];
function check(name, ok, detail) {
  results.push(ok);
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  return ok;
}

// a key as it may be shown: its prefix and how long the rest is
function shown(key) {
  if (typeof key !== "string") return `not a string (${typeof key})`;
  const m = /^(pk_(?:test|live)_)(.*)$/.exec(key);
  return m ? `${m[1]}<${m[2].length} chars>` : `<${key.length} chars, no pk_test_/pk_live_ prefix>`;
}

function describeError(error) {
  if (!error) return "";
  const parts = [error.name, error.status, error.code, error.message].filter((p) => p !== undefined && p !== "");
  return parts.join(" ");
}

function timedFetch(input, init = {}) {
  return fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

function newClient() {
  return createClient(gateway, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket },
    global: { fetch: timedFetch },
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const KEY_TEST = /^pk_test_[0-9A-Za-z]{16,}$/;
const KEY_LIVE = /^pk_live_[0-9A-Za-z]{16,}$/;
const run = randomBytes(4).toString("hex");

// --- a user signs up and provisions an app ------------------------------------------------------
async function userWithApp(label) {
  const client = newClient();
  const email = `contract-${label}-${run}@${EMAIL_DOMAIN}`;
  const password = randomBytes(18).toString("base64url");
  const appName = `contract ${label} ${run}`;
  const user = { label, client, email, appName };

  const { data: signup, error: signupError } = await client.auth.signUp({ email, password });
  const userId = signup?.user?.id;
  if (!check(`user ${label}: auth.signUp returns a confirmed session`,
    !signupError && Boolean(signup?.session?.access_token) && UUID.test(userId ?? ""),
    signupError ? describeError(signupError)
      : signup?.session ? `user ${userId}` : "no session: is email autoconfirm (GOTRUE_MAILER_AUTOCONFIRM) on?")) {
    return null;
  }
  user.userId = userId;

  const { data: app, error: appError } = await client.rpc("provision_app", { p_app_name: appName });
  const shapeOk = !appError && app !== null && typeof app === "object"
    && UUID.test(app.tenant_id ?? "") && app.name === appName
    && KEY_TEST.test(app.api_key_test ?? "") && KEY_LIVE.test(app.api_key_live ?? "")
    && typeof app.webhook_url === "string" && app.webhook_url.includes(app.tenant_id);
  if (!check(`user ${label}: rpc provision_app returns {tenant_id, name, api_key_test, api_key_live, webhook_url}`,
    shapeOk,
    appError ? describeError(appError)
      : shapeOk ? `tenant ${app.tenant_id}, ${shown(app.api_key_test)}, ${shown(app.api_key_live)}, webhook ${app.webhook_url}`
        : `got keys [${Object.keys(app ?? {}).join(", ")}], tenant_id ${app?.tenant_id}, name ok ${app?.name === appName}, `
          + `test ${shown(app?.api_key_test)}, live ${shown(app?.api_key_live)}, webhook_url ${app?.webhook_url}`)) {
    return null;
  }
  Object.assign(user, { tenantId: app.tenant_id, keyTest: app.api_key_test, keyLive: app.api_key_live });
  return user;
}

// what a signed-in user reads of tenants and tenant_admins under RLS
async function visible(user) {
  const tenants = await user.client.from("tenants").select("id,name,api_key_test,api_key_live");
  const admins = await user.client.from("tenant_admins").select("tenant_id,user_id,role");
  return { tenants, admins };
}

async function checkOwnTenant(user) {
  const { tenants, admins } = await visible(user);
  const rows = tenants.data ?? [];
  const own = rows.length === 1 && rows[0].id === user.tenantId && rows[0].name === user.appName
    && rows[0].api_key_test === user.keyTest && rows[0].api_key_live === user.keyLive;
  check(`user ${user.label}: tenants under RLS shows exactly its own tenant with the keys provision_app returned`,
    !tenants.error && own,
    tenants.error ? describeError(tenants.error)
      : `${rows.length} row(s)${rows.length ? ` [${rows.map((r) => r.id).join(", ")}]` : ""}`);
  const arows = admins.data ?? [];
  const owner = arows.length === 1 && arows[0].tenant_id === user.tenantId
    && arows[0].user_id === user.userId && arows[0].role === "owner";
  check(`user ${user.label}: tenant_admins under RLS shows its owner row`,
    !admins.error && owner,
    admins.error ? describeError(admins.error)
      : `${arows.length} row(s)${arows.length ? ` [${arows.map((r) => `${r.tenant_id}/${r.role}`).join(", ")}]` : ""}`);
}

// --- the SDK's view: only the anon key and a PayCraft API key --------------------------------------
async function fetchConfig(apiKey) {
  const sdk = newClient();
  const { data, error } = await sdk.functions.invoke(`config?apiKey=${encodeURIComponent(apiKey)}`, { method: "GET" });
  if (!error) return { status: 200, body: data };
  const response = error.context;
  if (response && typeof response.status === "number") {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    return { status: response.status, body };
  }
  return { status: null, body: null, error };
}

async function checkConfig(user) {
  const { status, body, error } = await fetchConfig(user.keyTest);
  const tid = body?.tenant_id;
  const ok = status === 200 && body !== null && typeof body === "object"
    && tid === user.tenantId
    && Array.isArray(body.products) && Array.isArray(body.providers)
    && "paywall" in body && Number.isInteger(body.cache_ttl_seconds) && body.cache_ttl_seconds > 0;
  check(`user ${user.label}: GET /functions/v1/config with its ${shown(user.keyTest)} key returns its SuiteConfig`,
    ok,
    error ? `no HTTP answer: ${describeError(error)}`
      : `HTTP ${status}, tenant_id ${tid}, fields [${Object.keys(body ?? {}).join(", ")}]`);
}

async function checkForgedKey() {
  const forged = `pk_test_${randomBytes(24).toString("hex")}`;
  const { status, body, error } = await fetchConfig(forged);
  check(`GET /functions/v1/config with a forged ${shown(forged)} key is refused with 401`,
    status === 401,
    error ? `no HTTP answer: ${describeError(error)}` : `HTTP ${status} ${JSON.stringify(body)}`);
}

async function checkAnonSeesNoTenant() {
  const anon = newClient();
  const { data, error } = await anon.from("tenants").select("id");
  // PostgREST answers an anon read with no rows (RLS) or refuses it (no grant, 42501): both keep tenants hidden
  check("anon (no session) reads no tenant",
    error ? error.code === "42501" : (data ?? []).length === 0,
    error ? `refused: ${describeError(error)}` : `${(data ?? []).length} row(s)`);
}

async function checkIsolation(a, b) {
  for (const [me, other] of [[a, b], [b, a]]) {
    const { tenants, admins } = await visible(me);
    const seenIds = (tenants.data ?? []).map((r) => r.id);
    const seenKeys = (tenants.data ?? []).flatMap((r) => [r.api_key_test, r.api_key_live]);
    const byId = await me.client.from("tenants").select("id").eq("id", other.tenantId);
    const byKey = await me.client.from("tenants").select("id").eq("api_key_test", other.keyTest);
    const adminIds = (admins.data ?? []).map((r) => r.tenant_id);
    const errs = [tenants.error, admins.error, byId.error, byKey.error].filter(Boolean);
    const leaked = seenIds.includes(other.tenantId) || seenKeys.includes(other.keyTest)
      || seenKeys.includes(other.keyLive) || (byId.data ?? []).length > 0 || (byKey.data ?? []).length > 0
      || adminIds.includes(other.tenantId);
    check(`user ${me.label} sees neither user ${other.label}'s tenant nor its keys (list, by id, by key, tenant_admins)`,
      errs.length === 0 && !leaked,
      errs.length ? errs.map(describeError).join("; ")
        : `sees tenants [${seenIds.join(", ")}], admin of [${adminIds.join(", ")}]`);
  }
}

async function main() {
  console.log(`PayCraft client contract through ${gateway} (supabase-js, run ${run})`);
  const a = await userWithApp("a");
  if (a) {
    await checkOwnTenant(a);
    await checkConfig(a);
  }
  await checkForgedKey();
  await checkAnonSeesNoTenant();
  const b = await userWithApp("b");
  if (b) await checkOwnTenant(b);
  if (a && b) await checkIsolation(a, b);
  else check("two users' tenants are isolated", false, "not checked: a user could not sign up or provision an app");
}

try {
  await main();
} catch (e) {
  check("the client ran to the end", false, `${e?.name ?? "error"}: ${e?.message ?? e}`);
}
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
