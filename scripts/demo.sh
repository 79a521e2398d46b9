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

echo "[demo] ansible-playbook -i inventories/local playbooks/site.yml $*"
exec ansible-playbook -i inventories/local/hosts.yml playbooks/site.yml "$@"
