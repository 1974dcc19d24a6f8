#!/usr/bin/env python3
"""Writes the ANN benchmark's datasets, each a directory of .fvecs/.ivecs
files (the format of the classic SIFT/GIST sets) that Keel's benchmark and
the reference script both read:

- embedding-like: 100,000 base and 1,000 query vectors of 384 dimensions,
  a Gaussian mixture (64 clusters) in a 32-dimensional subspace plus a
  little isotropic noise, L2-normalised as sentence embeddings are; the
  queries are drawn from the same distribution, never from the base set.
  Metric: cosine (inner product on unit vectors).
- faiss-synthetic: faiss.contrib.datasets.SyntheticDataset(128, 0, 50000,
  1000), faiss's own benchmark data. Metric: L2.

Each directory holds base.fvecs, query.fvecs, gt.ivecs (the exact top 100
per query, by brute force) and metric.txt.
"""

import argparse
import sys
from pathlib import Path

import numpy as np


def write_vecs(path: Path, rows: np.ndarray) -> None:
    """.fvecs / .ivecs: per row, its dimension as int32, then the values."""
    rows = np.ascontiguousarray(rows)
    n, d = rows.shape
    out = np.empty((n, d + 1), dtype=np.int32)
    out[:, 0] = d
    out[:, 1:] = rows.view(np.int32)
    out.tofile(path)


def embedding_like(n: int, nq: int, dim: int = 384, clusters: int = 64, rank: int = 32, seed: int = 7):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim)).astype(np.float32)
    centres = rng.standard_normal((clusters, rank)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        latent = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, rank))
        vectors = latent.astype(np.float32) @ basis + 0.1 * rng.standard_normal((count, dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return draw(n).astype(np.float32), draw(nq).astype(np.float32)


def ground_truth(base: np.ndarray, queries: np.ndarray, metric: str, k: int = 100) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    _, ids = index.search(queries, k)
    return ids.astype(np.int32)


def save(out: Path, name: str, base: np.ndarray, queries: np.ndarray, metric: str) -> None:
    directory = out / name
    directory.mkdir(parents=True, exist_ok=True)
    write_vecs(directory / "base.fvecs", base.astype(np.float32))
    write_vecs(directory / "query.fvecs", queries.astype(np.float32))
    write_vecs(directory / "gt.ivecs", ground_truth(base, queries, metric))
    (directory / "metric.txt").write_text(metric + "\n")
    print(f"{directory}: {base.shape[0]} x {base.shape[1]}, {queries.shape[0]} queries, {metric}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--points", type=int, default=100_000, help="embedding-like base size")
    args = parser.parse_args()

    base, queries = embedding_like(args.points, 1000)
    save(args.out, "embedding-like", base, queries, "cosine")

    from faiss.contrib.datasets import SyntheticDataset

    synthetic = SyntheticDataset(128, 0, 50000, 1000)
    save(args.out, "faiss-synthetic", synthetic.get_database(), synthetic.get_queries(), "l2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
