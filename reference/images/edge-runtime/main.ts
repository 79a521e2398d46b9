// The reference edge runtime: the command line of supabase/edge-runtime
// (`start --main-service DIR [--port 9000] [--ip 0.0.0.0]`), the main service
// run with the EdgeRuntime.userWorkers API, and each user worker run as its
// own Deno process on a private loopback port.
import { forceServeAddress } from "./serve_override.ts";

const WORKER_TS = new URL("./worker.ts", import.meta.url).pathname;
const BOOT_TIMEOUT_MS = Number(Deno.env.get("EDGE_RUNTIME_WORKER_BOOT_TIMEOUT_MS") ?? "30000");

function usage(code: number): never {
  console.error("usage: edge-runtime start --main-service <dir> [--port 9000] [--ip 0.0.0.0]");
  Deno.exit(code);
}

function parseArgs(argv: string[]) {
  if (argv[0] !== "start") usage(2);
  const opts = { mainService: "", port: 9000, ip: "0.0.0.0" };
  for (let i = 1; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    const takesValue = ["--main-service", "--port", "-p", "--ip"].includes(flag);
    if (takesValue && value === undefined) value = argv[++i];
    switch (flag) {
      case "--main-service": opts.mainService = value ?? ""; break;
      case "--port": case "-p": opts.port = Number(value); break;
      case "--ip": opts.ip = value ?? opts.ip; break;
      case "--verbose": case "--inspect": break;
      default: console.error(`edge-runtime: ignoring unsupported option ${argv[i]}`);
    }
  }
  if (!opts.mainService || !Number.isInteger(opts.port)) usage(2);
  return opts;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function answers(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

interface UserWorker {
  port: number;
  child: Deno.ChildProcess;
  exited: boolean;
  fetch(request: Request): Promise<Response>;
}

const workers = new Map<string, Promise<UserWorker>>();
const children = new Set<Deno.ChildProcess>();

function envObject(envVars: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const entries = Array.isArray(envVars)
    ? envVars
    : envVars && typeof envVars === "object"
    ? Object.entries(envVars as Record<string, unknown>)
    : [];
  for (const pair of entries) {
    if (Array.isArray(pair) && pair.length >= 2 && pair[1] !== undefined && pair[1] !== null) {
      out[String(pair[0])] = String(pair[1]);
    }
  }
  return out;
}

// PayCraft's functions import https://deno.land/std/…/http/server.ts and
// https://esm.sh/… modules; offline, this import map resolves them to the npm
// packages cached at image build time and to a local `serve` shim. A worker
// created with its own importMapPath uses that one instead (as upstream does).
const DEFAULT_IMPORT_MAP = new URL("./import_map.json", import.meta.url).pathname;

async function bootWorker(servicePath: string, envVars: unknown, importMapPath: string): Promise<UserWorker> {
  const port = await freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-prompt", "--no-config", "--no-lock", "--cached-only",
      "--import-map", importMapPath, WORKER_TS],
    env: {
      ...Deno.env.toObject(),
      ...envObject(envVars),
      EDGE_WORKER_PORT: String(port),
      EDGE_WORKER_SERVICE_PATH: servicePath,
    },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  children.add(child);
  const worker: UserWorker = {
    port,
    child,
    exited: false,
    async fetch(request: Request): Promise<Response> {
      const url = new URL(request.url);
      const headers = new Headers(request.headers);
      headers.delete("host");
      const init: RequestInit & { duplex?: string } = {
        method: request.method,
        headers,
        redirect: "manual",
      };
      if (request.body && !["GET", "HEAD"].includes(request.method)) {
        init.body = request.body;
        init.duplex = "half";
      }
      return await fetch(`http://127.0.0.1:${port}${url.pathname}${url.search}`, init);
    },
  };
  child.status.then((status) => {
    worker.exited = true;
    children.delete(child);
    if (workers.get(servicePath) && !status.success) {
      console.error(`edge-runtime: worker ${servicePath} exited (code ${status.code})`);
    }
  });
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  while (!(await answers(port))) {
    if (worker.exited) {
      throw new Error(`worker boot error: ${servicePath} exited before it served requests (see the log above)`);
    }
    if (Date.now() > deadline) {
      try { child.kill("SIGKILL"); } catch { /* already gone */ }
      throw new Error(`worker boot error: ${servicePath} did not listen within ${BOOT_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  console.error(`edge-runtime: worker ${servicePath} listening on 127.0.0.1:${port}`);
  return worker;
}

interface CreateOptions {
  servicePath: string;
  envVars?: unknown;
  forceCreate?: boolean;
  [key: string]: unknown;
}

async function create(options: CreateOptions): Promise<UserWorker> {
  const servicePath = String(options?.servicePath ?? "").replace(/\/+$/, "");
  if (!servicePath || !isFile(`${servicePath}/index.ts`)) {
    throw new Error(`worker boot error: Module not found "file://${servicePath}/index.ts"`);
  }
  const cached = workers.get(servicePath);
  if (cached) {
    try {
      const worker = await cached;
      if (!worker.exited && !options.forceCreate) return worker;
      if (!worker.exited) worker.child.kill("SIGTERM");
    } catch { /* a failed boot: try again */ }
    workers.delete(servicePath);
  }
  const importMapPath = typeof options.importMapPath === "string" && isFile(options.importMapPath)
    ? options.importMapPath
    : DEFAULT_IMPORT_MAP;
  const booting = bootWorker(servicePath, options.envVars, importMapPath);
  workers.set(servicePath, booting);
  booting.catch(() => {
    if (workers.get(servicePath) === booting) workers.delete(servicePath);
  });
  return await booting;
}

// Upstream's main services test `e instanceof Deno.errors.WorkerRequestCancelled`.
class WorkerRequestCancelled extends Error {}
try {
  // deno-lint-ignore no-explicit-any
  const errors = Deno.errors as any;
  if (!errors.WorkerRequestCancelled) errors.WorkerRequestCancelled = WorkerRequestCancelled;
} catch { /* a frozen namespace: nothing to add */ }

Object.defineProperty(globalThis, "EdgeRuntime", {
  value: {
    userWorkers: { create },
    waitUntil(promise: Promise<unknown>) {
      return Promise.resolve(promise).catch((e) => console.error("main: waitUntil:", e));
    },
  },
  configurable: true,
});

function shutdown() {
  for (const child of children) {
    try { child.kill("SIGTERM"); } catch { /* gone */ }
  }
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", shutdown);
Deno.addSignalListener("SIGINT", shutdown);

const opts = parseArgs(Deno.args);
const mainDir = opts.mainService.replace(/\/+$/, "");
if (!isFile(`${mainDir}/index.ts`)) {
  console.error(`main service not found: ${mainDir}`);
  console.error(`edge-runtime: expected ${mainDir}/index.ts (is the functions directory mounted, and does the release have a main function?)`);
  Deno.exit(1);
}

forceServeAddress(opts.ip, opts.port, "main");
console.error(`edge-runtime: main service ${mainDir} listening on http://${opts.ip}:${opts.port}`);
try {
  await import(`file://${mainDir}/index.ts`);
} catch (e) {
  console.error(`main worker boot error: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
