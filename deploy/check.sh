#!/usr/bin/env bash
# Validates deploy/ without a container engine or a cluster (neither exists on the project's
# machines): the Helm chart rendered by Helm's own engine and checked against the Kubernetes
# schemas, the Dockerfile linted, the compose files resolved by the Compose CLI, the systemd unit
# verified; with RADSTREAM_BIN set, every deployment environment loaded by the real binary.
# Tools come from the project's .venv (scripts/requirements.txt, scripts/setup.sh) and Debian.
# Usage: deploy/check.sh [OUT_DIR]   (rendered manifests and workload lists are left there)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
out="${1:-$(mktemp -d)}"
mkdir -p "$out"

missing=()
for tool in python3 hadolint docker-compose; do
  [ -x "$venv/$tool" ] || missing+=("$venv/$tool")
done
"$venv/python3" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null ||
  missing+=("helm-python-sdk/kubernetes-validate in .venv")
if [ ${#missing[@]} -gt 0 ]; then
  echo "check.sh: missing ${missing[*]}: run scripts/setup.sh --test" >&2
  exit 2
fi

echo "== Helm chart"
"$venv/python3" deploy/check_deploy.py chart "$out"

echo "== Dockerfile"
"$venv/hadolint" --version
"$venv/hadolint" --no-color --config deploy/.hadolint.yaml deploy/Dockerfile
# The linter itself fails on a real mistake (a planted `FROM` without a tag is DL3006).
if printf 'FROM debian\nRUN true\n' | "$venv/hadolint" --config deploy/.hadolint.yaml - >/dev/null 2>&1; then
  echo "FAIL: hadolint accepted an untagged FROM" >&2; exit 1
fi
bash -n deploy/docker/healthcheck.sh
"$venv/python3" -m py_compile deploy/docker/extract_ort.py
echo "Dockerfile: hadolint clean"

echo "== Compose"
"$venv/python3" deploy/check_deploy.py compose "$out" "$venv/docker-compose"

echo "== systemd"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze --version | head -1
  root="$out/systemd-root"
  rm -rf "$root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd/system" "$root/opt/radstream/bin"
  # The targets the unit is ordered against, and a stand-in executable at ExecStart's path.
  cp -a /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice "$root/usr/lib/systemd/system/"
  cp /bin/true "$root/opt/radstream/bin/radstream"
  cp deploy/systemd/radstream.service "$root/etc/systemd/system/"
  verify() { systemd-analyze verify --man=no --root="$root" "$root/etc/systemd/system/radstream.service" 2>&1; }
  # verify exits 0 on unknown keys and bad values and only says so: any word from it fails.
  said=$(verify) || { echo "$said" >&2; echo "FAIL: systemd-analyze verify" >&2; exit 1; }
  if [ -n "$said" ]; then echo "$said" >&2; echo "FAIL: systemd-analyze verify complained" >&2; exit 1; fi
  echo "Restart=sometimes" >> "$root/etc/systemd/system/radstream.service"
  [ -n "$(verify)" ] || { echo "FAIL: systemd-analyze verify missed a planted bad value" >&2; exit 1; }
  # Hardening: the exposure score systemd computes (0 best, 10 worst) must stay at most 2.0.
  systemd-analyze security --offline=true --threshold=20 deploy/systemd/radstream.service >"$out/systemd-security.txt" 2>&1 ||
    { tail -3 "$out/systemd-security.txt" >&2; echo "FAIL: systemd exposure above 2.0" >&2; exit 1; }
  echo "systemd: verify clean; $(grep -o 'Overall exposure level.*' "$out/systemd-security.txt")"
else
  echo "SKIP systemd: systemd-analyze is not installed (Debian package systemd)" >&2
  echo "SKIPPED: systemd" >> "$out/skipped"
fi

if [ -n "${RADSTREAM_BIN:-}" ]; then
  echo "== Settings through $RADSTREAM_BIN config check"
  "$venv/python3" deploy/check_deploy.py settings "$out" "$RADSTREAM_BIN"
fi
echo "deploy/check.sh: all checks passed (output in $out)"
