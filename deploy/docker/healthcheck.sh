#!/bin/bash
# Container health check without curl in the image: GET http://127.0.0.1:$PORT$PATH over bash's
# /dev/tcp; healthy when the status is 200. Port: RADSTREAM_HTTP__PORT (default 8080); path: the
# first argument (default /ping, liveness; /health is readiness: database, storage, models).
# Neither needs a credential.
set -uo pipefail
port="${RADSTREAM_HTTP__PORT:-8080}"
path="${1:-/ping}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "GET $path: ${status%$'\r'}" >&2; exit 1 ;;
esac
