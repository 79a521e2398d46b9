// The service-role client the functions share (PayCraft's
// supabase/functions/_shared/supabase-admin.ts has the same role): supabase-js
// with SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, which the edge runtime
// injects. It bypasses RLS; never hand it to a caller.
import { createClient, type SupabaseClient } from "https://esm.sh/@supabase/supabase-js@2";

export const SUPABASE_URL = Deno.env.get("SUPABASE_URL") ?? "http://kong:8000";

export const supabaseAdmin: SupabaseClient = createClient(
  SUPABASE_URL,
  Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "",
  { auth: { persistSession: false, autoRefreshToken: false } },
);
