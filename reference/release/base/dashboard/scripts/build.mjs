// `npm run build`: bake the public (NEXT_PUBLIC_*) configuration into the
// build output, as Next.js inlines it at build time. Server-only variables
// (SUPABASE_SERVICE_ROLE_KEY) are read at runtime and never written here.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

const publicEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k.startsWith("NEXT_PUBLIC_")),
);
if (!publicEnv.NEXT_PUBLIC_SUPABASE_URL) {
  console.warn("build: NEXT_PUBLIC_SUPABASE_URL is empty; the dashboard will not reach the API");
}
for (const [k, v] of Object.entries(publicEnv)) {
  if (v && v === process.env.SUPABASE_SERVICE_ROLE_KEY) {
    console.error(`build: ${k} holds the service role key; refusing to ship it to browsers`);
    process.exit(1);
  }
}

const out = join(root, ".next");
mkdirSync(out, { recursive: true });
const buildId = randomBytes(8).toString("hex");
writeFileSync(join(out, "BUILD_ID"), buildId + "\n");
writeFileSync(
  join(out, "build-manifest.json"),
  JSON.stringify({ buildId, version: pkg.version, builtAt: new Date().toISOString(), publicEnv }, null, 2) + "\n",
);
console.log(`build: paycraft-dashboard ${pkg.version} (${buildId}) ready in .next/`);
