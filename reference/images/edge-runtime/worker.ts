// A user worker: one function (EDGE_WORKER_SERVICE_PATH/index.ts) served on
// 127.0.0.1:EDGE_WORKER_PORT, in its own Deno process.
import { forceServeAddress } from "./serve_override.ts";

const servicePath = Deno.env.get("EDGE_WORKER_SERVICE_PATH") ?? "";
const port = Number(Deno.env.get("EDGE_WORKER_PORT") ?? "0");
if (!servicePath || !port) {
  console.error("edge-runtime worker: EDGE_WORKER_SERVICE_PATH and EDGE_WORKER_PORT are required");
  Deno.exit(2);
}

// What upstream gives user workers beyond Deno itself.
Object.defineProperty(globalThis, "EdgeRuntime", {
  value: {
    waitUntil(promise: Promise<unknown>) {
      return Promise.resolve(promise).catch((e) => console.error(`${servicePath}: waitUntil:`, e));
    },
  },
  configurable: true,
});

forceServeAddress("127.0.0.1", port, servicePath);
try {
  await import(`file://${servicePath}/index.ts`);
} catch (e) {
  console.error(`worker boot error: ${servicePath}: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
