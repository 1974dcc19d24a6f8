#!/usr/bin/env python3
"""Times sentence-transformers (all-MiniLM-L6-v2 on PyTorch, CPU) embedding
the passages `keel collection export` wrote, at batch 32 with the given
thread count, and prints one JSON line: chunks and chunks per second.
Truncation is the model's own (256 tokens), as Keel's embedder cuts.

Run by loadtests/ingest_bench.sh inside the venv of models/requirements.txt.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Never reach a model hub: everything is loaded from local files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=Path, required=True, help="keel collection export's JSONL")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.chunks.read_text().splitlines() if line]

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.models / "minilm"), device="cpu")
    model.encode(texts[: args.batch], batch_size=args.batch)
    print(f"reference: embedding {len(texts)} chunks", file=sys.stderr)
    started = time.perf_counter()
    with torch.inference_mode():
        model.encode(texts, batch_size=args.batch, show_progress_bar=True)
    seconds = time.perf_counter() - started
    print(json.dumps({"chunks": len(texts), "seconds": seconds, "chunks_per_s": len(texts) / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
