// Build time only: `deno cache --import-map import_map.json prefetch.ts` loads
// every package the import map points at from the npm registry into DENO_DIR,
// so that functions importing PayCraft's remote URLs run offline (--cached-only).
import "https://deno.land/std@0.177.0/http/server.ts";
import "https://esm.sh/@supabase/supabase-js@2";
import "https://esm.sh/stripe@14.0.0?target=deno";
import "https://esm.sh/stripe@14.21.0?target=deno";
import "https://deno.land/x/jose@v5.9.6/index.ts";
