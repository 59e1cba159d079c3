#!/usr/bin/env bash
# Ingest into object storage: DCMTK storescu sends 200 DX (512x512; and with BENCH_SETS="dx cr"
# also 40 CR of 3000x2500) over 4 associations to one
# radstream node on local disk (storage.backend = "local", fsync) and to one node on S3
# (storage.backend = "s3", SeaweedFS `weed mini` on this machine), taking turns, round after
# round. Prints instances/s and MB/s, the node's CPU time per instance, SeaweedFS's CPU time
# per instance (the S3 node only), and the object-store requests per instance, read from the
# node's /metrics (radstream_object_store_requests_total). Printed, not asserted.
#
#   bench/ingest_s3.sh                     # release build
#   BENCH_PROFILE=debug bench/ingest_s3.sh # the debug build (figures much slower; say so)
#   BENCH_REPEAT=5 bench/ingest_s3.sh      # runs per measurement (default 3); medians printed
#   BENCH_SETS="dx cr" bench/ingest_s3.sh  # the large CR too (default: dx)
#
# Data sets are generated on first use under bench/out/ (shared with bench/ingest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test >/dev/null
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
PROFILE="${BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q
else
  cargo build --locked -q
fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/radstream"
OUT=bench/out
mkdir -p "$OUT"
REPEAT="${BENCH_REPEAT:-3}"
SETS="${BENCH_SETS:-dx}"
export TCP_NODELAY=1
# gen, free_port, free_pair, wait_port, start_weed
. bench/lib.sh


cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_MS=$(echo "1000 / $(getconf CLK_TCK)" | bc -l)

PID=""
WEED_PID=""
WORK=$(mktemp -d /tmp/radstream-bench-s3.XXXXXX)
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  if [ -n "$WEED_PID" ]; then kill "$WEED_PID" 2>/dev/null; wait "$WEED_PID" 2>/dev/null; fi
  rm -rf "$WORK" || true
}
trap cleanup EXIT

# One SeaweedFS for every run; each S3 run writes under a prefix of its own.
KEY=radstream-bench SECRET=radstream-bench-secret BUCKET=radstream
mkdir -p "$WORK/weed"
start_weed "$WORK/weed" "$BUCKET" "$KEY" "$SECRET" "$WORK/weed.log"
wait_port "$S3_PORT" 600

start_node() { # backend port dir run -> sets PID, HTTP
  local backend=$1 port=$2 dir=$3 run=$4
  HTTP=$(free_port)
  local s3_env=()
  if [ "$backend" = s3 ]; then
    s3_env=(RADSTREAM_STORAGE__BACKEND=s3 RADSTREAM_STORAGE__S3__ENDPOINT="http://127.0.0.1:$S3_PORT"
      RADSTREAM_STORAGE__S3__BUCKET=$BUCKET RADSTREAM_STORAGE__S3__PREFIX="run-$run"
      RADSTREAM_STORAGE__S3__ALLOW_HTTP=true RADSTREAM_STORAGE__S3__ACCESS_KEY_ID=$KEY
      RADSTREAM_STORAGE__S3__SECRET_ACCESS_KEY=$SECRET)
  fi
  # The receiver alone: no inference competing for the cores.
  env RADSTREAM_PIPELINE__ENABLED=false RADSTREAM_STORAGE__DATA_DIR="$dir" \
    RADSTREAM_DICOM__PORT="$port" RADSTREAM_HTTP__PORT="$HTTP" RADSTREAM_LOG__LEVEL=warn \
    RADSTREAM_STORAGE__MIN_FREE_BYTES=0 RADSTREAM_STORAGE__MIN_FREE_PERCENT=0 \
    RADSTREAM_AUTH__JWT_SECRET=radstream-bench-secret-0123456789abcdef "${s3_env[@]}" \
    "$BIN" serve >"$dir.log" 2>&1 & PID=$!
  wait_port "$port" 600
}

send4() { # port set -> prints seconds
  local port=$1 set=$2 t0 t1 pids=()
  t0=$(date +%s.%N)
  for g in 0 1 2 3; do
    storescu -aec RADSTREAM +sd +r +sp '*.dcm' 127.0.0.1 "$port" "$OUT/$set-split/$g" >/dev/null 2>"$WORK/storescu$g.err" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "storescu failed" >&2; cat "$WORK"/storescu*.err >&2; exit 1; }; done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

# Object-store requests the node made, all operations together (0 on the local backend).
requests() {
  local token
  token=$("$BIN" token issue --subject bench --scope admin 2>/dev/null || true)
  curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$HTTP/metrics" \
    | awk '/^radstream_object_store_requests_total/ {n += $2} END {print n + 0}'
}

median() { printf '%s\n' $1 | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"; }
run=0
for set in $SETS; do
  gen "$set"
  files=$(find "$OUT/$set" -name '*.dcm' | wc -l)
  mb=$(du -sm --apparent-size "$OUT/$set" | cut -f1)
  declare -A RUNS=() CPU=() WEED=() REQ=()
  for _ in $(seq 1 "$REPEAT"); do
    for backend in local s3; do
      run=$((run + 1))
      dir="$WORK/node-$run"
      port=$(free_port)
      start_node "$backend" "$port" "$dir" "$run"
      c0=$(cpu_ticks "$PID")
      w0=$(cpu_ticks "$WEED_PID")
      RUNS[$backend]+="$(send4 "$port" "$set") "
      CPU[$backend]+="$(echo "($(cpu_ticks "$PID") - $c0) * $TICK_MS / $files" | bc -l) "
      WEED[$backend]+="$(echo "($(cpu_ticks "$WEED_PID") - $w0) * $TICK_MS / $files" | bc -l) "
      REQ[$backend]+="$(echo "$(RADSTREAM_STORAGE__DATA_DIR="$dir" RADSTREAM_AUTH__JWT_SECRET=radstream-bench-secret-0123456789abcdef requests) / $files" | bc -l) "
      errors=$(cat "$WORK"/storescu*.err 2>/dev/null | grep -c "^E:" || true)
      [ "$errors" = 0 ] || { echo "storescu reported errors sending to the $backend node:" >&2; cat "$WORK"/storescu*.err >&2; exit 1; }
      kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
      PID=""
      rm -rf "$dir"
      sync
    done
  done
  echo "$set: $files instances ($mb MB) over 4 associations, $PROFILE build, medians of $REPEAT:"
  for backend in local s3; do
    secs=$(median "${RUNS[$backend]}")
    printf '  %-5s %7.2f s  %7.1f inst/s  %6.1f MB/s  node CPU %6.2f ms/inst  SeaweedFS CPU %6.2f ms/inst  object-store requests %.2f/inst\n' \
      "$backend" "$secs" "$(echo "$files / $secs" | bc -l)" "$(echo "$mb / $secs" | bc -l)" \
      "$(median "${CPU[$backend]}")" "$(median "${WEED[$backend]}")" "$(median "${REQ[$backend]}")"
  done
done
