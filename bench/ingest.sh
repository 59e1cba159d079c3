#!/usr/bin/env bash
# Ingest benchmark: DCMTK storescu (TCP_NODELAY=1) sends the same data sets to radstream
# (fsync and os durability), DCMTK storescp and Orthanc, one after the other on this machine
# (taking turns, round after round), with 1 and 4 associations. Prints instances/s, MB/s and
# radstream's ratio to each peer, and each receiver's CPU time per instance (user + system, of
# its process, during the sending). Then, for each data set, the floor under any receiver that
# acknowledges only once an instance is synced in its final place and indexed
# (bench/durable_floor.py: the same disk work with no network and no DICOM), and what it leaves
# of storescp's speed on one association.
#
#   bench/ingest.sh            # both data sets (200 x 512x512 DX, 40 x 3000x2500 CR)
#   BENCH_SETS=dx bench/ingest.sh
#   BENCH_REPEAT=5 bench/ingest.sh   # runs per measurement (default 3); the median is printed
#   BENCH_BASELINE=old/radstream bench/ingest.sh   # also an older build (durable), taking turns
#
# Data sets are generated on first use under bench/out/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test >/dev/null
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
cargo build --release --locked -q
BIN="${CARGO_TARGET_DIR:-target}/release/radstream"
OUT=bench/out
mkdir -p "$OUT"
SETS="${BENCH_SETS:-dx cr}"
REPEAT="${BENCH_REPEAT:-3}"
export TCP_NODELAY=1
# gen, free_port, wait_port
. bench/lib.sh



start_receiver() { # name port dir -> sets PID
  local name=$1 port=$2 dir=$3
  case $name in
    radstream-fsync|radstream-os|baseline-fsync)
      local bin=$BIN
      [ "$name" = baseline-fsync ] && bin=$BENCH_BASELINE
      # The receiver alone, like the peers: no inference competing for the 2 cores.
      RADSTREAM_PIPELINE__ENABLED=false \
      RADSTREAM_STORAGE__DATA_DIR="$dir" RADSTREAM_STORAGE__DURABILITY="${name#*-}" \
      RADSTREAM_DICOM__PORT=$port RADSTREAM_HTTP__PORT=$(free_port) RADSTREAM_LOG__LEVEL=warn \
      RADSTREAM_STORAGE__MIN_FREE_BYTES=0 RADSTREAM_STORAGE__MIN_FREE_PERCENT=0 \
        "$bin" serve >"$dir.log" 2>&1 & PID=$! ;;
    storescp)
      mkdir -p "$dir"; storescp -od "$dir" "$port" >"$dir.log" 2>&1 & PID=$! ;;
    orthanc)
      mkdir -p "$dir"
      cat > "$dir.json" <<JSON
{"Name":"bench","StorageDirectory":"$dir","IndexDirectory":"$dir","DicomAet":"ORTHANC",
 "DicomPort":$port,"HttpPort":$(free_port),"RemoteAccessAllowed":false,"DicomCheckCalledAet":false,"Plugins":[]}
JSON
      Orthanc "$dir.json" >"$dir.log" 2>&1 & PID=$! ;;
  esac
  wait_port "$port"
}

send() { # port set assocs -> prints seconds
  local port=$1 set=$2 n=$3 t0 t1
  t0=$(date +%s.%N)
  if [ "$n" = 1 ]; then
    storescu -aec RADSTREAM +sd +r +sp '*.dcm' 127.0.0.1 "$port" "$OUT/$set" >/dev/null 2>"$OUT/storescu.err" \
      || { echo "storescu failed:" >&2; tail -3 "$OUT/storescu.err" >&2; exit 1; }
  else
    local pids=()
    for g in 0 1 2 3; do
      storescu -aec RADSTREAM +sd +r +sp '*.dcm' 127.0.0.1 "$port" "$OUT/$set-split/$g" >/dev/null 2>"$OUT/storescu$g.err" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { echo "storescu failed" >&2; exit 1; }; done
  fi
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_MS=$(echo "1000 / $(getconf CLK_TCK)" | bc -l)
declare -A RESULT RUNS CPU
RECEIVERS="radstream-fsync radstream-os storescp orthanc${BENCH_BASELINE:+ baseline-fsync}"
for set in $SETS; do
  gen "$set"
  files=$(find "$OUT/$set" -name '*.dcm' | wc -l)
  mb=$(du -sm --apparent-size "$OUT/$set" | cut -f1)
  for n in 1 4; do
    # Receivers take turns within each round, so the machine's drift over minutes (this kind
    # of shared machine drifts by tens of per cent) falls on all of them alike.
    for _ in $(seq 1 "$REPEAT"); do
      for recv in $RECEIVERS; do
        dir=$(mktemp -d /tmp/radstream-bench.XXXXXX)/store
        port=$(free_port)
        start_receiver "$recv" "$port" "$dir"
        c0=$(cpu_ticks "$PID")
        RUNS[$recv]+="$(send "$port" "$set" "$n") "
        CPU[$recv]+="$(echo "($(cpu_ticks "$PID") - $c0) * $TICK_MS / $files" | bc -l) "
        sent=$(cat "$OUT"/storescu*.err 2>/dev/null | grep -c "^E:" || true)
        [ "$sent" = 0 ] || { echo "storescu reported errors sending to $recv:" >&2; cat "$OUT"/storescu*.err >&2; exit 1; }
        kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
        rm -rf "$(dirname "$dir")"
        sync
      done
    done
    for recv in $RECEIVERS; do
      # The median run: one slow or fast outlier on a shared machine does not decide.
      secs=$(printf '%s\n' ${RUNS[$recv]} | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p")
      cpu=$(printf '%s\n' ${CPU[$recv]} | sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p")
      RUNS[$recv]=""
      CPU[$recv]=""
      RESULT[$set,$recv,$n]=$secs
      printf '%-4s %-16s %d assoc: %7.2f s  %7.1f inst/s  %7.1f MB/s  CPU %.2f ms/inst  (medians of %d)\n' \
        "$set" "$recv" "$n" "$secs" "$(echo "$files / $secs" | bc -l)" "$(echo "$mb / $secs" | bc -l)" "$cpu" "$REPEAT"
    done
  done
  for mode in fsync os; do
    for peer in storescp orthanc; do
      for n in 1 4; do
        r=$(echo "${RESULT[$set,$peer,$n]} / ${RESULT[$set,radstream-$mode,$n]}" | bc -l)
        printf '%-4s radstream-%-5s vs %-8s %d assoc: %.2fx\n' "$set" "$mode" "$peer" "$n" "$r"
      done
    done
  done
  floor_out=$(.venv/bin/python3 bench/durable_floor.py "$OUT/$set" "$REPEAT")
  read -r _ write _ fsync _ renamed _ overlap <<< "$(echo $floor_out)"
  scp=$(echo "${RESULT[$set,storescp,1]} * 1000 / $files" | bc -l)
  rs=$(echo "${RESULT[$set,radstream-fsync,1]} * 1000 / $files" | bc -l)
  floor=$(echo "$renamed - $write" | bc -l)
  printf '%-4s disk floor, ms per instance: write %.3f, +fdatasync %.3f, +rename and folder sync beside the index commit %.3f (commit beside the fdatasync instead: %.3f)\n' \
    "$set" "$write" "$fsync" "$renamed" "$overlap"
  printf '%-4s 1 assoc, ms per instance: storescp %.3f, durable radstream %.3f (%+.3f); the syncs, rename and commit alone add %.3f to a plain write: %.2fx storescp for a receiver as fast as storescp in all else that does them one after the other\n' \
    "$set" "$scp" "$rs" "$(echo "$rs - $scp" | bc -l)" "$floor" "$(echo "$scp / ($scp + $floor)" | bc -l)"
done
