#!/usr/bin/env bash
# Completion latency with and without MPPS (examples/bench_mpps.rs): one-image DX studies,
# release -> inference.completed at the default quiet window, and (later of N-SET COMPLETED,
# last listed instance) -> inference.completed with a pynetdicom MPPS SCU. Prints a summary
# and writes bench/out/mpps.json.
#
#   bench/mpps.sh                 # release build (measure on an otherwise idle machine)
#   PROFILE=debug bench/mpps.sh   # debug build: proves the run, figures not comparable
# Environment: STUDIES (per run, default 30), ROWS/COLS (default 2500x2048), PROFILE.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
PY=.venv/bin/python3
STUDIES=${STUDIES:-30}
ROWS=${ROWS:-2500}
COLS=${COLS:-2048}
PROFILE=${PROFILE:-release}
mkdir -p "$OUT/bin"

if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q --example bench_mpps --bin radstream
else
  cargo build --locked -q --example bench_mpps --bin radstream
fi
TARGET="${CARGO_TARGET_DIR:-target}/$PROFILE"
# The shared target folder is rebuilt by others: measure private copies.
mkdir -p "$OUT/bin/$PROFILE"
cp "$TARGET/radstream" "$OUT/bin/$PROFILE/radstream"
cp "$TARGET/examples/bench_mpps" "$OUT/bin/$PROFILE/bench_mpps"

N=$(( 2 * (STUDIES + 2) ))
SET="$OUT/mpps-studies-${N}-${ROWS}x${COLS}"
if [ ! -f "$SET/.done" ]; then
  echo "generating $N one-image DX studies ${ROWS}x${COLS} (once)..." >&2
  rm -rf "$SET"
  "$PY" tools/fixtures/make_fixtures.py --out "$SET" --studies "$N" \
    --instances-per-study 1 --modality DX --rows "$ROWS" --cols "$COLS" --seed 12 >/dev/null
  touch "$SET/.done"
fi

"$OUT/bin/$PROFILE/bench_mpps" --bin "$OUT/bin/$PROFILE/radstream" --studies "$SET" \
  --python "$PY" --count "$STUDIES" --out "$OUT/mpps.json" --logs "$OUT/mpps-logs"
