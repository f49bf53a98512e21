#!/usr/bin/env bash
# Regenerates proto/envoy.fds.bin from the .proto files inside the envoy-types
# crate that Cargo.lock pins (run after upgrading envoy-types).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
dir=$(cargo metadata --format-version 1 --locked |
  python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="envoy-types"))')
cargo run --locked -q -p sluice-proto --example gen_envoy_descriptors -- "$dir" proto/envoy.fds.bin
