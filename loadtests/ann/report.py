#!/usr/bin/env python3
"""Prints the ANN benchmark's table from the JSON lines keel-ann-bench and
reference.py wrote, and checks the bars: at recall@10 >= 0.95, Keel in
process answers at least as many queries per second as faiss and builds
in at most 1.2x faiss's time; through gRPC at 100k embedding-like points,
Search p99 under 32 concurrent clients is at most 2 ms. Exits 1 on a miss.
"""

import json
import sys

RECALL = 0.95


def at_recall(sweep):
    """The fastest QPS among the efs reaching the recall bar, and its ef."""
    reaching = [point for point in sweep if point["recall_at_10"] >= RECALL]
    if not reaching:
        return None
    best = max(reaching, key=lambda point: point["qps"])
    return best


def main() -> int:
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    status = 0
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        runs = {row["implementation"]: row for row in rows if row["dataset"] == dataset}
        points = next(iter(runs.values())).get("points", "")
        print(f"\n### {dataset}\n")
        efs = sorted({point["ef"] for run in runs.values() for point in run["sweep"]})
        print("| implementation | build s | peak RSS MiB | " + " | ".join(f"ef {ef}" for ef in efs) + " |")
        print("|---|---:|---:|" + "---|" * len(efs))
        for name, run in runs.items():
            by_ef = {point["ef"]: point for point in run["sweep"]}
            cells = [
                f"{by_ef[ef]['recall_at_10']:.3f} @ {by_ef[ef]['qps']:.0f}" if ef in by_ef else ""
                for ef in efs
            ]
            print(f"| {name} | {run['build_s']:.1f} | {run['peak_rss_mib']:.0f} | " + " | ".join(cells) + " |")
        print("\n(recall@10 @ queries/s, one thread)")
        for run in runs.values():
            if run.get("load"):
                load = run["load"]
                print(
                    f"\n{run['implementation']}: {load['clients']} clients at ef {load['ef']}: "
                    f"{load['qps']:.0f} QPS, p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms"
                )
        keel, faiss = runs.get("keel in process"), runs.get("faiss")
        if keel and faiss:
            keel_best, faiss_best = at_recall(keel["sweep"]), at_recall(faiss["sweep"])
            if keel_best and faiss_best:
                ratio = keel_best["qps"] / faiss_best["qps"]
                ok = ratio >= 1.0
                print(f"\nbar: QPS at recall@10 >= {RECALL}: keel {keel_best['qps']:.0f} (ef {keel_best['ef']}) vs faiss {faiss_best['qps']:.0f} (ef {faiss_best['ef']}) = {ratio:.2f}x (>= 1.0x: {'met' if ok else 'MISSED'})")
                status |= 0 if ok else 1
            else:
                print(f"\nbar: QPS at recall@10 >= {RECALL}: not reached (keel {bool(keel_best)}, faiss {bool(faiss_best)}): MISSED")
                status = 1
            build_ratio = keel["build_s"] / faiss["build_s"]
            ok = build_ratio <= 1.2
            print(f"bar: build time keel {keel['build_s']:.1f} s vs faiss {faiss['build_s']:.1f} s = {build_ratio:.2f}x (<= 1.2x: {'met' if ok else 'MISSED'})")
            status |= 0 if ok else 1
        grpc = runs.get("keel through gRPC")
        if grpc and grpc.get("load") and dataset == "embedding-like":
            p99 = grpc["load"]["p99_ms"]
            ok = p99 <= 2.0
            print(f"bar: gRPC Search p99 at {points} points, {grpc['load']['clients']} clients: {p99:.2f} ms (<= 2 ms: {'met' if ok else 'MISSED'})")
            status |= 0 if ok else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
