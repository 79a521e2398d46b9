#!/usr/bin/env bash
# Apply server/migrations/*.sql to the PayCraft database, once each.
#
# - connects with PAYCRAFT_DB_PASSWORD from .env: local psql if present
#   (PGHOST/PGPORT/PGUSER/PGDATABASE honoured, default 127.0.0.1:54322),
#   else `docker exec -i paycraft_db psql -U postgres`;
# - keeps a ledger, _paycraft_migrations(version, applied_at);
# - runs every missing file in lexical order in ONE transaction
#   (psql -1 -v ON_ERROR_STOP=1) and records its version afterwards;
# - prints `apply <version>` per file and a summary line.
set -euo pipefail

cd "$(dirname "$0")"
MIGRATIONS_DIR="../../server/migrations"

if [ -z "${PAYCRAFT_DB_PASSWORD:-}" ] && [ -f .env ]; then
  PAYCRAFT_DB_PASSWORD="$(sed -n 's/^PAYCRAFT_DB_PASSWORD=//p' .env | tail -n 1)"
  PAYCRAFT_DB_PASSWORD="${PAYCRAFT_DB_PASSWORD%\"}"; PAYCRAFT_DB_PASSWORD="${PAYCRAFT_DB_PASSWORD#\"}"
fi

if command -v psql >/dev/null 2>&1; then
  export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-54322}"
  export PGUSER="${PGUSER:-postgres}" PGDATABASE="${PGDATABASE:-postgres}"
  export PGPASSWORD="${PGPASSWORD:-${PAYCRAFT_DB_PASSWORD:-}}"
  if [ -z "$PGPASSWORD" ]; then
    echo "❌ PAYCRAFT_DB_PASSWORD is not set (in .env or the environment)" >&2
    exit 1
  fi
  pg() { psql -X -q "$@"; }
  run_file() { pg -1 -v ON_ERROR_STOP=1 -f "$1"; }
else
  pg() { docker exec -i paycraft_db psql -U postgres -d postgres -X -q "$@"; }
  run_file() { pg -1 -v ON_ERROR_STOP=1 -f - <"$1"; }
fi

pg -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS _paycraft_migrations(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())" >/dev/null

# Versions already recorded, one per line.
ledger="$(pg -v ON_ERROR_STOP=1 -tA -c "SELECT version FROM _paycraft_migrations")"

applied=0
skipped=0
shopt -s nullglob
for file in "$MIGRATIONS_DIR"/*.sql; do
  version="$(basename "$file" .sql)"
  case "$version" in
    *[!A-Za-z0-9_.-]*) echo "❌ unexpected migration file name: $file" >&2; exit 1 ;;
  esac
  if printf '%s\n' "$ledger" | grep -Fxq -- "$version"; then
    skipped=$((skipped + 1))
    continue
  fi
  echo "apply $version"
  if ! run_file "$file"; then
    echo "❌ migration $version failed — nothing from it was kept and the ledger is unchanged." >&2
    echo "   Fix server/migrations/$version.sql and re-run ./migrations-bootstrap.sh" >&2
    exit 1
  fi
  pg -v ON_ERROR_STOP=1 -c "INSERT INTO _paycraft_migrations(version) VALUES ('$version') ON CONFLICT (version) DO NOTHING" >/dev/null
  applied=$((applied + 1))
done

echo "✅ migrations: $applied applied, $skipped skipped"
