#!/usr/bin/env bash
# Derive the anon and service-role JWTs from PAYCRAFT_JWT_SECRET in .env.
#
#   ./generate-keys.sh > .env.generated && cat .env.generated >> .env
#
# Both keys are HS256 JWTs (10 years) signed with the secret itself, the way
# GoTrue, PostgREST and the edge runtime verify them. Re-run after rotating
# PAYCRAFT_JWT_SECRET and replace BOTH keys in .env.
set -euo pipefail

cd "$(dirname "$0")"

secret="${PAYCRAFT_JWT_SECRET:-}"
if [ -z "$secret" ] && [ -f .env ]; then
  secret="$(sed -n 's/^PAYCRAFT_JWT_SECRET=//p' .env | tail -n 1)"
  secret="${secret%\"}"; secret="${secret#\"}"
  secret="${secret%\'}"; secret="${secret#\'}"
fi
if [ -z "$secret" ]; then
  echo "generate-keys.sh: PAYCRAFT_JWT_SECRET is empty — set it in .env first (openssl rand -base64 32)" >&2
  exit 1
fi
command -v openssl >/dev/null 2>&1 || { echo "generate-keys.sh: openssl not found" >&2; exit 1; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

sign() {
  local role="$1" iat exp header payload signature
  iat="$(date +%s)"
  exp=$((iat + 10 * 365 * 24 * 3600))
  header="$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)"
  payload="$(printf '{"role":"%s","iss":"supabase","iat":%s,"exp":%s}' "$role" "$iat" "$exp" | b64url)"
  signature="$(printf '%s' "$header.$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)"
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}

echo "PAYCRAFT_ANON_KEY=$(sign anon)"
echo "PAYCRAFT_SERVICE_ROLE_KEY=$(sign service_role)"
