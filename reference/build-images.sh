#!/usr/bin/env bash
# Build the reference stack images from the local Debian base.
#
#   reference/build-images.sh [--print-times] [--no-cache] [SERVICE ...]
#
# SERVICE is any of: db auth rest kong edge-runtime dashboard proxy (default: all), or db17 (the db
# image with Postgres 17 from Debian trixie; its base comes from PAYCRAFT_TRIXIE_BASE=1 scripts/prepare.sh).
# Images are tagged ${PAYCRAFT_IMAGE_PREFIX}<service>:${PAYCRAFT_IMAGE_TAG}
# (default paycraft-local/<service>:ref) and built FROM ${PAYCRAFT_BASE_IMAGE}
# (default paycraft-local/debian:bookworm). Nothing is pulled. Re-running is
# cheap: Docker's build cache makes an unchanged image a no-op.
#
# Images that fetch from the npm registry at build time (edge-runtime) trust,
# in their build stage only, the CA certificates this host added locally
# (/usr/local/share/ca-certificates/*.crt, or the PEM file named by
# PAYCRAFT_BUILD_CA_FILE): needed where HTTPS goes through an intercepting
# proxy. PAYCRAFT_NPM_REGISTRY overrides npm's registry for those builds.
# PAYCRAFT_BUILD_NETWORK (e.g. "host") is passed to `docker build --network`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
base="${PAYCRAFT_BASE_IMAGE:-paycraft-local/debian:bookworm}"
prefix="${PAYCRAFT_IMAGE_PREFIX:-paycraft-local/}"
tag="${PAYCRAFT_IMAGE_TAG:-ref}"
all_services=(db auth rest kong edge-runtime dashboard proxy)
# variants: an image built from another service's recipe with other build args (not in the default set)
#   db17  the db recipe with Debian trixie's postgresql-17 (the Postgres 17 stand-in for major upgrades);
#         its base is PAYCRAFT_TRIXIE_IMAGE (default paycraft-local/debian:trixie), made by
#         PAYCRAFT_TRIXIE_BASE=1 bash scripts/prepare.sh
trixie="${PAYCRAFT_TRIXIE_IMAGE:-paycraft-local/debian:trixie}"
declare -A variant_dir=([db17]=db)
declare -A variant_base=([db17]="$trixie")
declare -A variant_args=([db17]="PG_MAJOR=17")

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

print_times=0
build_opts=()
services=()
for arg in "$@"; do
    case "$arg" in
        --print-times) print_times=1 ;;
        --no-cache) build_opts+=(--no-cache) ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "build-images.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
        *)
            if [ ! -f "$here/images/${variant_dir[$arg]:-$arg}/Dockerfile" ]; then
                echo "build-images.sh: unknown service '$arg' (expected one of: ${all_services[*]} ${!variant_dir[*]})" >&2
                exit 2
            fi
            services+=("$arg") ;;
    esac
done
[ ${#services[@]} -gt 0 ] || services=("${all_services[@]}")

if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "build-images.sh: base image '$base' is not present on this engine." >&2
    echo "Build it first: bash scripts/prepare.sh (or set PAYCRAFT_BASE_IMAGE)." >&2
    exit 1
fi

extra_ca=""
if [ -n "${PAYCRAFT_BUILD_CA_FILE:-}" ]; then
    extra_ca="$(cat "$PAYCRAFT_BUILD_CA_FILE")"
else
    for crt in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$crt" ] && extra_ca+="$(cat "$crt")"$'\n'
    done
fi

now() { date +%s.%N; }
declare -A took
total_start=$(now)
for svc in "${services[@]}"; do
    image="${prefix}${svc}:${tag}"
    dir="${variant_dir[$svc]:-$svc}"
    from="${variant_base[$svc]:-$base}"
    if ! docker image inspect "$from" >/dev/null 2>&1; then
        echo "build-images.sh: base image '$from' of $svc is not present on this engine." >&2
        echo "Build it first: PAYCRAFT_TRIXIE_BASE=1 bash scripts/prepare.sh" >&2
        exit 1
    fi
    echo "==> building $image (from $from)"
    start=$(now)
    # The legacy builder (engine 20.10, no buildx) prints its progress; keep it
    # on stderr so that stdout carries only the summary.
    args=(--build-arg "BASE_IMAGE=$from")
    for kv in ${variant_args[$svc]:-}; do args+=(--build-arg "$kv"); done
    [ -z "${PAYCRAFT_BUILD_NETWORK:-}" ] || args+=(--network "$PAYCRAFT_BUILD_NETWORK")
    if grep -q '^ARG EXTRA_CA_CERTS' "$here/images/$dir/Dockerfile"; then
        args+=(--build-arg "EXTRA_CA_CERTS=$extra_ca" --build-arg "NPM_REGISTRY=${PAYCRAFT_NPM_REGISTRY:-}")
    fi
    if ! docker build ${build_opts[@]+"${build_opts[@]}"} "${args[@]}" -t "$image" "$here/images/$dir" >&2; then
        echo "build-images.sh: building $image failed (see the output above)" >&2
        exit 1
    fi
    took[$svc]=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
done
total=$(awk -v a="$total_start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')

if [ "$print_times" = 1 ]; then
    for svc in "${services[@]}"; do
        printf '%-14s %8ss  %s\n' "$svc" "${took[$svc]}" "${prefix}${svc}:${tag}"
    done
    printf '%-14s %8ss\n' total "$total"
fi
