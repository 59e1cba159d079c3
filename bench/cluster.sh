#!/usr/bin/env bash
# Cluster benchmark: several `radstream serve` processes on one PostgreSQL database (the
# README's "Running several nodes"). Prints:
# - how soon an event written on one node reaches an SSE client on another, woken by
#   LISTEN/NOTIFY and by the old 250 ms polling (p50/p99), beside the same client on the
#   writing node;
# - ingest of 200 DX (512x512) over 4 associations into one node and into two nodes, on local
#   disk and, when SeaweedFS is installed (scripts/setup.sh --test), on S3: instances/s, node
#   CPU ms and database transactions per instance;
# - PostgreSQL's commit rate here, and from these a projection (stated as such) for N nodes.
#
#   bench/cluster.sh
#   EVENT_STUDIES=50 bench/cluster.sh
# Environment: RADSTREAM_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
# Data sets are generated on first use under bench/out/ (not committed); writes
# bench/out/cluster.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test >/dev/null
OUT=bench/out
PY=.venv/bin/python3
EVENT_STUDIES=${EVENT_STUDIES:-100}
mkdir -p "$OUT/bin"
cargo build --release --locked -q --examples --bins
TARGET="${CARGO_TARGET_DIR:-target}/release"
cp "$TARGET/radstream" "$OUT/bin/radstream"
cp "$TARGET/examples/bench_cluster" "$OUT/bin/bench_cluster"

EV="$OUT/cluster-events"
if [ ! -f "$EV/.done" ]; then
  echo "generating $EVENT_STUDIES one-image DX studies (once)..." >&2
  rm -rf "$EV"
  "$PY" tools/fixtures/make_fixtures.py --out "$EV" --studies "$EVENT_STUDIES" \
    --instances-per-study 1 --modality DX --rows 256 --cols 256 --seed 21 >/dev/null
  touch "$EV/.done"
fi
if [ ! -f "$OUT/dx/.done" ]; then
  echo "generating the dx data set (once)..." >&2
  rm -rf "$OUT/dx"
  "$PY" tools/fixtures/make_fixtures.py --preset bench-dx --out "$OUT/dx" >/dev/null
  touch "$OUT/dx/.done"
fi

S3_ARGS=()
WEED="$(command -v weed || true)"
[ -n "$WEED" ] || [ ! -x .venv/bin/weed ] || WEED=.venv/bin/weed
if [ -n "$WEED" ]; then
  S3DIR="$(mktemp -d)"
  S3PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$WEED" mini -dir="$S3DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$S3PORT" >"$OUT/weed.log" 2>&1 &
  WEED_PID=$!
  trap 'kill $WEED_PID 2>/dev/null; rm -rf "$S3DIR"' EXIT
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$S3PORT) 2>/dev/null && break; sleep 0.1; done
  curl -s -X PUT "http://127.0.0.1:$S3PORT/radstream-bench" >/dev/null || true
  S3_ARGS=(--s3-endpoint "http://127.0.0.1:$S3PORT" --s3-bucket radstream-bench)
fi

"$OUT/bin/bench_cluster" --bin "$OUT/bin/radstream" --studies "$EV" --ingest "$OUT/dx" \
  --event-studies "$EVENT_STUDIES" --out "$OUT/cluster.json" --logs "$OUT/cluster-logs" \
  "${S3_ARGS[@]}"
