#!/usr/bin/env bash
# Run every test of paycraft.selfhost: prepare the machine, lint, pytest
# (unit + integration against real PostgreSQL and Docker), Molecule scenarios.
#
#   scripts/test.sh                 everything (what .ci/run runs)
#   scripts/test.sh -k migrate      extra arguments go to pytest
#
# Environment:
#   PAYCRAFT_SKIP_MOLECULE=1   skip the Molecule scenarios (quick local loops)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash scripts/prepare.sh
VENV=${PAYCRAFT_VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"
export PAYCRAFT_STRICT=1
export ANSIBLE_COLLECTIONS_PATH="$VENV/collections"

step() { printf '\n=== %s\n' "$*"; }

# Tests converge on disposable hosts only; this proves it: a PayCraft install on
# this machine (the demo's, an operator's) is recorded now and must be exactly
# the same after every test and scenario.
install_state=$(mktemp)
python3 scripts/install-state.py record "$install_state"

step "ruff"
ruff check .

step "ansible-lint (production profile)"
# ansible-lint installs the collection under $HOME/.ansible/collections; a stale
# copy there would shadow this checkout later, so it gets a throw-away HOME.
lint_home=$(mktemp -d)
HOME=$lint_home ansible-lint --profile production --offline
rm -rf "$lint_home"

step "pytest"
# --junitxml lets us verify below that tests really ran
rc=0
pytest -p no:cacheprovider --junitxml="${TMPDIR:-/tmp}/paycraft-pytest.xml" "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
[ "$rc" = 0 ] || exit "$rc"

if [ "${PAYCRAFT_SKIP_MOLECULE:-0}" != 1 ] && [ -d molecule ]; then
  bash tests/hosts/build.sh
  for scenario in $(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -rn1 basename | sort); do
    step "molecule test -s $scenario"
    started=$SECONDS
    molecule test -s "$scenario"
    printf 'molecule %s: %ds\n' "$scenario" "$((SECONDS - started))"
  done
fi

step "this machine's own PayCraft install"
python3 scripts/install-state.py check "$install_state"
rm -f "$install_state"
echo
echo "all tests passed"
