#!/usr/bin/env bash
# The README's first command: a live Knative canary on this machine.
#
# Builds Sluice and the demo app, installs Envoy into .venv if it is missing, runs
# `sluice up` on a copy of examples/canary, and walks through the canary of
# examples/canary/README.md — one revision, 90/10 with a tag URL, 50/50, promoted —
# showing the split Envoy serves at each step with a short traffic sample.
# Idempotent; leaves nothing running.
#
# Ports (override with the environment): HTTP 8080, xDS 18000, debug 9090, Envoy
# admin 9901 — all on 127.0.0.1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

HTTP=${SLUICE_DEMO_HTTP:-127.0.0.1:8080}
XDS=${SLUICE_DEMO_XDS:-127.0.0.1:18000}
DEBUG=${SLUICE_DEMO_DEBUG:-127.0.0.1:9090}
ADMIN=${SLUICE_DEMO_ADMIN:-127.0.0.1:9901}
HOST=hello.default.example.com
SAMPLE=${SLUICE_DEMO_SAMPLE:-100}

ensure_rust
ensure_envoy

step "building sluice and the demo app (first build takes a few minutes)"
cargo build --locked --bin sluice --example hello

WORK=$(mktemp -d)
LOG="$WORK/sluice.log"
cleanup() {
  if [ -n "${UP_PID:-}" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -INT "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/services"
cp examples/canary/hello.yaml "$WORK/services/"

step "sluice up $WORK/services   (a copy of examples/canary)"
RUST_LOG=${RUST_LOG:-warn} target/debug/sluice up "$WORK/services" \
  --external-http "$HTTP" --xds "$XDS" --debug "$DEBUG" --envoy-admin "$ADMIN" \
  >"$LOG" 2>&1 &
UP_PID=$!

# Polls (up to 60 s) until `curl` for HOST answers with a body matching $2.
wait_answer() {
  local host=$1 want=$2
  for _ in $(seq 1 600); do
    if curl -fsS -H "Host: $host" "http://$HTTP/" 2>/dev/null | grep -q "$want"; then
      return 0
    fi
    kill -0 "$UP_PID" 2>/dev/null || { cat "$LOG"; die "sluice up stopped (see above)"; }
    sleep 0.1
  done
  cat "$LOG"
  die "no answer from $want for $host within 60 s (log above)"
}

# Sends SAMPLE requests and counts answers per body.
sample() {
  echo "   $SAMPLE requests to http://$HOST/ :"
  for _ in $(seq 1 "$SAMPLE"); do
    curl -fsS -H "Host: $HOST" "http://$HTTP/" || echo "FAILED"
  done | sort | uniq -c | sed 's/^/   /'
}

# Copies a step's file over the watched one (write elsewhere, then rename: the watcher
# never sees half a file).
apply_step() {
  cp "$1" "$WORK/services/.hello.yaml.tmp"
  mv "$WORK/services/.hello.yaml.tmp" "$WORK/services/hello.yaml"
}

wait_answer "$HOST" "from hello-00001"
grep -E "^sluice up:|^  " "$LOG" | grep -v "^\s*$" | head -n 8 || true

step "1. one revision: hello-00001 gets everything"
sample

step "2. canary: TARGET=canary makes hello-00002; traffic 90/10, tag 'candidate'"
apply_step examples/canary-steps/2-canary.yaml
wait_answer "candidate-$HOST" "from hello-00002"
# (one KIngress carries both hosts: when the tag host answers, the split is live too)
sample
echo "   the canary's own URL: curl -H 'Host: candidate-$HOST' http://$HTTP/"
echo -n "   "; curl -fsS -H "Host: candidate-$HOST" "http://$HTTP/"

step "3. half and half"
apply_step examples/canary-steps/3-half.yaml
for _ in $(seq 1 100); do
  target/debug/sluice status --debug "$DEBUG" | grep -q "50% hello-00001" && break
  sleep 0.1
done
sample

step "4. promote: everything to hello-00002 (hello-00001 stays behind tag 'previous')"
apply_step examples/canary-steps/4-promote.yaml
wait_answer "previous-$HOST" "from hello-00001"
sample

step "sluice status --debug $DEBUG"
target/debug/sluice status --debug "$DEBUG"

step "sluice logs hello-00002 --tail 3"
target/debug/sluice logs hello-00002 --tail 3 --debug "$DEBUG"

step "done"
echo "Try it yourself: examples/canary/README.md. Run the tests with: scripts/test.sh"
