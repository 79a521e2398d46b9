#!/usr/bin/env bash
# kill -9 of ansible-playbook at a chosen point of an upgrade (Molecule upgrade/rollback scenarios).
#   kill-at.sh HOST STEP MAX_SECONDS LOG -- ansible-playbook ARGS...
# Starts the command in its own process group and, on HOST itself, a watcher that reads the
# operation record every 0.1 s until STEP has begun in a running operation; the moment the
# watcher returns, SIGKILLs the whole group and prints the record.
# KILL_AT_RECORD=PATH watches another record of the host instead (the rotation's rotate.json, the write
# hold's write-hold.json): STEP is then the value of its "status" ("started", "applied"; several
# separated by commas: the first one seen), or "present" for any record at all. Such a record may hold secrets: only its status, kind and operation are printed.
# The watcher runs inside the host (one `docker exec` for the whole wait): polling from here took a
# `docker exec` and a python3 per look, about 0.15 CPU-s each, a quarter of this machine's two cores
# for as long as the upgrade took to reach STEP.
set -euo pipefail
host=$1 step=$2 max=$3 log=$4
shift 5
pidfile=/tmp/paycraft-kill-at-watcher.pid
record=${KILL_AT_RECORD:-/etc/paycraft/operation.json}

setsid "$@" > "$log" 2>&1 &
victim=$!
# exit 0: STEP has begun; exit 3: MAX_SECONDS passed
docker exec "$host" python3 -c '
import json, os, sys, time
step, deadline, pidfile, record = sys.argv[1], time.monotonic() + float(sys.argv[2]), sys.argv[3], sys.argv[4]
operation = record == "/etc/paycraft/operation.json"
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
while time.monotonic() < deadline:
    try:
        with open(record) as f:
            r = json.load(f)
    except (OSError, ValueError):  # not written yet, or caught half-written
        r = {}
    if not isinstance(r, dict):
        r = {}
    if operation and r.get("status") == "running" and any(s.get("name") == step for s in r.get("steps", [])):
        sys.exit(0)
    if not operation and r and (step == "present" or r.get("status") in step.split(",")):
        sys.exit(0)
    time.sleep(0.1)
sys.exit(3)
' "$step" "$max" "$pidfile" "$record" &
watcher=$!

stop_watcher() {  # the watcher outlives its docker exec client: end it on the host
  kill "$watcher" 2>/dev/null || true
  docker exec "$host" python3 -c '
import os, signal, sys
try:
    os.kill(int(open(sys.argv[1]).read()), signal.SIGTERM)
except (OSError, ValueError):
    pass
' "$pidfile" || true
}

first=""
wait -n -p first "$watcher" "$victim" && rc=0 || rc=$?
if [ "$first" = "$watcher" ] && [ "$rc" = 0 ]; then
  kill -9 -- "-$victim"
  wait "$victim" 2>/dev/null || true
  if [ "$record" = /etc/paycraft/operation.json ]; then
    docker exec "$host" cat "$record"
  else  # names only: a rotation record holds the old and new values
    docker exec "$host" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({k: r[k] for k in ("status", "kind", "operation", "since") if k in r}))
' "$record"
  fi
  exit 0
fi
if [ "$first" = "$watcher" ]; then
  kill -9 -- "-$victim"
  echo "step $step did not begin within ${max}s (watcher rc=$rc)" >&2
else
  stop_watcher
  echo "the run ended (rc=$rc) before step $step began:" >&2
fi
tail -40 "$log" >&2
exit 1
