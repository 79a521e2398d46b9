// Stand-in for https://deno.land/std@<version>/http/server.ts (the import map
// points PayCraft's URL here): `serve(handler, options?)` as the functions call
// it, served by Deno.serve, which the runtime pins to the worker's address.
// Only what PayCraft's functions use; the rest of std's module is not modelled.

export type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

export interface ServeInit {
  port?: number;
  hostname?: string;
  signal?: AbortSignal;
  onListen?: (params: { hostname: string; port: number }) => void;
  onError?: (error: unknown) => Response | Promise<Response>;
}

export function serve(handler: Handler, options: ServeInit = {}): Promise<void> {
  const server = Deno.serve({ ...options, handler });
  return server.finished;
}
