#!/usr/bin/env bash
# Copy the bytecode cache of Ansible's module payloads (paycraft_test_pyc_cache.py, and the .pth file
# that loads it at interpreter start) into running test host containers, into the site directory of
# their Python 3.11 (Debian bookworm's). Used by tests/paycraft_dind.py and molecule/resources/create.yml.
#   tests/hosts/pyc_cache/install.sh CONTAINER...
# PAYCRAFT_TEST_PYC_CACHE=0 copies nothing (the hosts then compile every payload, as before; to compare).
set -euo pipefail
[ "${PAYCRAFT_TEST_PYC_CACHE:-1}" != 0 ] || exit 0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/python3.11/dist-packages"
cp "$HERE/paycraft_test_pyc_cache.py" "$HERE/paycraft-test-pyc-cache.pth" "$stage/python3.11/dist-packages/"
for container in "$@"; do
  tar -C "$stage" --owner=0 --group=0 -c python3.11 | docker cp - "$container:/usr/local/lib"
done
