#!/usr/bin/env python3
"""Builds faiss's IndexHNSWFlat and hnswlib on one dataset directory (see
datasets.py) on one thread, M=16, ef_construction=200, and prints one JSON
line per implementation: build seconds, peak RSS, and recall@10 and QPS
for each ef. Each implementation runs in its own process (--only) so that
its peak RSS is its own.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def read_vecs(path: Path, dtype) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    return raw.reshape(-1, d + 1)[:, 1:].copy().view(dtype)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(row[:10]) & set(gt[:10])) for row, gt in zip(found, truth))
    return hits / (len(truth) * 10)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_faiss(base, queries, truth, metric, efs):
    import faiss

    faiss.omp_set_num_threads(1)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.IndexHNSWFlat(base.shape[1], 16, faiss_metric)
    index.hnsw.efConstruction = 200
    started = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - started
    sweep = []
    for ef in efs:
        index.hnsw.efSearch = ef
        started = time.perf_counter()
        # All queries in one call on one thread: no Python overhead per
        # query, the reference at its fastest.
        found = index.search(queries, 10)[1]
        qps = len(queries) / (time.perf_counter() - started)
        sweep.append({"ef": ef, "recall_at_10": recall_at_10(found, truth), "qps": qps})
    return build, sweep


def run_hnswlib(base, queries, truth, metric, efs):
    import hnswlib

    index = hnswlib.Index(space="ip" if metric == "cosine" else "l2", dim=base.shape[1])
    index.init_index(max_elements=base.shape[0], ef_construction=200, M=16, random_seed=7)
    index.set_num_threads(1)
    started = time.perf_counter()
    index.add_items(base, np.arange(base.shape[0]), num_threads=1)
    build = time.perf_counter() - started
    sweep = []
    for ef in efs:
        index.set_ef(ef)
        started = time.perf_counter()
        found = index.knn_query(queries, k=10, num_threads=1)[0]
        qps = len(queries) / (time.perf_counter() - started)
        sweep.append({"ef": ef, "recall_at_10": recall_at_10(found, truth), "qps": qps})
    return build, sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--only", choices=["faiss", "hnswlib"], required=True)
    parser.add_argument("--ef", default="16,32,64,128,256")
    args = parser.parse_args()
    efs = [int(ef) for ef in args.ef.split(",")]
    base = read_vecs(args.dataset / "base.fvecs", np.float32)
    queries = read_vecs(args.dataset / "query.fvecs", np.float32)
    truth = read_vecs(args.dataset / "gt.ivecs", np.int32)
    metric = (args.dataset / "metric.txt").read_text().strip()
    run = run_faiss if args.only == "faiss" else run_hnswlib
    print(f"{args.only}: building {base.shape[0]} x {base.shape[1]}", file=sys.stderr)
    build, sweep = run(base, queries, truth, metric, efs)
    print(json.dumps({
        "implementation": args.only,
        "dataset": args.dataset.name,
        "build_s": build,
        "peak_rss_mib": peak_rss_mib(),
        "sweep": sweep,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
