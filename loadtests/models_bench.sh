#!/usr/bin/env bash
# Keel's in-process models against the reference implementations, on this
# machine, in one run, printed as ratios (Keel / reference):
#   smollm2 prefill and decode tokens/s vs llama-cpp-python on the same GGUF;
#   minilm sentences/s at batch 32 and batch 1 vs sentence-transformers on
#   PyTorch (CPU).
# Then Keel's two models at once (decoding during an embedding loop) against
# each alone: each must keep its share of the CPU.
# Both sides use the same thread count (default 2) and the same workload
# file, and take turns round by round so that drift in the machine's speed
# hits both alike. Exits 1 when a ratio misses its bar.
#
# Usage: loadtests/models_bench.sh [rounds] [threads]
#   KEEL_BENCH_VENV (default ~/.cache/keel-bench-venv): the Python venv for
#   the reference side, created and filled from loadtests/models/requirements.txt
#   (llama-cpp-python compiles llama.cpp: the first run takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
threads="${2:-2}"
venv="${KEEL_BENCH_VENV:-$HOME/.cache/keel-bench-venv}"
models="${KEEL_MODELS_DIR:-$PWD/.models}"

scripts/setup
cargo build --release --locked -p keel -p keel-loadtests
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/keel" models fetch --dir "$models"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
echo "reference venv: $venv (pip install -r loadtests/models/requirements.txt)" >&2
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q -r loadtests/models/requirements.txt

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/keel-model-bench" workload --out "$work/workload.json"
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  "$bin/keel-model-bench" run --workload "$work/workload.json" --models "$models" \
    --threads "$threads" >>"$work/keel.jsonl"
  "$venv/bin/python" loadtests/models/reference.py --workload "$work/workload.json" \
    --models "$models" --threads "$threads" >>"$work/reference.jsonl"
done
echo
echo "## Keel's models vs the reference implementations ($threads threads, $(nproc) cores)"
echo
status=0
python3 loadtests/models/report.py "$work/keel.jsonl" "$work/reference.jsonl" || status=1
echo
echo "## Keel's models sharing the CPU: decoding while embedding, vs each alone"
echo
"$bin/keel-model-bench" contention --workload "$work/workload.json" --models "$models" \
  --threads "$threads" || status=1
exit "$status"
