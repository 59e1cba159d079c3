#!/usr/bin/env bash
# Inference benchmark: per-stage timings and images/s at batch 1, 8, 32 for the demo ensemble
# and every installed segmentation model (the real lung segmenter, when setup has made it)
# on a 3000x2500 16-bit CR DICOM and its JPEG 2000 re-encoding, then for a DenseNet-121-sized
# model (1x224x224, 18 outputs), each beside Python onnxruntime on the same model (the ceiling)
# with the ratio.
#
#   bench/inference.sh [DENSENET.onnx]
# Without an argument the DenseNet-121 (random weights, fixed seed) is built once into
# $OUT/densenet121_1x224_18.onnx by tools/byom/make_densenet_onnx.py (needs only `onnx`).
# A file given must take "image" N x C x 224 x 224 and give "logits" N x 18 (C from
# DENSENET_CHANNELS, default 1).
# Environment: MODELS (default models), OUT (default bench/out), BENCH_SECONDS (seconds per
# measurement, default 5; not SECONDS, which bash keeps for itself).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
MODELS=${MODELS:-models}
SECONDS_PER=${BENCH_SECONDS:-5}
PY=.venv/bin/python3
mkdir -p "$OUT"
if [ ! -f "$OUT/cr/manifest.json" ]; then
  "$PY" tools/fixtures/make_fixtures.py --out "$OUT/cr" --studies 1 --instances-per-study 1 \
    --modality CR --rows 3000 --cols 2500 --bits-stored 16 >/dev/null
fi
CR=$(find "$OUT/cr" -name '*.dcm' | sort | head -1)
J2K="$OUT/cr_j2k.dcm"
[ -f "$J2K" ] || "$PY" tools/fixtures/encode_j2k.py "$CR" "$J2K"
HTJ2K="$OUT/cr_htj2k.dcm"
[ -f "$HTJ2K" ] || "$PY" tools/fixtures/encode_j2k.py "$CR" "$HTJ2K" --htj2k
if [ $# -ge 1 ]; then
  DENSENET=$1
else
  DENSENET="$OUT/densenet121_1x224_18.onnx"
  [ -f "$DENSENET" ] || "$PY" tools/byom/make_densenet_onnx.py "$DENSENET" --channels 1 --size 224 --labels 18
fi
ARGS=(--models "$MODELS" --dicom "$CR" --dicom "$J2K" --dicom "$HTJ2K" --seconds "$SECONDS_PER"
      --onnx "$DENSENET" --onnx-channels "${DENSENET_CHANNELS:-1}" --onnx-size 224 --onnx-labels 18)
cargo run --release --example bench_inference -- "${ARGS[@]}"
