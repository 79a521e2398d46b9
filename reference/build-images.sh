#!/usr/bin/env bash
# Build the reference stack images from the local Debian base.
#
#   reference/build-images.sh [--print-times] [--no-cache] [SERVICE ...]
#
# SERVICE is any of: db auth rest kong edge-runtime dashboard (default: all).
# Images are tagged ${PAYCRAFT_IMAGE_PREFIX}<service>:${PAYCRAFT_IMAGE_TAG}
# (default paycraft-local/<service>:ref) and built FROM ${PAYCRAFT_BASE_IMAGE}
# (default paycraft-local/debian:bookworm). Nothing is pulled. Re-running is
# cheap: Docker's build cache makes an unchanged image a no-op.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
base="${PAYCRAFT_BASE_IMAGE:-paycraft-local/debian:bookworm}"
prefix="${PAYCRAFT_IMAGE_PREFIX:-paycraft-local/}"
tag="${PAYCRAFT_IMAGE_TAG:-ref}"
all_services=(db auth rest kong edge-runtime dashboard)

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
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
            if [ ! -f "$here/images/$arg/Dockerfile" ]; then
                echo "build-images.sh: unknown service '$arg' (expected one of: ${all_services[*]})" >&2
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

now() { date +%s.%N; }
declare -A took
total_start=$(now)
for svc in "${services[@]}"; do
    image="${prefix}${svc}:${tag}"
    echo "==> building $image (from $base)"
    start=$(now)
    # The legacy builder (engine 20.10, no buildx) prints its progress; keep it
    # on stderr so that stdout carries only the summary.
    if ! docker build ${build_opts[@]+"${build_opts[@]}"} --build-arg "BASE_IMAGE=$base" \
            -t "$image" "$here/images/$svc" >&2; then
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
