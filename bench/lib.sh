# Shell helpers the ingest benchmarks share (sourced from the repository root, after
# scripts/setup.sh --test): data sets, free ports, waiting for a port, a local SeaweedFS.

# gen SET: bench/out's SET data set (tools/fixtures, made once) and SET-split, its studies in
# four groups, one per association. Needs $OUT.
gen() {
  local set=$1
  if [ ! -f "$OUT/$set/.done" ]; then
    echo "generating the $set data set (once)..." >&2
    rm -rf "$OUT/$set"
    .venv/bin/python3 tools/fixtures/make_fixtures.py --preset "bench-$set" --out "$OUT/$set" >/dev/null
    touch "$OUT/$set/.done"
    rm -rf "$OUT/$set-split"
  fi
  if [ ! -d "$OUT/$set-split" ]; then
    # Four groups of whole studies, one per association.
    local i=0
    for study in "$OUT/$set"/*/; do
      mkdir -p "$OUT/$set-split/$((i % 4))"
      cp -r "$study" "$OUT/$set-split/$((i % 4))/"
      i=$((i + 1))
    done
  fi
}

free_port() { .venv/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# SeaweedFS's worker dials its admin server at the admin port + 10000: both must be free.
free_pair() {
  .venv/bin/python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55000:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError:
            pass'
}

# wait_port PORT [TRIES]: TRIES x 50 ms (default 200). Connects and closes without sending a
# byte (a byte then a close kept builds before 2026-12-07 busy on one core for as long as they
# ran, which a baseline would pay for).
wait_port() { for _ in $(seq 1 "${2:-200}"); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# start_weed DIR BUCKET KEY SECRET LOG: SeaweedFS's `weed mini` (from .venv) in the
# background, every port free; sets S3_PORT and WEED_PID. Does not wait for it.
start_weed() {
  local dir=$1 bucket=$2 key=$3 secret=$4 log=$5
  S3_PORT=$(free_pair)
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret .venv/bin/weed mini -dir="$dir" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="$(free_pair)" -master.port.grpc="$(free_pair)" -volume.port="$(free_pair)" \
    -volume.port.grpc="$(free_pair)" -filer.port="$(free_pair)" -filer.port.grpc="$(free_pair)" \
    -s3.port="$S3_PORT" -s3.port.grpc="$(free_pair)" -webdav.port="$(free_pair)" \
    -admin.port="$(free_pair)" -admin.port.grpc="$(free_pair)" -debug.port="$(free_pair)" \
    -bucket="$bucket" >"$log" 2>&1 &
  WEED_PID=$!
}
