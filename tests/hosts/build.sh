#!/usr/bin/env bash
# Build the images of the disposable test hosts from the local Debian base:
#   paycraft-local/host:bookworm       a bare Debian host (python3 only)
#   paycraft-local/dind-host:bookworm  the same with Debian's docker.io, git, psycopg2
#   paycraft-local/registry:2          a private registry (Debian's docker-registry)
#   paycraft-local/pebble:bookworm     Debian's pebble, the ACME test CA of the tls scenario
# Each image carries the sha256 of its recipe as a label and is rebuilt only
# when the recipe changed. Used by scripts/test.sh, Molecule and the tests.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${PAYCRAFT_BASE_IMAGE:-paycraft-local/debian:bookworm}

build() {  # build TAG DIR [BASE]
  local tag=$1 dir=$HERE/$2 base=$3 digest have
  # the recipe's files and the id of the image it starts from
  digest=$( (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum
             docker image inspect --format '{{.Id}}' "$base") | sha256sum | cut -c1-16)
  have=$(docker image inspect --format '{{ index .Config.Labels "paycraft.recipe" }}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$digest" ]; then
    return 0
  fi
  printf '[hosts] building %s\n' "$tag"
  docker build -q --label "paycraft.recipe=$digest" --build-arg "BASE=$base" -t "$tag" "$dir" >/dev/null
}

docker image inspect "$BASE" >/dev/null 2>&1 || { echo "[hosts] the base image $BASE is missing: run scripts/prepare.sh" >&2; exit 1; }
build paycraft-local/host:bookworm host "$BASE"
build paycraft-local/dind-host:bookworm dind-host paycraft-local/host:bookworm
build paycraft-local/registry:2 registry "$BASE"
build paycraft-local/pebble:bookworm pebble paycraft-local/host:bookworm
