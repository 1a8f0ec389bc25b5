"""A small LiteLLM script with no caching code in it.

LiteLLM's ``openai/`` provider reads ``OPENAI_BASE_URL`` (or ``OPENAI_API_BASE``) and
``OPENAI_API_KEY`` from the environment. Run it under the launcher to get caching:

    stratacache run -- python examples/auto/litellm_app.py
"""

from __future__ import annotations

import litellm

QUESTIONS = [
    "Summarise what a CDN does in one sentence.",
    "What is the difference between a cache hit and a miss?",
    "Summarise what a CDN does in one sentence.",  # asked again
]

SNIPPETS = [
    "Caches trade memory for latency.",
    "A TTL bounds how stale an entry can get.",
    "Write-back caches defer writes to the backing store.",
]


def main() -> None:
    for question in QUESTIONS:
        response = litellm.completion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            temperature=0,
        )
        print(f"Q: {question}")
        print(f"A: {response.choices[0].message.content}")

    vectors = litellm.embedding(model="openai/text-embedding-3-small", input=SNIPPETS)
    for snippet, item in zip(SNIPPETS, vectors.data, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in item["embedding"][:3])
        print(f"E: {snippet} -> [{head}, ...]")


if __name__ == "__main__":
    main()
