#!/usr/bin/env bash
# Push the reference images to a test registry, as an operator fills an
# air-gapped fleet's registry: each paycraft-local/<service>:ref under its own
# name and under every upstream name it stands in for (reference/images/upstream-names).
#
#   tests/hosts/push-images.sh 127.0.0.1:35000
#
# Prints "pushed <name>" for each name whose digest the registry did not have.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REGISTRY=${1:?usage: push-images.sh REGISTRY_HOST:PORT}
NAMES=$REPO/reference/images/upstream-names

push() {  # push LOCAL_IMAGE NAME
  local src=$1 name=$2 repo=${2%:*} tag=${2##*:} mine theirs
  # the digest this image had when it was last pushed here, and the registry's digest for the tag
  mine=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$src" \
         | sed -n "s|^$REGISTRY/$repo@||p" | head -n1 || true)
  theirs=$(curl -fsSI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
             "http://$REGISTRY/v2/$repo/manifests/$tag" 2>/dev/null \
           | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p' || true)
  if [ -n "$mine" ] && [ "$mine" = "$theirs" ]; then
    return 0
  fi
  docker tag "$src" "$REGISTRY/$name"
  docker push -q "$REGISTRY/$name" >/dev/null
  echo "pushed $name"
}

while read -r service upstream; do
  case "$service" in ''|'#'*) continue ;; esac
  src=paycraft-local/$service:ref
  docker image inspect "$src" >/dev/null 2>&1 || { echo "missing image $src: run reference/build-images.sh" >&2; exit 1; }
  push "$src" "paycraft-local/$service:ref"
  for name in $upstream; do
    push "$src" "$name"
  done
done < "$NAMES"
