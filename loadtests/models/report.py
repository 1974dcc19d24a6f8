#!/usr/bin/env python3
"""Prints the model benchmark as a markdown table: the median over rounds of
Keel's figures and the reference's, and their ratio (Keel / reference),
checked against the bars Keel holds itself to. Exits 1 when a bar is
missed. Usage: report.py KEEL.jsonl REFERENCE.jsonl"""

import json
import statistics
import sys

# (key, what it is, the reference, the lowest acceptable ratio)
ROWS = [
    ("prefill_tokens_per_s", "smollm2 prefill, tokens/s", "llama-cpp-python", 0.95),
    ("decode_tokens_per_s", "smollm2 decode, tokens/s", "llama-cpp-python", 0.95),
    ("embed_batch32_sentences_per_s", "minilm batch 32, sentences/s", "sentence-transformers", 1.0),
    ("embed_batch1_sentences_per_s", "minilm batch 1, sentences/s", "sentence-transformers", 1.0),
]


def rounds(path: str) -> list:
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]


def main() -> int:
    keel, reference = rounds(sys.argv[1]), rounds(sys.argv[2])
    print(f"rounds: {len(keel)} (Keel) / {len(reference)} (reference); medians over rounds")
    print(
        f"prompt tokens: {keel[0]['prompt_tokens']} (Keel) / {reference[0]['prompt_tokens']} (reference); "
        f"answer tokens: {keel[0]['output_tokens']} / {reference[0]['output_tokens']}"
    )
    print()
    print("| measure | Keel | reference | ratio | bar | |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    missed = 0
    for key, label, against, bar in ROWS:
        ours = statistics.median(r[key] for r in keel)
        theirs = statistics.median(r[key] for r in reference)
        ratio = ours / theirs
        verdict = "ok" if ratio >= bar else "MISSED"
        missed += ratio < bar
        spread = f"{min(r[key] for r in keel):.0f}-{max(r[key] for r in keel):.0f}"
        print(f"| {label} (vs {against}) | {ours:.1f} ({spread}) | {theirs:.1f} | {ratio:.3f} | >= {bar} | {verdict} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
