#!/usr/bin/env bash
# One command: set up (real peers included), then run the whole test suite: formatting,
# lints, unit tests and end-to-end tests against SQLite and PostgreSQL (RADSTREAM_TEST_PG_URL,
# default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked -- --test-threads "${RADSTREAM_TEST_THREADS:-4}"
