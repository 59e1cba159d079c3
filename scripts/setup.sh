#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test radstream:
#   - build tools for the pixel codecs (cmake, clang for CharLS/OpenJPEG/libjpeg-turbo from
#     source; libjpeg-turbo is built without nasm, its SIMD code is not needed);
#   - the Python venv .venv with ONNX Runtime (the Rust binary loads its shared library)
#     and the Python peers the tests use (pynetdicom, pydicom and its codec plug-ins);
#   - with --test: DCMTK, dicom3tools, Orthanc (real peers for the interop tests) and node
#     (the RadAnalyzer JavaScript example).
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v clang >/dev/null || need_apt+=(clang)
if [ "$want_test" = 1 ]; then
  command -v storescu >/dev/null || need_apt+=(dcmtk)
  command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
  command -v Orthanc >/dev/null || need_apt+=(orthanc)
  # The DICOM TLS tests make their CA and certificates with the openssl CLI.
  command -v openssl >/dev/null || need_apt+=(openssl)
  [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
  # The RadAnalyzer JavaScript example (tests/js) runs under node (fetch: node >= 18).
  command -v node >/dev/null || need_apt+=(nodejs)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python3 ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python requirements into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi
