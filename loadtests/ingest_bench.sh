#!/usr/bin/env bash
# Whole-corpus ingest against sentence-transformers, same machine, same run.
# Keel: `keel ingest CORPUS` into a fresh `keel up` (minilm in process), end
# to end — reading and parsing the files, counting tokens, embedding,
# indexing and the durable writes — in chunks per second. Reference:
# sentence-transformers on PyTorch (CPU, the same thread count, batch 32)
# embedding exactly the chunks Keel wrote (`keel collection export`), and
# nothing else. Prints both and the ratio; exits 1 below the 1.2x bar.
#
# Usage: loadtests/ingest_bench.sh [CORPUS] [threads]
#   CORPUS: default .retrieval-corpus (tests/retrieval/build_corpus.sh)
#   KEEL_BENCH_VENV: the reference venv, as in models_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${1:-.retrieval-corpus}"
threads="${2:-2}"
venv="${KEEL_BENCH_VENV:-$HOME/.cache/keel-bench-venv}"
models="${KEEL_MODELS_DIR:-$PWD/.models}"
bar=1.2

scripts/setup
cargo build --release --locked -p keel
keel="${CARGO_TARGET_DIR:-target}/release/keel"
"$keel" models fetch --dir "$models"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Only the embedding side of the reference (no llama-cpp-python build).
"$venv/bin/pip" install -q $(grep -E '^(sentence-transformers|torch)==' loadtests/models/requirements.txt)

work=$(mktemp -d)
KEEL_MODELS__DIR="$models" KEEL_MODELS__THREADS="$threads" \
  "$keel" up --data-dir "$work/data" >"$work/keel.log" 2>&1 &
keel_pid=$!
trap 'kill $keel_pid 2>/dev/null; wait $keel_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  "$keel" collection list >/dev/null 2>&1 && break
  sleep 1
done
"$keel" collection create ingest-bench --embedder minilm --index-key source >/dev/null

echo "keel: ingesting $corpus" >&2
started=$(date +%s.%N)
"$keel" ingest "$corpus" --collection ingest-bench | tee "$work/ingest.txt"
finished=$(date +%s.%N)
"$keel" collection export ingest-bench --out "$work/chunks.jsonl" >/dev/null
chunks=$(wc -l <"$work/chunks.jsonl")
keel_rate=$(python3 -c "print($chunks / ($finished - $started))")

"$venv/bin/python" loadtests/models/embed_chunks.py --chunks "$work/chunks.jsonl" \
  --models "$models" --threads "$threads" >"$work/reference.json"
reference_rate=$(python3 -c "import json; print(json.load(open('$work/reference.json'))['chunks_per_s'])")

echo
echo "## Whole-corpus ingest: keel ingest vs sentence-transformers on the same chunks"
echo
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $threads threads, $(nproc) cores"
python3 - "$chunks" "$keel_rate" "$reference_rate" "$bar" <<'PY'
import sys
chunks, keel, reference, bar = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ratio = keel / reference
print(f"| chunks | keel ingest chunks/s | sentence-transformers chunks/s | ratio | bar |")
print(f"|---|---|---|---|---|")
print(f"| {chunks} | {keel:.1f} | {reference:.1f} | {ratio:.2f}x | {bar}x {'met' if ratio >= bar else 'MISSED'} |")
sys.exit(0 if ratio >= bar else 1)
PY
