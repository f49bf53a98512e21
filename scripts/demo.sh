#!/usr/bin/env bash
# The README's first command. Builds Sluice, installs Envoy into .venv if it
# is missing, and shows Sluice's xDS control plane driving a real Envoy:
# a traffic split shifted step by step, an endpoint-only (EDS) change, then
# what the control plane reports over gRPC (`sluice xds`, grpcurl) and
# Prometheus. Idempotent; leaves nothing running.
#
# Ports (override with the environment): HTTP 8080, xDS 18000, debug 9090,
# Envoy admin 9901 — all on 127.0.0.1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

HTTP=${SLUICE_DEMO_HTTP:-127.0.0.1:8080}
XDS=${SLUICE_DEMO_XDS:-127.0.0.1:18000}
DEBUG=${SLUICE_DEMO_DEBUG:-127.0.0.1:9090}
ADMIN=${SLUICE_DEMO_ADMIN:-127.0.0.1:9901}

ensure_rust
ensure_envoy
ensure_grpcurl

step "building sluice (first build takes a few minutes)"
cargo build --locked --bin sluice --example spine

LOG=$(mktemp)
cleanup() {
  [ -n "${DEMO_PID:-}" ] && kill -INT "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

step "starting the xDS server, two backends and Envoy"
RUST_LOG=${RUST_LOG:-warn} target/debug/examples/spine --hold \
  --http "$HTTP" --xds "$XDS" --debug "$DEBUG" --envoy-admin "$ADMIN" >"$LOG" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q "Serving until Ctrl-C" "$LOG" && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$LOG"; die "the demo stopped early (see above)"; }
  sleep 0.1
done
grep -q "Serving until Ctrl-C" "$LOG" || { cat "$LOG"; die "the demo did not get ready in 60 s"; }
sed -n '/^sluice spine demo/,/^Serving until/p' "$LOG" | grep -v '^Serving until'

step "sluice xds nodes --xds $XDS"
target/debug/sluice xds nodes --xds "$XDS"

step "sluice xds dump --xds $XDS -o table"
target/debug/sluice xds dump --xds "$XDS" -o table

step "grpcurl -plaintext $XDS list   (gRPC reflection)"
.venv/bin/grpcurl -plaintext "$XDS" list

step "curl http://$DEBUG/metrics   (excerpt)"
curl -fsS "http://$DEBUG/metrics" | grep -E '^sluice_xds_(pushes|acks|nacks|connected)' | head -n 12

step "done"
echo "Run the tests with: scripts/test.sh"
