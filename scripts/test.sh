#!/usr/bin/env bash
# Run every test of paycraft.selfhost: prepare the machine, lint, pytest
# (unit + integration against real PostgreSQL and Docker), Molecule scenarios.
#
#   scripts/test.sh                 everything (what .ci/run runs)
#   scripts/test.sh -k migrate      extra arguments go to pytest
#
# Environment:
#   PAYCRAFT_SKIP_MOLECULE=1   skip the Molecule scenarios (quick local loops)
#   PAYCRAFT_MOLECULE_JOBS=N   Molecule scenarios run at once (default 3; scripts/molecule.sh)
#   PAYCRAFT_KILL_MATRIX=full  every trial of the upgrade/rollback kill -9 matrix (molecule kill: 16 trials,
#                              ~50 min on a loaded 2-core machine). Without it a whole run takes the covering
#                              subset below (7 trials: upgrade and rollback.yml killed, each playbook as the
#                              next run; 12.5 min of trials at load 2-3, ~21 at load 5-9, ~3.5 more than the 5 upgrade trials it
#                              had), which keeps it near CI's time. `molecule test -s kill` run by hand
#                              runs every trial; PAYCRAFT_KILL_TRIALS names trials explicitly. The same
#                              setting runs every one of rotate-kill's 11 trials; without it the 8 below
#                              (PAYCRAFT_ROTATE_KILL_TRIALS names them explicitly).
#   PAYCRAFT_TEST_PYC_CACHE=0  the disposable hosts and the local-connection runs compile every Ansible module
#                              payload again (default: a bytecode cache, tests/hosts/pyc_cache; test hosts only)
#   PAYCRAFT_TEST_SERIAL=1     one thing at a time: the Molecule scenarios after pytest instead of beside
#                              it, and one pytest process (a whole run otherwise starts a second one
#                              for the longest self-contained modules: side_paths below)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# the trixie base too: the Postgres 17 reference image (reference/build-images.sh db17) is built from it
PAYCRAFT_TRIXIE_BASE=1 bash scripts/prepare.sh
VENV=${PAYCRAFT_VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"
export PAYCRAFT_STRICT=1
export ANSIBLE_COLLECTIONS_PATH="$VENV/collections"

step() { printf '\n=== %s\n' "$*"; }

# The kill -9 matrix's subset for a whole run (see PAYCRAFT_KILL_MATRIX above). The trials run in the
# matrix's order and each starts where the one before left the host, so the subset keeps the versions in
# line (v1.0.0 after 1, 4; v1.1.0 after 5, 7, 8; v1.0.0 after 9; v1.1.0 after 14; v1.0.0 after 15; v1.1.0
# after 16). upgrade.yml killed at snapshot (1: upgrade.yml abandons it), at smoke (4: rollback.yml rolls
# it back), at checkout (5: site.yml resumes it), its automatic rollback at keep (7: site.yml completes
# it); rollback.yml (restoring beside the live database) killed during its restore beside (8: site.yml
# undoes it, the live database untouched), at its exchange (9: site.yml finishes the exchange and
# completes it without restoring again), at up, writes still held (14: site.yml completes it), at smoke,
# writes let through (15: upgrade.yml keeps them); its copy path killed at stop (16: upgrade.yml
# completes it). Every playbook is a next run; the rollback trials check every write acknowledged after
# the killed rollback's writes_held_at (an undone one: every write). Left out: 3 (upgrade killed at
# recreate, upgrade.yml next: the same recovery as 4 after the same migrations) and the other rollback
# steps (2, 6, 10-13, 17, 18).
if [ "${PAYCRAFT_KILL_MATRIX:-}" != full ]; then
  export PAYCRAFT_KILL_TRIALS=${PAYCRAFT_KILL_TRIALS-1,4,5,7,8,9,14,15,16}
fi
# rotate-kill's subset: both secrets, a kill at each of its points (the hold present, started, applied)
# and each next run (site.yml, rotate.yml, its revert, backup.yml, upgrade.yml, rollback.yml) at least
# once. Left out: dba, dbx and jws, each the same kill and next run as jwa, jwx and dbs for the other
# secret.
if [ "${PAYCRAFT_KILL_MATRIX:-}" != full ]; then
  export PAYCRAFT_ROTATE_KILL_TRIALS=${PAYCRAFT_ROTATE_KILL_TRIALS-dbh,dbs,jwh,jwa,jwx,dbb,dbu,jwr}
fi

# Tests converge on disposable hosts only; this proves it: a PayCraft install on
# this machine (the demo's, an operator's) is recorded now and must be exactly
# the same after every test and scenario.
install_state=$(mktemp)
python3 scripts/install-state.py record "$install_state"

step "test hosts, reference images and the reference release (cached after the first run)"
# the integration tests and Molecule start disposable hosts from these images and
# clone the reference release from reference/build/paycraft.git
bash tests/hosts/build.sh
bash reference/build-images.sh
bash reference/make-release.sh >/dev/null

# The Molecule scenarios run beside pytest (both spend much of their time waiting on engines,
# health checks and sleeps, and each uses its own hosts, networks and ports); their output is
# printed whole after pytest's. PAYCRAFT_TEST_SERIAL=1 runs them after pytest instead.
molecule_pid=""
molecule_log=""
run_molecule=0
if [ "${PAYCRAFT_SKIP_MOLECULE:-0}" != 1 ] && [ -d molecule ]; then run_molecule=1; fi
if [ "$run_molecule" = 1 ] && [ "${PAYCRAFT_TEST_SERIAL:-0}" != 1 ]; then
  step "molecule scenarios (${PAYCRAFT_MOLECULE_JOBS:-3} at a time) started beside pytest"
  molecule_log=$(mktemp "${TMPDIR:-/tmp}/paycraft-molecule-all.XXXXXX")
  bash scripts/molecule.sh > "$molecule_log" 2>&1 &
  molecule_pid=$!
fi

# The linters run while the scenarios start; a finding fails the run at the end (the scenarios
# already started are not left running behind a script that stopped).
lint_failed=()
lint() {  # run a linter; remember it when it fails
  "$@" || lint_failed+=("$*")
}

step "ruff"
lint ruff check .

step "vermin (plugins/ run on the managed hosts' Python 3.9+)"
lint vermin -t=3.9- --violations --eval-annotations --no-tips plugins/

step "antsibull-docs (module and role documentation)"
lint antsibull-docs lint-collection-docs --plugin-docs "$VENV/collections/ansible_collections/paycraft/selfhost"

step "ansible-lint (production profile)"
# ansible-lint installs the collection under $HOME/.ansible/collections; a stale
# copy there would shadow this checkout later, so it gets a throw-away HOME.
lint_home=$(mktemp -d)
lint env HOME="$lint_home" ansible-lint --profile production --offline
rm -rf "$lint_home"

finish_molecule() {  # wait for the scenarios started beside pytest, print their output; their exit code
  [ -n "$molecule_pid" ] || return 0
  local mrc=0
  wait "$molecule_pid" || mrc=$?
  molecule_pid=""
  step "molecule scenarios (output)"
  cat "$molecule_log"
  rm -f "$molecule_log"
  return "$mrc"
}

step "pytest"
# --junitxml lets us verify below that tests really ran: a strict run fails on a
# skipped test (named, with its reason) and on a run where no test ran.
pytest_log=$(mktemp "${TMPDIR:-/tmp}/paycraft-pytest.XXXXXX.log")

check_pytest() {  # $1: pytest's exit code, $2: its junit report; the verdict as an exit code
  local prc=$1 report=$2
  if [ "$prc" = 5 ]; then
    echo "pytest collected no tests: that is a failure here" | tee -a "$pytest_log" >&2
    prc=1
  elif [ "$prc" = 0 ]; then
    python3 scripts/check_junit.py "$report" 2> >(tee -a "$pytest_log" >&2) || prc=$?
  fi
  rm -f "$report"
  return "$prc"
}

# A whole run (no pytest arguments) gives the longest self-contained test modules a second pytest
# process beside the first: its own session fixtures and disposable hosts, its output printed after
# the first's. PAYCRAFT_TEST_SERIAL=1 keeps one process.
# (backup ~31 min, lock ~12 min, disk ~6 min on a loaded machine; the first process ~55 min without them)
side_paths=(tests/integration/backup tests/integration/lock tests/integration/disk)
side_pid=""
main_args=("$@")
if [ $# -eq 0 ] && [ "${PAYCRAFT_TEST_SERIAL:-0}" != 1 ]; then
  side_junit=$(mktemp "${TMPDIR:-/tmp}/paycraft-pytest.XXXXXX.xml")
  side_log=$(mktemp "${TMPDIR:-/tmp}/paycraft-pytest-side.XXXXXX.log")
  echo "(${side_paths[*]} runs in a second pytest process beside this one; its output follows this one's)"
  pytest -p no:cacheprovider -rfEs --durations=10 --junitxml="$side_junit" "${side_paths[@]}" > "$side_log" 2>&1 &
  side_pid=$!
  main_args=()
  for path in "${side_paths[@]}"; do main_args+=("--ignore=$path"); done
fi

rc=0
junit=$(mktemp "${TMPDIR:-/tmp}/paycraft-pytest.XXXXXX.xml")
set +e
pytest -p no:cacheprovider -rfEs --durations=25 --junitxml="$junit" "${main_args[@]}" 2>&1 | tee -a "$pytest_log"
rc=${PIPESTATUS[0]}
set -e
check_pytest "$rc" "$junit" || rc=$?

if [ -n "$side_pid" ]; then
  src=0
  wait "$side_pid" || src=$?
  step "pytest ${side_paths[*]} (the second process)"
  tee -a "$pytest_log" < "$side_log"
  rm -f "$side_log"
  check_pytest "$src" "$side_junit" || src=$?
  [ "$src" = 0 ] || rc=$src
fi

mrc=0
if [ -n "$molecule_pid" ]; then
  finish_molecule || mrc=$?
elif [ "$run_molecule" = 1 ] && [ "$rc" = 0 ]; then
  step "molecule scenarios (${PAYCRAFT_MOLECULE_JOBS:-3} at a time)"
  bash scripts/molecule.sh || mrc=$?
fi
if [ ${#lint_failed[@]} -gt 0 ] || [ "$rc" != 0 ] || [ "$mrc" != 0 ]; then
  if [ "$rc" != 0 ]; then
    # the Molecule output above is long: repeat pytest's verdict last, where a reader looks first
    step "pytest's verdict again (its full output is above)"
    # check_junit's lines follow pytest's own summary in the log, so the range below holds them
    grep 'pytest collected no tests' "$pytest_log" || true
    if grep -q 'short test summary info' "$pytest_log"; then
      sed -n '/short test summary info/,$p' "$pytest_log" | tail -n 80
    else
      tail -n 20 "$pytest_log"
    fi
  fi
  for linter in "${lint_failed[@]}"; do echo "lint failed (its output is near the top): $linter" >&2; done
  echo "tests failed: ${#lint_failed[@]} linter(s) failed, pytest rc=$rc, molecule rc=$mrc" >&2
  exit 1
fi

step "this machine's own PayCraft install"
python3 scripts/install-state.py check "$install_state"
rm -f "$install_state" "$pytest_log"
echo
echo "all tests passed"
