#!/usr/bin/env bash
# DICOMweb benchmark, on this machine:
#  1. STOW-RS ingest of the ingest benchmark's DX data set (200 x 512x512, bench/out/dx),
#     radstream (fsync) vs Orthanc's DICOMweb plugin, one client, BATCH files per request
#     (default 10); instances/s and radstream's ratio. The pipeline is off (receive-only
#     node), so no inference competes with either server for the CPU.
#  2. WADO-RS retrieve of those instances one by one, from both servers: as stored, and
#     rewritten in JPEG-LS lossless (radstream: CharLS through dicom-pixeldata; Orthanc: its
#     DCMTK codecs); seconds and radstream's ratio.
#  3. QIDO-RS /studies latency (p50/p95 over REPEATS requests, default 200) on an index of
#     10,000 studies, inserted directly into the SQLite index (QIDO reads only the index).
#
#   bench/dicomweb.sh
#   RADSTREAM_BIN=/path/to/radstream bench/dicomweb.sh   # a release binary built elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
BATCH=${BATCH:-10}
REPEATS=${REPEATS:-200}
if [ -z "${RADSTREAM_BIN:-}" ]; then
  cargo build --release --locked -q
  # The shared target's binary can be replaced by another build: run a private copy.
  RADSTREAM_BIN=$(mktemp /tmp/radstream-bench-bin.XXXXXX)
  cp "${CARGO_TARGET_DIR:-target}/release/radstream" "$RADSTREAM_BIN"
  chmod 700 "$RADSTREAM_BIN" # mktemp made it 0600, and cp keeps the mode of a file it overwrites
fi
if [ ! -f "$OUT/dx/.done" ]; then
  echo "generating the dx data set (once)..." >&2
  rm -rf "$OUT/dx"
  .venv/bin/python3 tools/fixtures/make_fixtures.py --preset bench-dx --out "$OUT/dx" >/dev/null
  touch "$OUT/dx/.done"
fi
PY=.venv/bin/python3
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
SECRET=bench-secret-$(date +%s%N)

start_radstream() { # dir -> sets URL, TOKEN
  local dir=$1 port
  port=$(free_port)
  mkdir -p "$dir"
  export RADSTREAM_STORAGE__DATA_DIR="$dir" RADSTREAM_HTTP__PORT=$port RADSTREAM_DICOM__PORT=$(free_port) \
    RADSTREAM_LOG__LEVEL=warn RADSTREAM_STORAGE__MIN_FREE_BYTES=0 RADSTREAM_STORAGE__MIN_FREE_PERCENT=0 \
    RADSTREAM_AUTH__JWT_SECRET=$SECRET RADSTREAM_PIPELINE__ENABLED=false
  "$RADSTREAM_BIN" serve >"$dir.log" 2>&1 & PIDS+=($!)
  wait_port "$port"
  URL="http://127.0.0.1:$port/dicomweb"
  TOKEN=$("$RADSTREAM_BIN" token issue --subject bench --scope inference:write --scope results:read)
}

files=$(find "$OUT/dx" -name '*.dcm' | wc -l)
# 1. STOW-RS. Files read once first so neither server pays for a cold page cache.
find "$OUT/dx" -name '*.dcm' -exec cat {} + >/dev/null
dir=$(mktemp -d /tmp/radstream-dwbench.XXXXXX)
start_radstream "$dir/radstream"
read -r rs_secs _ < <($PY bench/dicomweb.py stow "$URL" "$TOKEN" "$OUT/dx" "$BATCH")
oport=$(free_port)
mkdir -p "$dir/orthanc"
cat > "$dir/orthanc.json" <<JSON
{"Name":"bench","StorageDirectory":"$dir/orthanc","IndexDirectory":"$dir/orthanc","DicomAet":"ORTHANC",
 "DicomPort":$(free_port),"HttpPort":$oport,"RemoteAccessAllowed":false,"AuthenticationEnabled":false,
 "Plugins":["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],"DicomWeb":{"Enable":true,"Root":"/dicom-web/"}}
JSON
Orthanc "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 & PIDS+=($!)
wait_port "$oport"
read -r or_secs _ < <($PY bench/dicomweb.py stow "http://127.0.0.1:$oport/dicom-web" - "$OUT/dx" "$BATCH")
printf 'STOW-RS %d files, %d per request: radstream %.2f s (%.1f inst/s), Orthanc %.2f s (%.1f inst/s), ratio %.2fx\n' \
  "$files" "$BATCH" "$rs_secs" "$(echo "$files / $rs_secs" | bc -l)" "$or_secs" "$(echo "$files / $or_secs" | bc -l)" \
  "$(echo "$or_secs / $rs_secs" | bc -l)"

# 2. WADO-RS retrieve, as stored and transcoded.
for ts in '*' 1.2.840.10008.1.2.4.80; do
  read -r rs_secs n rs_bytes < <($PY bench/dicomweb.py retrieve "$URL" "$TOKEN" "$ts")
  read -r or_secs _ or_bytes < <($PY bench/dicomweb.py retrieve "http://127.0.0.1:$oport/dicom-web" - "$ts")
  printf 'WADO-RS %d instances one by one, transfer-syntax=%s: radstream %.2f s (%.1f inst/s, %d MB), Orthanc %.2f s (%.1f inst/s, %d MB), ratio %.2fx\n' \
    "$n" "$ts" "$rs_secs" "$(echo "$n / $rs_secs" | bc -l)" $((rs_bytes / 1000000)) "$or_secs" "$(echo "$n / $or_secs" | bc -l)" \
    $((or_bytes / 1000000)) "$(echo "$or_secs / $rs_secs" | bc -l)"
done

# 3. QIDO on 10,000 studies (plus the 200-instance data set's studies).
$PY bench/dicomweb.py seed "$dir/radstream/radstream.db" 10000
for q in "limit=100" "PatientID=BENCH004321" "PatientName=BENCH*&limit=50" "StudyDate=20200301-20200315&limit=100" "AccessionNumber=A0009999&includefield=StudyDescription"; do
  read -r p50 p95 n < <($PY bench/dicomweb.py qido "$URL" "$TOKEN" "$REPEATS" "$q")
  printf 'QIDO /studies?%-45s p50 %7.2f ms  p95 %7.2f ms  (%d matches returned)\n' "$q" "$p50" "$p95" "$n"
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
rm -rf "$dir"
