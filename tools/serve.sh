#!/usr/bin/env bash
# Runs the appliance from a clean clone: builds the release binary and serves on
# ./millrace-data (created if missing). Extra arguments go to `millrace serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: the Rust toolchain (cargo, stable >= 1.85) is required: https://rustup.rs" >&2
  exit 1
fi
# With the analytics GPU path (wgpu): it is used when a GPU is found, the CPU otherwise.
cargo build --release --locked -p millrace-tools --features gpu
exec target/release/millrace serve "$@"
