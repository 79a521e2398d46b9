#!/bin/sh
# Entrypoint of the reference kong image: render nginx.conf from the
# declarative file, check it, and run nginx in the foreground.
set -eu
mkdir -p /tmp/kong
python3 /usr/local/lib/kong/render.py /tmp/kong/nginx.conf
nginx -t -q -c /tmp/kong/nginx.conf -e stderr
echo "kong: proxy listening (${KONG_PROXY_LISTEN:-0.0.0.0:8000}), config ${KONG_DECLARATIVE_CONFIG:-}" >&2
exec nginx -c /tmp/kong/nginx.conf -e stderr -g 'daemon off;'
