#!/usr/bin/env bash
# Keel's OpenAI-compatible path against TensorZero, both in front of the same
# mock OpenAI server (keel-openai-mock), on this machine, in one run.
#
# Usage: loadtests/gateway_bench.sh [rounds]
#   TENSORZERO_GATEWAY  path to a TensorZero `gateway` binary built from its
#                       source (see loadtests/README.md); unset: Keel and the
#                       mock are measured alone.
#   Other keel-gateway-bench compare flags go in GATEWAY_BENCH_FLAGS,
#   e.g. GATEWAY_BENCH_FLAGS="--sequential 5s --step 4s".
#
# Keel runs as `keel up` (SQLite) with authentication on (every call checks
# a key scoped to the endpoint), inference records through the spill log to
# monitoring, and spans to the trace store: as it runs by default.
# TensorZero runs with observability off (its own load-test config).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
mock_addr=127.0.0.1:3030
tensorzero_addr=127.0.0.1:3000

cargo build --release -p keel -p keel-loadtests
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/keel" models fetch --dir "$PWD/.models" >/dev/null
export KEEL_MODELS_DIR="$PWD/.models"

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

wait_for() {
  local url="$1" what="$2"
  for _ in $(seq 1 300); do
    if curl -fsS "$url" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$what did not answer $url; its log:" >&2
  tail -20 "$work/$what.log" >&2
  return 1
}

"$bin/keel-openai-mock" --addr "$mock_addr" 2>"$work/mock.log" &
wait_for "http://$mock_addr/healthz" mock

cat >"$work/keel.toml" <<EOF
[auth]
enabled = true
master_key_env = "KEEL_MASTER_KEY"

[models.openai.mock]
base_url = "http://$mock_addr/v1"
model = "gpt-4.1-mini"
stream = false
max_concurrent_requests = 4096
EOF
KEEL_MASTER_KEY="bench-master-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export KEEL_MASTER_KEY
"$bin/keel" up --config "$work/keel.toml" --data-dir "$work/keel-data" 2>"$work/keel.log" &
wait_for http://127.0.0.1:7202/healthz keel
key=$("$bin/keel-gateway-bench" setup --api-key "$KEEL_MASTER_KEY" 2>>"$work/keel.log")

tensorzero_flags=()
if [ -n "${TENSORZERO_GATEWAY:-}" ]; then
  cat >"$work/tensorzero.toml" <<EOF
[gateway]
bind_address = "$tensorzero_addr"
observability.enabled = false

[models."gpt-4.1-mini"]
routing = ["openai"]

[models."gpt-4.1-mini".providers.openai]
type = "openai"
model_name = "gpt-4.1-mini"
api_base = "http://$mock_addr/openai/"
api_key_location = "none"

[functions.function1]
type = "chat"

[functions.function1.variants.variant1]
type = "chat_completion"
model = "gpt-4.1-mini"
max_tokens = 100
EOF
  "$TENSORZERO_GATEWAY" --config-file "$work/tensorzero.toml" >"$work/tensorzero.log" 2>&1 &
  wait_for "http://$tensorzero_addr/health" tensorzero
  tensorzero_flags=(--tensorzero "http://$tensorzero_addr")
else
  echo "TENSORZERO_GATEWAY is unset: measuring Keel and the mock alone" >&2
fi

# shellcheck disable=SC2086 # GATEWAY_BENCH_FLAGS is a list of flags.
KEEL_BENCH_KEY="$key" "$bin/keel-gateway-bench" compare --rounds "$rounds" \
  --mock "http://$mock_addr" --keel http://127.0.0.1:7202 \
  "${tensorzero_flags[@]}" ${GATEWAY_BENCH_FLAGS:-}
echo
echo "mock answered $(curl -fsS "http://$mock_addr/completions") chat completions in all"
