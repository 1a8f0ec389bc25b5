"""A small LlamaIndex RAG pipeline with no caching code in it.

It points the OpenAI classes at ``OPENAI_BASE_URL`` (the key comes from ``OPENAI_API_KEY``).
Run it under the launcher to cache its LLM and embedding calls:

    stratacache run -- python examples/auto/llamaindex_app.py
"""

from __future__ import annotations

import os

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

DOCUMENTS = {
    "tiers": "A tiered cache checks memory first, then disk, then a shared Redis server.",
    "ttl": "Every entry carries a time to live; expired entries are treated as misses.",
    "stampede": "When many callers miss the same key at once, only one computes the value.",
    "semantic": "A semantic cache serves paraphrases of a question it has already answered.",
    "limits": "Rate limits count both requests and tokens per minute for each model.",
}

QUESTIONS = [
    "What happens to expired entries?",
    "Which tier does a tiered cache check first?",
    "What happens to expired entries?",  # asked again
]


def main() -> None:
    base_url = os.environ.get("OPENAI_BASE_URL")
    Settings.llm = OpenAI(model="gpt-4o-mini", temperature=0, api_base=base_url)
    Settings.embed_model = OpenAIEmbedding(model="text-embedding-3-small", api_base=base_url)

    documents = [Document(text=text, doc_id=name) for name, text in DOCUMENTS.items()]
    index = VectorStoreIndex.from_documents(documents)
    engine = index.as_query_engine(similarity_top_k=2)
    for question in QUESTIONS:
        print(f"Q: {question}")
        print(f"A: {engine.query(question)}")


if __name__ == "__main__":
    main()
