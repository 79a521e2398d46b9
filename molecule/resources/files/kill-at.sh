#!/usr/bin/env bash
# kill -9 of ansible-playbook at a chosen point of an upgrade (Molecule upgrade/rollback scenarios).
#   kill-at.sh HOST STEP MAX_SECONDS LOG -- ansible-playbook ARGS...
# Starts the command in its own process group, reads HOST's operation record every 0.2 s until
# STEP has begun in a running operation, then SIGKILLs the whole group and prints the record.
set -euo pipefail
host=$1 step=$2 max=$3 log=$4
shift 5
setsid "$@" > "$log" 2>&1 &
victim=$!
deadline=$((SECONDS + max))
reached() {
  docker exec "$host" cat /etc/paycraft/operation.json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
sys.exit(0 if r.get("status") == "running" and any(s["name"] == sys.argv[1] for s in r.get("steps", [])) else 1)
' "$step"
}
while [ "$SECONDS" -lt "$deadline" ]; do
  if reached; then
    kill -9 -- "-$victim"
    wait "$victim" 2>/dev/null || true
    docker exec "$host" cat /etc/paycraft/operation.json
    exit 0
  fi
  if ! kill -0 "$victim" 2>/dev/null; then
    echo "the run ended before step $step began:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  sleep 0.2
done
kill -9 -- "-$victim"
echo "step $step did not begin within ${max}s" >&2
tail -40 "$log" >&2
exit 1
