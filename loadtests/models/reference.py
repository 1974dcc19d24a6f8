#!/usr/bin/env python3
"""Times the reference implementations on the workload `keel-model-bench
workload` wrote, the way `keel-model-bench run` times Keel's models, and
prints one JSON line of medians in the same shape:

- SmolLM2 through llama-cpp-python (llama.cpp) on the same GGUF file, the
  same thread count, greedy, the prompt formatted with the chat template
  stored in the GGUF. Prefill: prompt tokens over the time to the first
  generated token; decode: the later tokens over the rest.
- all-MiniLM-L6-v2 through sentence-transformers on PyTorch, CPU, the same
  thread count, from the files `keel models fetch` unpacked.

Run by loadtests/models_bench.sh inside a venv with requirements.txt.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Never reach a model hub: everything is loaded from local files.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def load_llama(gguf: Path, threads: int):
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(
        model_path=str(gguf),
        n_ctx=2048,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()]).decode("utf-8", "ignore"),
        bos_token=llm.detokenize([llm.token_bos()]).decode("utf-8", "ignore"),
    )
    return llm, formatter


def end_of_generation_tokens(llm) -> set:
    """The tokens that end an answer: end of sequence, end of turn, and
    ChatML's `<|im_end|>` (SmolLM2's end of turn)."""
    tokens = {llm.token_eos(), llm._model.token_eot()}
    im_end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    if len(im_end) == 1:
        tokens.add(im_end[0])
    return {token for token in tokens if token >= 0}


def time_generation(llm, formatter, workload) -> dict:
    """One greedy generation, started from an empty context (no prefix
    reuse between runs, as Keel does not reuse one either)."""
    prompt = formatter(messages=workload["messages"]).prompt
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    eog = end_of_generation_tokens(llm)
    llm.reset()
    started = time.perf_counter()
    first = None
    produced = 0
    for token in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
        if first is None:
            first = time.perf_counter()
        if token in eog:
            break
        produced += 1
        if produced >= workload["max_tokens"]:
            break
    finished = time.perf_counter()
    if produced < 2:
        raise SystemExit(f"error: the answer has {produced} tokens: too short to time decoding")
    return {
        "prompt_tokens": len(tokens),
        "output_tokens": produced,
        "prefill": len(tokens) / (first - started),
        "decode": (produced - 1) / (finished - first),
    }


def time_embedding(model, sentences, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(sentences), batch_size):
        model.encode(sentences[start : start + batch_size], batch_size=batch_size)
    return len(sentences) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    workload = json.loads(args.workload.read_text())
    sentences = workload["sentences"]
    repeats = max(1, args.repeats)

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    llm, formatter = load_llama(args.models / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf", args.threads)
    model = SentenceTransformer(str(args.models / "minilm"), device="cpu")

    print("reference: warm-up", file=sys.stderr)
    time_generation(llm, formatter, workload)
    model.encode(sentences[:32], batch_size=32)

    print("reference: smollm2 generation (llama-cpp-python)", file=sys.stderr)
    samples = [time_generation(llm, formatter, workload) for _ in range(repeats)]
    print("reference: minilm (sentence-transformers)", file=sys.stderr)
    with torch.inference_mode():
        batch32 = [time_embedding(model, sentences, 32) for _ in range(repeats)]
        batch1 = [time_embedding(model, sentences, 1) for _ in range(repeats)]

    print(
        json.dumps(
            {
                "implementation": "reference",
                "prompt_tokens": samples[0]["prompt_tokens"],
                "output_tokens": samples[0]["output_tokens"],
                "prefill_tokens_per_s": statistics.median(s["prefill"] for s in samples),
                "decode_tokens_per_s": statistics.median(s["decode"] for s in samples),
                "embed_batch32_sentences_per_s": statistics.median(batch32),
                "embed_batch1_sentences_per_s": statistics.median(batch1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
