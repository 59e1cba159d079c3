#!/usr/bin/env bash
# One command: set up, build and run the node on the embedded default (SQLite and files in
# ./data, CPU inference with the shipped models, DICOM on 11112, HTTP on 127.0.0.1:8080).
# Extra arguments go to `radstream serve` (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -- serve "$@"
