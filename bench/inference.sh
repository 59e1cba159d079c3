#!/usr/bin/env bash
# Inference benchmark: per-stage timings and images/s at batch 1, 8, 32 for the demo ensemble
# on a 3000x2500 16-bit CR DICOM and its JPEG 2000 re-encoding, plus (optionally) a
# DenseNet-121-sized model, each compared with Python onnxruntime on the same model.
#
#   bench/inference.sh [DENSENET.onnx]
# Environment: MODELS (default models), OUT (default bench/out), SECONDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
MODELS=${MODELS:-models}
SECONDS_PER=${SECONDS:-5}
PY=.venv/bin/python3
mkdir -p "$OUT"
if [ ! -f "$OUT/cr/manifest.json" ]; then
  "$PY" tools/fixtures/make_fixtures.py --out "$OUT/cr" --studies 1 --instances-per-study 1 \
    --modality CR --rows 3000 --cols 2500 --bits-stored 16 >/dev/null
fi
CR=$(find "$OUT/cr" -name '*.dcm' | sort | head -1)
J2K="$OUT/cr_j2k.dcm"
[ -f "$J2K" ] || "$PY" bench/make_j2k.py "$CR" "$J2K"
ARGS=(--models "$MODELS" --dicom "$CR" --dicom "$J2K" --seconds "$SECONDS_PER")
if [ $# -ge 1 ]; then ARGS+=(--onnx "$1"); fi
cargo run --release --example bench_inference -- "${ARGS[@]}"
