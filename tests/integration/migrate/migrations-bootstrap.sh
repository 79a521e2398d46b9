#!/usr/bin/env bash
# A faithful re-implementation of runbook section 4 (infra/selfhost/migrations-bootstrap.sh),
# holes included: it is the anchor that paycraft_migrate is tested and benchmarked against.
#
#   - connects with PAYCRAFT_DB_PASSWORD, via local psql if present, else docker exec paycraft_db psql
#   - CREATE TABLE IF NOT EXISTS _paycraft_migrations(version TEXT PRIMARY KEY, applied_at ...)
#   - every $MIGRATIONS_DIR/*.sql in lexical order; a version already in the ledger is skipped,
#     a missing one runs with psql -1 -v ON_ERROR_STOP=1, then its ledger row is inserted
#     in a separate call
#   - prints "✅ migrations: N applied, M skipped"
#
# Connection: PGHOST (localhost), PGPORT (54322), PGUSER (postgres), PGDATABASE (postgres).
set -euo pipefail

MIGRATIONS_DIR=${MIGRATIONS_DIR:-../../server/migrations}
: "${PAYCRAFT_DB_PASSWORD:?PAYCRAFT_DB_PASSWORD must be set (see .env)}"
export PGPASSWORD="$PAYCRAFT_DB_PASSWORD"
export PGHOST=${PGHOST:-localhost} PGPORT=${PGPORT:-54322} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-postgres}
export LC_COLLATE=C

if command -v psql >/dev/null 2>&1; then
  PSQL=(psql -X -q)
else
  PSQL=(docker exec -i -e PGPASSWORD paycraft_db psql -X -q -U "$PGUSER" -d "$PGDATABASE")
fi

"${PSQL[@]}" -v ON_ERROR_STOP=1 -c \
  "CREATE TABLE IF NOT EXISTS _paycraft_migrations(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"

applied=0
skipped=0
for f in "$MIGRATIONS_DIR"/*.sql; do
  [ -e "$f" ] || continue
  version=$(basename "$f" .sql)
  if [ "$("${PSQL[@]}" -tAc "SELECT 1 FROM _paycraft_migrations WHERE version = '$version'")" = "1" ]; then
    skipped=$((skipped + 1))
    continue
  fi
  echo "apply $version"
  "${PSQL[@]}" -1 -v ON_ERROR_STOP=1 -f - <"$f"
  "${PSQL[@]}" -v ON_ERROR_STOP=1 -c "INSERT INTO _paycraft_migrations(version) VALUES ('$version')"
  applied=$((applied + 1))
done
echo "✅ migrations: $applied applied, $skipped skipped"
