#!/usr/bin/env bash
# Pipeline benchmark: latency from the sender's association release to the
# inference.completed event on an open SSE stream (one-image CXR studies, sent one after the
# other, at the default quiet window and a low one), and SSE fan-out to 1,000 and 10,000
# subscribers (delivery latency, node RSS). Compares with MONAI Informatics Gateway's 5 s
# grouping timer and Orthanc's 60 s StableAge (constants), and measures Orthanc's
# StableStudy at StableAge 1 s when Orthanc is installed. Prints a summary and writes
# bench/out/pipeline.json.
#
#   bench/pipeline.sh
# Environment: STUDIES (latency studies per run, default 50), QUIET_MS (default 150,1000),
# FANOUT (default 1000,10000), FANOUT_STUDIES (default 3), ORTHANC_STUDIES (default 10, 0 to
# skip), ROWS/COLS (image size, default 2500x2048 DX). Studies are generated on first use
# under bench/out/ (not committed). Each run starts its own node and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
PY=.venv/bin/python3
STUDIES=${STUDIES:-50}
ROWS=${ROWS:-2500}
COLS=${COLS:-2048}
mkdir -p "$OUT/bin"

# The shared target folder is rebuilt by others: measure private copies.
cargo build --release --locked -q --examples --bins
TARGET="${CARGO_TARGET_DIR:-target}/release"
cp "$TARGET/radstream" "$OUT/bin/radstream"
cp "$TARGET/examples/bench_pipeline" "$OUT/bin/bench_pipeline"

SET="$OUT/pipeline-studies-${ROWS}x${COLS}"
if [ ! -f "$SET/.done" ]; then
  echo "generating $((STUDIES + 2)) one-image DX studies ${ROWS}x${COLS} (once)..." >&2
  rm -rf "$SET"
  "$PY" tools/fixtures/make_fixtures.py --out "$SET" --studies $((STUDIES + 2)) \
    --instances-per-study 1 --modality DX --rows "$ROWS" --cols "$COLS" --seed 11 >/dev/null
  touch "$SET/.done"
fi

# 10,000 SSE connections need as many descriptors in the node and in the client.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 10240 ] || echo "warning: ulimit -n is $(ulimit -n); 10,000 subscribers will fail" >&2

ORTHANC_STUDIES=${ORTHANC_STUDIES:-10}
command -v Orthanc >/dev/null || ORTHANC_STUDIES=0
"$OUT/bin/bench_pipeline" --bin "$OUT/bin/radstream" --studies "$SET" \
  --latency-studies "$STUDIES" --quiet-ms "${QUIET_MS:-150,1000}" \
  --fanout "${FANOUT:-1000,10000}" --fanout-studies "${FANOUT_STUDIES:-3}" \
  --orthanc-studies "$ORTHANC_STUDIES" --out "$OUT/pipeline.json" --logs "$OUT/pipeline-logs"
