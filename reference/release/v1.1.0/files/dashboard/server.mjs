// `npm run start -- -p 3000`: serve the built dashboard.
import { createServer } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const manifestPath = join(root, ".next", "build-manifest.json");
if (!existsSync(manifestPath)) {
  console.error("start: no build found in .next/ — run `npm run build` first");
  process.exit(1);
}
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
const env = manifest.publicEnv;

function arg(names, fallback) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (names.includes(argv[i]) && argv[i + 1]) return argv[i + 1];
    for (const n of names) {
      if (argv[i].startsWith(n + "=")) return argv[i].slice(n.length + 1);
    }
  }
  return fallback;
}
const port = Number(arg(["-p", "--port"], process.env.PORT || "3000"));
const hostname = arg(["-H", "--hostname"], "0.0.0.0");

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function page() {
  const apiUrl = env.NEXT_PUBLIC_SUPABASE_URL || "";
  const anonKey = env.NEXT_PUBLIC_SUPABASE_ANON_KEY || "";
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>PayCraft Dashboard</title>
<meta name="paycraft-version" content="${escapeHtml(manifest.version)}"></head>
<body>
<h1>PayCraft Dashboard</h1>
<p>API: <code id="api">${escapeHtml(apiUrl || "(not configured)")}</code> ·
   anon key: ${anonKey ? "configured" : "<strong>missing</strong>"} ·
   version ${escapeHtml(manifest.version)}</p>
<form id="signup">
  <h2>Create your app</h2>
  <p>Sign up, name your app: you become the <em>owner</em> of a new tenant with a test and a live SDK key.</p>
  <input name="app" placeholder="My app" required>
  <input name="email" type="email" placeholder="you@company.com" required>
  <input name="password" type="password" placeholder="password" minlength="6" required>
  <button>Sign up</button>
</form>
<pre id="out"></pre>
<script>
const API = ${JSON.stringify(apiUrl)}, ANON = ${JSON.stringify(anonKey)};
document.getElementById("signup").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target), out = document.getElementById("out");
  const h = { apikey: ANON, "Content-Type": "application/json" };
  const s = await fetch(API + "/auth/v1/signup", { method: "POST", headers: h,
    body: JSON.stringify({ email: f.get("email"), password: f.get("password") }) }).then((r) => r.json());
  if (!s.access_token) { out.textContent = JSON.stringify(s, null, 2); return; }
  const auth = { ...h, Authorization: "Bearer " + s.access_token };
  const app = await fetch(API + "/rest/v1/rpc/provision_app", { method: "POST", headers: auth,
    body: JSON.stringify({ p_app_name: f.get("app") }) }).then((r) => r.json());
  const tenants = await fetch(API + "/rest/v1/tenants?select=name,default_currency", { headers: auth })
    .then((r) => r.json());
  out.textContent = "Your tenants:\\n" + JSON.stringify(tenants, null, 2) +
    "\\nYour new app:\\n" + JSON.stringify(app, null, 2);
});
</script>
</body>
</html>
`;
}

function send(res, status, type, body) {
  res.writeHead(status, { "Content-Type": type, "X-Powered-By": "PayCraft" });
  res.end(body);
}

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/api/health") {
    // Server-side route: may read server-only env, never returns it.
    return send(res, 200, "application/json", JSON.stringify({
      status: "ok",
      version: manifest.version,
      buildId: manifest.buildId,
      supabaseUrl: env.NEXT_PUBLIC_SUPABASE_URL || null,
      serviceRoleConfigured: Boolean(process.env.SUPABASE_SERVICE_ROLE_KEY),
      features: ["currency"],
    }));
  }
  if (url.pathname === "/" || url.pathname === "/login" || url.pathname.startsWith("/settings")) {
    return send(res, 200, "text/html; charset=utf-8", page());
  }
  return send(res, 404, "text/html; charset=utf-8", "<h1>404 — This page could not be found.</h1>\n");
});

server.listen(port, hostname, () => {
  console.log(`▲ paycraft-dashboard ${manifest.version} ready on http://${hostname}:${port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
