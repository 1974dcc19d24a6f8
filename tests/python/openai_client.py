"""Keel's OpenAI-compatible HTTP API driven by the `openai` package,
unchanged, as a user's application would drive it.

Usage: openai_client.py BASE_URL API_KEY ENDPOINT COLLECTION QUESTION

Prints one JSON object with what each call returned; any exception fails
the run (non-zero exit), which the Rust test that runs this reports.
"""

import json
import sys

import openai
from openai import OpenAI


def main():
    base_url, api_key, endpoint, collection, question = sys.argv[1:6]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    messages = [{"role": "user", "content": question}]

    completion = client.chat.completions.create(
        model=endpoint, messages=messages, user="python-client"
    )

    pieces = []
    finish_reason = None
    usage = None
    first_keel = None
    stream = client.chat.completions.create(
        model=endpoint,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        keel = (chunk.model_extra or {}).get("keel")
        if first_keel is None and keel is not None:
            first_keel = keel
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()

    # The package asks for base64 by default and decodes it itself.
    embeddings = client.embeddings.create(model=collection, input=[question, "shipping"])

    try:
        client.chat.completions.create(model="no-such-endpoint", messages=messages)
        missing = None
    except openai.NotFoundError as error:
        missing = {"status": error.status_code, "message": error.message}

    try:
        OpenAI(base_url=base_url, api_key="keel_wrong", max_retries=0).models.list()
        unauthenticated = None
    except openai.AuthenticationError as error:
        unauthenticated = {"status": error.status_code}

    print(
        json.dumps(
            {
                "answer": completion.choices[0].message.content,
                "finish_reason": completion.choices[0].finish_reason,
                "usage": completion.usage.model_dump(),
                "keel": completion.model_extra["keel"],
                "streamed": "".join(pieces),
                "stream_finish_reason": finish_reason,
                "stream_usage": usage,
                "stream_keel": first_keel,
                "embedding_lengths": [len(item.embedding) for item in embeddings.data],
                "embedding_head": embeddings.data[0].embedding[:4],
                "models": [model.id for model in client.models.list().data],
                "missing_endpoint": missing,
                "unauthenticated": unauthenticated,
                "openai_version": openai.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
