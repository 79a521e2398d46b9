#!/usr/bin/env bash
# Build the execution environment of paycraft.selfhost for AWX / Ansible
# Automation Platform (meta/execution-environment.yml):
#
#   scripts/build-ee.sh            collection tarball + build context in build/ee/context (offline)
#   scripts/build-ee.sh --build    the image too (ansible-builder build; pulls the base image)
#
# Extra arguments after --build go to ansible-builder build (e.g. --container-runtime docker).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/build/ee
cd "$REPO"

mkdir -p "$OUT"
# the collection itself, under a fixed name that meta/ee-requirements.yml installs
ansible-galaxy collection build --force --output-path "$OUT" >/dev/null
tarball=$(ls -t "$OUT"/paycraft-selfhost-*.tar.gz | head -n1)
cp "$tarball" "$OUT/paycraft-selfhost.tar.gz"
echo "[ee] collection: $(basename "$tarball")"

if [ "${1:-}" = "--build" ]; then
  shift
  exec ansible-builder build -f meta/execution-environment.yml -c "$OUT/context" "$@"
fi
ansible-builder create -f meta/execution-environment.yml -c "$OUT/context" --output-filename Containerfile
echo "[ee] build context: $OUT/context (docker build -f Containerfile $OUT/context, or: $0 --build)"
