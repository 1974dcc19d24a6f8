#!/usr/bin/env bash
# The Query baseline against `keel up` (SQLite) in two configurations, A and
# B, in alternating rounds of the same release build, so drift on a noisy
# machine hits both sides. Each side is a set of environment overrides
# (KEEL_<SECTION>__<KEY>=value ...). Prints the medians over rounds and the
# two costs of B against A that the bars are set on:
#   p50 at concurrency 1   (B / A - 1)
#   QPS at concurrency 16  (1 - B / A)
# Usage: loadtests/compare_query.sh A_NAME "A_ENV" B_NAME "B_ENV" BAR_PERCENT [rounds] [duration]
# (tracing_cost.sh and spill_cost.sh are the comparisons the issues ask for.)
set -euo pipefail
cd "$(dirname "$0")/.."
a_name="$1" a_env="$2" b_name="$3" b_env="$4" bar="$5"
rounds="${6:-3}"
duration="${7:-15s}"

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

# One round of one side: start keel up with the side's overrides, set up,
# measure, stop.
measure() {
  local side="$1" overrides="$2" round="$3"
  # shellcheck disable=SC2086 # the overrides are words on purpose
  env $overrides "$keel" up --data-dir "$work/data" 2>"$work/keel-$side-$round.log" &
  local keel_pid=$!
  wait_for_serving
  "$loadtest" setup >/dev/null 2>&1
  "$loadtest" run --mode closed --concurrency 1 --duration "$duration" --warmup 3s \
    --json "$work/$side-c1-$round.json" >/dev/null 2>&1
  "$loadtest" run --mode closed --concurrency 16 --duration "$duration" --warmup 3s \
    --json "$work/$side-c16-$round.json" >/dev/null 2>&1
  kill "$keel_pid"
  wait "$keel_pid" || true
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds: $b_name" >&2
  measure b "$b_env" "$round"
  echo "round $round/$rounds: $a_name" >&2
  measure a "$a_env" "$round"
done

python3 - "$work" "$rounds" "$a_name" "$b_name" "$bar" <<'PY'
import json, statistics, sys
work, rounds, a_name, b_name, bar = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
def load(side, concurrency):
    return [json.load(open(f"{work}/{side}-c{concurrency}-{r}.json")) for r in range(1, rounds + 1)]
rows = {}
for side in ("b", "a"):
    c1, c16 = load(side, 1), load(side, 16)
    rows[side] = {
        "p50": statistics.median(run["latency_ms"]["p50"] for run in c1),
        "p50s": [run["latency_ms"]["p50"] for run in c1],
        "qps": statistics.median(run["qps"] for run in c16),
        "qpss": [run["qps"] for run in c16],
        "errors": sum(run["requests"] - run["ok"] for run in c1 + c16),
    }
names = {"a": a_name, "b": b_name}
print("| side | p50 ms, c=1 (median; rounds) | QPS, c=16 (median; rounds) | errors |")
print("| --- | ---: | ---: | ---: |")
for side in ("b", "a"):
    row = rows[side]
    p50s = ", ".join(f"{v:.2f}" for v in row["p50s"])
    qpss = ", ".join(f"{v:.0f}" for v in row["qpss"])
    print(f"| {names[side]} | {row['p50']:.2f} ({p50s}) | {row['qps']:.0f} ({qpss}) | {row['errors']} |")
p50_cost = rows["b"]["p50"] / rows["a"]["p50"] - 1
qps_cost = 1 - rows["b"]["qps"] / rows["a"]["qps"]
verdict = lambda cost: "ok" if cost <= bar / 100 else "MISSED"
print()
print(f"p50 cost of {b_name} vs {a_name}: {p50_cost * 100:+.1f}% (bar <= {bar:g}%: {verdict(p50_cost)})")
print(f"QPS cost of {b_name} vs {a_name}: {qps_cost * 100:+.1f}% (bar <= {bar:g}%: {verdict(qps_cost)})")
PY
