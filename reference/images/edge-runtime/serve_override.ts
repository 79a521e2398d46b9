// Shared by the main service and the user workers: make Deno.serve listen
// where the runtime says, whatever address the function asked for (as on
// Supabase's edge runtime, where a function's Deno.serve(handler) is served
// by the runtime).

// deno-lint-ignore no-explicit-any
type AnyFn = (...args: any[]) => any;

export function forceServeAddress(hostname: string, port: number, label: string): void {
  const realServe = Deno.serve.bind(Deno) as AnyFn;
  let served = false;
  // deno-lint-ignore no-explicit-any
  const serve = (...args: any[]) => {
    // deno-lint-ignore no-explicit-any
    let options: any = {};
    let handler: AnyFn | undefined;
    if (typeof args[0] === "function") {
      handler = args[0];
      options = args[1] ?? {};
    } else {
      options = args[0] ?? {};
      handler = typeof args[1] === "function" ? args[1] : options.handler;
    }
    if (typeof handler !== "function") {
      throw new TypeError("Deno.serve: a handler function is required");
    }
    if (served) {
      throw new Error(`${label}: Deno.serve was called twice; only one server per function is supported`);
    }
    served = true;
    const { port: _port, hostname: _hostname, handler: _handler, onListen, ...rest } = options;
    return realServe({
      ...rest,
      hostname,
      port,
      handler,
      onListen: onListen ?? (() => {}),
    });
  };
  Object.defineProperty(Deno, "serve", { value: serve, writable: true, configurable: true });
}
