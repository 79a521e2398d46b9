#!/usr/bin/env bash
# Run the Molecule scenarios, PAYCRAFT_MOLECULE_JOBS at a time (default 3).
#
#   scripts/molecule.sh                 every scenario under molecule/
#   scripts/molecule.sh rollback fleet  the ones named
#
# Scenarios are independent (each has its own hosts, network and published
# ports; the private registry is shared and started by whichever comes first),
# so they can overlap: much of a scenario's time is spent waiting on engines,
# health checks and sleeps rather than on the CPU. Each scenario's output goes
# to a log that is printed whole when it ends; the script fails if any failed.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
jobs_max=${PAYCRAFT_MOLECULE_JOBS:-3}
if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t found < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -rn1 basename | sort)
  # the longest first, so that the last one to end starts early. Seconds in a whole CI run (load
  # ~12, 2 cores, 2026-12-07): kill 2764, rotate-kill 2461, rollback 1989, fleet 1444, rotate 989,
  # default 940, tls 625, upstream-shape 466 (tls, the longer of the last two, had been started last:
  # it ended 4075 s into the run, 17 s after it would have in this order); others after
  scenarios=()
  for s in rollback kill rotate-kill fleet rotate default tls upstream-shape; do
    [[ " ${found[*]} " == *" $s "* ]] && scenarios+=("$s")
  done
  for s in "${found[@]}"; do
    [[ " ${scenarios[*]:-} " == *" $s "* ]] || scenarios+=("$s")
  done
fi
[ ${#scenarios[@]} -gt 0 ] || { echo "molecule.sh: no scenarios found under molecule/" >&2; exit 1; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/paycraft-molecule.XXXXXX")
declare -A pid_of=() started_at=() scenario_of=()
failed=()

finish() {  # $1: scenario whose process ended, $2: its exit code
  local s=$1 rc=$2
  printf '\n=== molecule test -s %s: %s after %ds\n' "$s" "$([ "$rc" = 0 ] && echo passed || echo "FAILED (rc=$rc)")" \
    "$((SECONDS - started_at[$s]))"
  cat "$logs/$s.log"
  printf '=== end of molecule %s (rc=%s, %ds)\n' "$s" "$rc" "$((SECONDS - started_at[$s]))"
  [ "$rc" = 0 ] || failed+=("$s")
}

recap() {  # $1: a failed scenario; its failing tasks again, so that the end of the output says why
  local s=$1
  printf '\n=== why molecule %s failed (the failing tasks; the whole log is above)\n' "$s"
  # the task header before each failure and the failure itself, without colour codes
  sed 's/\x1b\[[0-9;]*m//g' "$logs/$s.log" \
    | awk '/TASK \[|PLAY \[/ { task = $0; next }
           /fatal: \[|failed: \[|ERROR! |CRITICAL / { if (task != "") print task; task = ""; n = 40 }
           n > 0 { print; n-- }' \
    | head -n 200
}

reap() {  # wait for any one running scenario to end (bash >= 5.1: wait -n -p)
  local pid rc s
  wait -n -p pid "${!scenario_of[@]}"; rc=$?
  s=${scenario_of[$pid]}
  unset "scenario_of[$pid]" "pid_of[$s]"
  finish "$s" "$rc"
}

for s in "${scenarios[@]}"; do
  [ -f "molecule/$s/molecule.yml" ] || { echo "molecule.sh: no scenario molecule/$s" >&2; exit 1; }
  while [ ${#pid_of[@]} -ge "$jobs_max" ]; do reap; done
  echo "=== molecule test -s $s (started; $jobs_max at a time)"
  started_at[$s]=$SECONDS
  molecule test -s "$s" > "$logs/$s.log" 2>&1 &
  pid_of[$s]=$!
  scenario_of[$!]=$s
  sleep 5   # the first create starts the shared registry; let it win the race
done
while [ ${#pid_of[@]} -gt 0 ]; do reap; done
for s in "${failed[@]}"; do recap "$s"; done
rm -rf "$logs"
if [ ${#failed[@]} -gt 0 ]; then
  echo "molecule scenarios failed: ${failed[*]}" >&2
  exit 1
fi
echo "molecule: ${#scenarios[@]} scenario(s) passed in ${SECONDS}s"
