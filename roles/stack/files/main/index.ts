// The paycraft.selfhost collection's `main` router for the edge runtime, mounted by the stack
// role when the release has no supabase/functions/main (paycraft_stack_fill_main). The runtime
// starts it with `--main-service`; it routes /<function>/... to
// <functions dir>/<function>/index.ts (the release's own functions, mounted read-only at
// /home/deno/functions) in a user worker and passes the request through unchanged.
// Managed by Ansible: edit the collection's roles/stack/files/main/index.ts, not this copy.

// deno-lint-ignore no-explicit-any
declare const EdgeRuntime: any;

const FUNCTIONS_DIR = Deno.env.get("PAYCRAFT_FUNCTIONS_DIR") ?? "/home/deno/functions";
const JWT_SECRET = Deno.env.get("JWT_SECRET") ?? "";
const VERIFY_JWT = Deno.env.get("VERIFY_JWT") === "true";
// Functions that the SDK calls without a user session.
const PUBLIC_FUNCTIONS = new Set(["config", "stripe-webhook", "razorpay-webhook"]);

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

function b64urlDecode(s: string): Uint8Array {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "=");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function isValidJwt(token: string): Promise<boolean> {
  const parts = token.split(".");
  if (parts.length !== 3 || !JWT_SECRET) return false;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(JWT_SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const ok = await crypto.subtle.verify(
    "HMAC",
    key,
    b64urlDecode(parts[2]),
    new TextEncoder().encode(`${parts[0]}.${parts[1]}`),
  );
  if (!ok) return false;
  const claims = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
  return typeof claims.exp !== "number" || claims.exp * 1000 > Date.now();
}

console.log("main function started (paycraft.selfhost router)");

Deno.serve(async (req: Request) => {
  const url = new URL(req.url);
  const serviceName = url.pathname.split("/")[1] ?? "";

  if (!serviceName) {
    return json(400, { msg: "missing function name in request" });
  }
  if (!/^[A-Za-z0-9_-]+$/.test(serviceName)) {
    return json(404, { message: "Function not found" });
  }

  if (VERIFY_JWT && !PUBLIC_FUNCTIONS.has(serviceName)) {
    const token = (req.headers.get("Authorization") ?? "").replace(/^Bearer\s+/i, "");
    if (!token || !(await isValidJwt(token))) {
      return json(401, { msg: "Invalid JWT" });
    }
  }

  const envVarsObj = Deno.env.toObject();
  const envVars = Object.entries(envVarsObj);

  try {
    const worker = await EdgeRuntime.userWorkers.create({
      servicePath: `${FUNCTIONS_DIR}/${serviceName}`,
      memoryLimitMb: 150,
      workerTimeoutMs: 60 * 1000,
      noModuleCache: false,
      importMapPath: null,
      envVars,
    });
    return await worker.fetch(req);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (/not found/i.test(message)) {
      return json(404, { message: "Function not found" });
    }
    console.error(`main: worker for ${serviceName} failed: ${message}`);
    return json(500, { msg: message });
  }
});
