#!/usr/bin/env bash
# Keel's vector index against faiss (IndexHNSWFlat) and hnswlib, same
# machine, same run, same files: 100k embedding-like 384-d vectors and
# faiss's SyntheticDataset(128, 0, 50000, 1000); one thread, M=16,
# ef_construction=200, ef swept; recall@10 against brute force, QPS, build
# time, peak RSS — Keel in process and through gRPC (with p50/p99 under 32
# concurrent clients). Exits 1 when a bar is missed (see report.py).
#
# Usage: loadtests/ann_bench.sh
#   KEEL_ANN_VENV (default ~/.cache/keel-ann-venv): the reference venv,
#   filled from loadtests/ann/requirements.txt
#   KEEL_ANN_DATA (default ~/.cache/keel-ann-data): the datasets, written
#   once by loadtests/ann/datasets.py
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KEEL_ANN_VENV:-$HOME/.cache/keel-ann-venv}"
data="${KEEL_ANN_DATA:-$HOME/.cache/keel-ann-data}"

scripts/setup
cargo build --release --locked -p keel-loadtests --bin keel-ann-bench
bench="${CARGO_TARGET_DIR:-target}/release/keel-ann-bench"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r loadtests/ann/requirements.txt
if [ ! -f "$data/faiss-synthetic/gt.ivecs" ]; then
  "$venv/bin/python" loadtests/ann/datasets.py --out "$data"
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for dataset in embedding-like faiss-synthetic; do
  echo "== $dataset" >&2
  RAYON_NUM_THREADS=1 "$bench" --mode in-process --dataset "$data/$dataset" --json >>"$results"
  "$venv/bin/python" loadtests/ann/reference.py --dataset "$data/$dataset" --only faiss >>"$results"
  "$venv/bin/python" loadtests/ann/reference.py --dataset "$data/$dataset" --only hnswlib >>"$results"
  RAYON_NUM_THREADS=1 "$bench" --mode grpc --dataset "$data/$dataset" --json >>"$results"
done
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
python3 loadtests/ann/report.py "$results"
