#!/usr/bin/env bash
# Fuzzing: runs each cargo-fuzz target (fuzz/fuzz_targets) for a time or a number of runs, one
# worker each, one target after the other, and prints per target the executions, exec/s, the
# corpus size and the new crashes (files added under its artifacts folder).
#
#   bench/fuzz.sh                       # every target, 60 s each
#   bench/fuzz.sh 600 pdu multipart     # 10 minutes each for two targets
#   bench/fuzz.sh runs=1000000          # every target for 10^6 executions
#   FUZZ_FRESH=1 bench/fuzz.sh ...      # start from the seeds again (drops the grown corpus)
#   FUZZ_BUILD=0 FUZZ_BIN=DIR bench/fuzz.sh ...   # run binaries built before, from DIR
#   FUZZ_MAX_LEN=65536 bench/fuzz.sh ...          # largest input (default 1 MiB): smaller is faster
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz when
# missing. Builds all targets in one build without a sanitizer (the code is Rust, the C
# decoders are not instrumented anyway; fuzz/harness/support.rs bounds single allocations
# instead: 16 MiB for the parsers, 256 MiB for the pixel decoders). Seeds come from fixtures/ (fuzz/seed.py); the corpus and the crashes live
# under bench/out/fuzz/ (not committed): minimise a crash with
# `cd fuzz && cargo +nightly fuzz tmin -s none TARGET FILE`, then add it to fuzz/regressions/.
#
# libFuzzer runs in fork mode with one job (-fork=1) and goes on after a crash, an OOM or a
# timeout, so a known crash does not stop the run: every one is saved. Settings: inputs up to
# 1 MiB, 2 GiB RSS, 10 s per input.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${1:-60}"
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pdu dataset_file dataset_network multipart dicom_json image_decode)
case "$LIMIT" in
  runs=*) STOP=(-runs="${LIMIT#runs=}") ;;
  *[!0-9]* | "") echo "usage: bench/fuzz.sh [seconds-per-target|runs=N] [target...]" >&2; exit 2 ;;
  *) STOP=(-max_total_time="$LIMIT") ;;
esac

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ "${FUZZ_BUILD:-1}" = 0 ] || (cd fuzz && cargo +nightly fuzz build -s none)
TARGET_DIR="${CARGO_TARGET_DIR:-fuzz/target}"
BIN="${FUZZ_BIN:-$TARGET_DIR/x86_64-unknown-linux-gnu/release}"

OUT=bench/out/fuzz
if [ ! -d "$OUT/seeds" ]; then
  echo "building the seed corpora from fixtures/ (once)..." >&2
  .venv/bin/python3 fuzz/seed.py "$OUT/seeds.tmp" && mv "$OUT/seeds.tmp" "$OUT/seeds"
fi

crashes() { find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l; }

declare -a ROWS
for t in "${TARGETS[@]}"; do
  corpus="$OUT/corpus/$t"
  art="$OUT/artifacts/$t"
  [ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$corpus"
  mkdir -p "$corpus" "$art"
  cp -n "$OUT/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  before=$(crashes "$art")
  log="$OUT/$t.log"
  echo "== $t (${LIMIT}); log: $log" >&2
  "$BIN/$t" "$corpus" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -rss_limit_mb=2048 -max_len="${FUZZ_MAX_LEN:-1048576}" -timeout=10 "${STOP[@]}" \
    -artifact_prefix="$art/" -print_final_stats=1 >"$log" 2>&1 || true
  # Fork mode status lines: "#EXECS: cov: .. corp: .. exec/s: .. oom/timeout/crash: a/b/c time: Ns".
  last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n1 || true)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
  secs=$(sed -E 's/.* time: ([0-9]+)s.*/\1/' <<<"$last")
  rate=$([ -n "$secs" ] && [ "$secs" -gt 0 ] && echo $((execs / secs)) || echo "?")
  corp=$(find "$corpus" -type f | wc -l)
  new=$(($(crashes "$art") - before))
  ROWS+=("$(printf '%-16s %12s %8s %8s %8s %8s' "$t" "${execs:-?}" "$rate" "${secs:-?}" "$corp" "$new")")
done

echo
printf '%-16s %12s %8s %8s %8s %8s\n' target executions exec/s seconds corpus crashes
printf '%s\n' "${ROWS[@]}"
echo "(crashes: new files under $OUT/artifacts/<target>/; date: $(date -u +%F))"
