#!/usr/bin/env bash
# README's first command: bring the whole PayCraft stack up on this machine from
# the bundled reference release, and show the smoke result.
#
#   1. prepare the machine (venv, Docker engine, Compose v2, local base image)
#   2. build the reference images and generate the reference release
#   3. ansible-playbook -i inventories/local playbooks/site.yml
#
# Re-running it is fast and changes nothing. Extra arguments go to
# ansible-playbook (e.g. --tags smoke, -e paycraft_version=v1.1.0).
# Remove everything again: scripts/demo.sh --destroy
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

if [ "${1:-}" = "--destroy" ]; then
  docker compose -p selfhost down --volumes --remove-orphans
  rm -rf /opt/paycraft /etc/paycraft
  exit 0
fi

bash scripts/prepare.sh
VENV=${PAYCRAFT_VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$VENV/collections"

echo "[demo] building the reference images (cached after the first run)"
bash reference/build-images.sh
echo "[demo] generating the reference release"
bash reference/make-release.sh

# A demo installed from an earlier reference release has tags that this one rebuilt (the reference's
# tags are regenerated from reference/release/, and their commits change when it does): say how to
# start over instead of letting the checkout refuse to clobber them.
ref_repo="$REPO/reference/build/paycraft.git"
if [ -d /opt/paycraft/src/.git ] && [ "$(git -C /opt/paycraft/src config remote.origin.url 2>/dev/null)" = "file://$ref_repo" ]; then
  for tag in $(git -C "$ref_repo" tag); do
    installed=$(git -C /opt/paycraft/src rev-parse -q --verify "refs/tags/$tag^{commit}" 2>/dev/null || true)
    if [ -n "$installed" ] && [ "$installed" != "$(git -C "$ref_repo" rev-parse "refs/tags/$tag^{commit}")" ]; then
      echo "[demo] the demo in /opt/paycraft was installed from an earlier reference release (its tag $tag" >&2
      echo "[demo] is another commit now). Nothing was changed. Start it over (this deletes the demo's data):" >&2
      echo "[demo]   scripts/demo.sh --destroy && scripts/demo.sh" >&2
      exit 1
    fi
  done
fi

echo "[demo] ansible-playbook -i inventories/local playbooks/site.yml $*"
exec ansible-playbook -i inventories/local/hosts.yml playbooks/site.yml "$@"
