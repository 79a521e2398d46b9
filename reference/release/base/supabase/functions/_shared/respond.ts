// JSON answers of the functions (reference-only helper).
export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

// A PostgREST error as one log line, without values that could be secrets.
export function describe(error: { code?: string; message?: string } | null | undefined): string {
  if (!error) return "no result";
  return `${error.code ?? ""} ${error.message ?? ""}`.trim();
}
