#!/usr/bin/env bash
# What tracing costs a query: the Query baseline against `keel up` (SQLite)
# with telemetry on (every span exported to Keel's own trace store, the
# default) and off (`KEEL_TELEMETRY__ENABLED=false`), in alternating rounds
# of the same release build, so drift on a noisy machine hits both sides.
# Prints the medians over rounds and the two costs the bar is set on:
#   p50 at concurrency 1   (on / off - 1)   must be <= 10%
#   QPS at concurrency 16  (1 - on / off)   must be <= 10%
# Usage: loadtests/tracing_cost.sh [rounds] [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
duration="${2:-15s}"

cargo build --release -p keel -p keel-loadtests
target="${CARGO_TARGET_DIR:-target}/release"
keel="$target/keel"
loadtest="$target/keel-loadtest"
# keel up loads minilm and smollm2 at start: fetched once into .models.
"$keel" models fetch --dir "$PWD/.models" >/dev/null
export KEEL_MODELS_DIR="$PWD/.models"

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

wait_for_serving() {
  for _ in $(seq 1 300); do
    if curl -fsS http://127.0.0.1:7202/healthz >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "keel up did not become healthy" >&2
  return 1
}

# One round of one mode: start keel up, set up, measure, stop.
measure() {
  local mode="$1" round="$2" enabled
  if [ "$mode" = on ]; then enabled=true; else enabled=false; fi
  KEEL_TELEMETRY__ENABLED="$enabled" "$keel" up --data-dir "$work/data" 2>"$work/keel-$mode-$round.log" &
  local keel_pid=$!
  wait_for_serving
  "$loadtest" setup >/dev/null 2>&1
  "$loadtest" run --mode closed --concurrency 1 --duration "$duration" --warmup 3s \
    --json "$work/$mode-c1-$round.json" >/dev/null 2>&1
  "$loadtest" run --mode closed --concurrency 16 --duration "$duration" --warmup 3s \
    --json "$work/$mode-c16-$round.json" >/dev/null 2>&1
  kill "$keel_pid"
  wait "$keel_pid" || true
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds: tracing on" >&2
  measure on "$round"
  echo "round $round/$rounds: tracing off" >&2
  measure off "$round"
done

python3 - "$work" "$rounds" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def load(mode, concurrency):
    return [json.load(open(f"{work}/{mode}-c{concurrency}-{r}.json")) for r in range(1, rounds + 1)]
rows = {}
for mode in ("on", "off"):
    c1, c16 = load(mode, 1), load(mode, 16)
    rows[mode] = {
        "p50": statistics.median(run["latency_ms"]["p50"] for run in c1),
        "p50s": [run["latency_ms"]["p50"] for run in c1],
        "qps": statistics.median(run["qps"] for run in c16),
        "qpss": [run["qps"] for run in c16],
        "errors": sum(run["requests"] - run["ok"] for run in c1 + c16),
    }
print("| tracing | p50 ms, c=1 (median; rounds) | QPS, c=16 (median; rounds) | errors |")
print("| --- | ---: | ---: | ---: |")
for mode in ("on", "off"):
    row = rows[mode]
    p50s = ", ".join(f"{v:.2f}" for v in row["p50s"])
    qpss = ", ".join(f"{v:.0f}" for v in row["qpss"])
    print(f"| {mode} | {row['p50']:.2f} ({p50s}) | {row['qps']:.0f} ({qpss}) | {row['errors']} |")
p50_cost = rows["on"]["p50"] / rows["off"]["p50"] - 1
qps_cost = 1 - rows["on"]["qps"] / rows["off"]["qps"]
verdict = lambda cost: "ok" if cost <= 0.10 else "MISSED"
print()
print(f"p50 cost of tracing: {p50_cost * 100:+.1f}% (bar <= 10%: {verdict(p50_cost)})")
print(f"QPS cost of tracing: {qps_cost * 100:+.1f}% (bar <= 10%: {verdict(qps_cost)})")
EOF
