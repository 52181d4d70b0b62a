#!/usr/bin/env bash
# The whole test suite, from a clean clone on Debian: installs what the tests need, then
# builds and runs every test (debug builds), a benchmark smoke run, and, with
# MILLRACE_FUZZ_SECS=N, each fuzz target for N seconds.
#   MILLRACE_SIM_SEEDS=N   simulation seeds (default 200; soak with thousands)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
# The Kinesis API tests drive the server with boto3 and the AWS CLI from a venv.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# ... and with the AWS SDK for JavaScript v3 on Node.js.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The analytics kernels run on wgpu; with no GPU, on Mesa's lavapipe (Vulkan on the CPU).
compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (apt)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: the Rust toolchain (cargo, stable >= 1.85) is required: https://rustup.rs" >&2
  exit 1
fi

requirements=tools/tests/kinesis/requirements.txt
if ! cmp -s "$requirements" .venv/requirements.installed 2>/dev/null; then
  echo "== python venv with boto3 and the AWS CLI (.venv, from $requirements)"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" .venv/requirements.installed
fi
export MILLRACE_PYTHON="$PWD/.venv/bin/python"

js=tools/tests/js
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.package-lock.installed" 2>/dev/null; then
  echo "== the AWS SDK for JavaScript v3 (npm ci in $js, pinned by its package-lock.json)"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$js/package-lock.json" "$js/node_modules/.package-lock.installed"
fi

echo "== cargo test (workspace, debug; the GPU kernels on whatever adapter wgpu finds, lavapipe here)"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
# A kernel test that finds no adapter fails instead of skipping.
export MILLRACE_GPU_REQUIRED=1
cargo test --workspace --locked --features millrace-gpu/device 2>&1 | tee "$test_log"
# cargo's last "test result" line is often a doc-test run of 0: sum them all instead.
summary=$(awk '/^test result:/ {passed += $4; failed += $6} END {printf "%d passed, %d failed", passed, failed}' "$test_log")

echo "== benchmark smoke run (debug build: the figures mean nothing, the path is exercised)"
smoke_dir="target/bench-smoke"
rm -rf "$smoke_dir"
# Captured, then printed: `tee /dev/stderr` would truncate a log file that stderr points to.
output=$(cargo run --quiet --locked -p millrace-bench -- engine --data-dir "$smoke_dir" --duration 2 --producers 4 --vs-fio \
  --read-back)
printf '%s\n' "$output"
result=$(printf '%s\n' "$output" | tail -n 1)
case "$result" in
  "RESULT mb_per_s="*read_records_per_s=*) echo "bench: ok" ;;
  *) echo "bench: the last line is not a RESULT line with the read-back: $result" >&2; exit 1 ;;
esac
rm -rf "$smoke_dir"
echo "== firehose delivery-from-the-log smoke run (in process)"
output=$(cargo run --quiet --locked -p millrace-bench -- delivery --data-dir "$smoke_dir" --mib 10 --producers 2)
printf '%s\n' "$output"
case "$(printf '%s\n' "$output" | tail -n 1)" in
  "RESULT ingest_mb_per_s="*missing=0) echo "delivery bench: ok" ;;
  *) echo "delivery bench: the last line is not a RESULT line with nothing missing" >&2; exit 1 ;;
esac
rm -rf "$smoke_dir"
echo "== nexmark smoke run: each query as an analytics application, in process"
for query in q5 q7 q8 q11; do
  output=$(cargo run --quiet --locked -p millrace-bench -- nexmark --query "$query" --data-dir "$smoke_dir/$query" \
    --events 20000 --event-rate 1000 --live-secs 0)
  printf '%s\n' "$output"
  case "$(printf '%s\n' "$output" | tail -n 1)" in
    "RESULT query=$query device=cpu events=20000 events_per_s="*) ;;
    *) echo "nexmark $query: the last line is not its RESULT line" >&2; exit 1 ;;
  esac
  # Its windows closed and put out rows (the count is on the line before).
  if printf '%s\n' "$output" | grep -q " 0 rows out"; then
    echo "nexmark $query: no row came out" >&2; exit 1
  fi
done
echo "nexmark bench: ok"
rm -rf "$smoke_dir"

echo "== kinesis benchmark smoke run against a debug millrace serve"
kinesis_dir="target/bench-kinesis-smoke"
rm -rf "$kinesis_dir"; mkdir -p "$kinesis_dir"
target/debug/millrace serve --data-dir "$kinesis_dir/data" --http-listen 127.0.0.1:0 --quic-listen 127.0.0.1:0 \
  --segment-mib 8 \
  2> "$kinesis_dir/serve.log" &
serve_pid=$!
endpoint=""
for _ in $(seq 1 100); do
  endpoint=$(grep -o 'listening on http://[0-9.:]*' "$kinesis_dir/serve.log" | sed 's/listening on //' || true)
  [ -n "$endpoint" ] && break
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  kill "$serve_pid" 2>/dev/null || true
  echo "bench: millrace serve did not start:" >&2; cat "$kinesis_dir/serve.log" >&2; exit 1
fi
output=$(cargo run --quiet --locked -p millrace-bench -- kinesis --endpoint "$endpoint" \
  --data-dir "$kinesis_dir/data" --duration 2 --producers 4 --readers) || { kill "$serve_pid"; exit 1; }
printf '%s\n' "$output"
case "$(printf '%s\n' "$output" | tail -n 1)" in
  "RESULT mb_per_s="*) echo "kinesis bench: ok" ;;
  *) kill "$serve_pid"; echo "kinesis bench: the last line is not a RESULT line" >&2; exit 1 ;;
esac
echo "== quic benchmark smoke run against the same server"
quic_endpoint=$(grep -o 'QUIC listening on [0-9.:]*' "$kinesis_dir/serve.log" | sed 's/QUIC listening on //')
output=$(cargo run --quiet --locked -p millrace-bench -- quic --endpoint "$quic_endpoint" --http-endpoint "$endpoint" \
  --data-dir "$kinesis_dir/data" --duration 2 --producers 2 --window 64 --json "$kinesis_dir/quic.json" \
  --plot "$kinesis_dir/quic.svg") || { kill "$serve_pid"; exit 1; }
quic_output=$output
echo "== firehose benchmark smoke run against the same server (local-folder S3 destination)"
output=$(cargo run --quiet --locked -p millrace-bench -- firehose --endpoint "$endpoint" \
  --data-dir "$kinesis_dir/data" --duration 2 --producers 2) || { kill "$serve_pid"; exit 1; }
printf '%s\n' "$output"
case "$(printf '%s\n' "$output" | tail -n 1)" in
  "RESULT mb_per_s="*missing=0) echo "firehose bench: ok" ;;
  *) kill "$serve_pid"; echo "firehose bench: the last line is not a RESULT line with nothing missing" >&2; exit 1 ;;
esac
output=$quic_output
kill -TERM "$serve_pid"; wait "$serve_pid"
printf '%s\n' "$output"
case "$(printf '%s\n' "$output" | tail -n 1)" in
  "RESULT mb_per_s="*e2e_p99_us=*) echo "quic bench: ok" ;;
  *) echo "quic bench: the last line is not a RESULT line" >&2; exit 1 ;;
esac
[ -s "$kinesis_dir/quic.json" ] && [ -s "$kinesis_dir/quic.svg" ] || { echo "quic bench: no --json/--plot output" >&2; exit 1; }
rm -rf "$kinesis_dir"

if [ -n "${MILLRACE_FUZZ_SECS:-}" ]; then
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
  for target in segment_frame batch_body catalog_record aws_document aws_chunked event_stream sigv4 quic_frame firehose_prefix firehose_lambda firehose_http_answer firehose_deaggregate kda_sql kda_record kda_snapshot kda_checkpoint; do
    echo "== fuzz $target for ${MILLRACE_FUZZ_SECS}s"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$MILLRACE_FUZZ_SECS")
  done
fi
echo "== all tests passed"
echo "tests: $summary"
