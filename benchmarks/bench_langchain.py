"""LangChain integration figures, side by side with LangChain's own caches, in one process.

    python benchmarks/bench_langchain.py [--quick]

1. Hit path through ``model.invoke``: ``InMemoryCache`` vs ``LLMCache`` on a memory tier and on
   memory+disk tiers (target: at most 1.10x ``InMemoryCache``).
2. Warm embedding hits, µs per text, 2000 texts x 384 dims: ``CachedEmbeddings`` vs LangChain's
   ``CacheBackedEmbeddings`` (``InMemoryByteStore`` / ``LocalFileStore``), memory and disk
   (targets: at most 5 µs/text from memory, 15 µs/text from disk).

The measuring code is ``stratacache._peers``, which ``stratacache bench`` runs too.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_classic.storage import LocalFileStore
from langchain_core.caches import BaseCache, InMemoryCache
from langchain_core.embeddings import Embeddings
from langchain_core.stores import InMemoryByteStore

import stratacache as sc
from stratacache._peers import counting_embeddings, embedding_hits, invoke_hits
from stratacache.langchain import CachedEmbeddings, LLMCache


def bench_invoke(tmp: Path, n: int, repeats: int) -> None:
    caches: dict[str, BaseCache] = {
        "InMemoryCache": InMemoryCache(),
        "LLMCache(memory)": LLMCache(sc.TieredCache.from_urls("memory://")),
        "LLMCache(memory+disk)": LLMCache(
            sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'llm'}")
        ),
    }
    results = invoke_hits(caches, n, repeats)
    base = results["InMemoryCache"].seconds
    print("\n== LLM hit path through model.invoke (FakeListChatModel) ==")
    for name, (secs, answer) in results.items():
        note = "" if answer == "Paris" else f"   !! answered {answer!r}"
        print(f"{name:28s} {secs * 1e6:8.1f} µs/call   ratio {secs / base:5.2f}x{note}")


def bench_embeddings(tmp: Path, texts_n: int, repeats: int) -> None:
    texts = [f"document number {i} about topic {i % 97}" for i in range(texts_n)]
    contenders: dict[str, Embeddings] = {
        "CachedEmbeddings, memory": CachedEmbeddings(
            counting_embeddings(), sc.TieredCache.from_urls("memory://?max_bytes=512MB")
        ),
        "CacheBackedEmbeddings, InMemoryByteStore": CacheBackedEmbeddings.from_bytes_store(
            counting_embeddings(), InMemoryByteStore(), namespace="m", key_encoder="sha256"
        ),
        "CachedEmbeddings, disk": CachedEmbeddings(
            counting_embeddings(), sc.TieredCache.from_urls(f"disk://{tmp / 'emb'}")
        ),
        "CacheBackedEmbeddings, LocalFileStore": CacheBackedEmbeddings.from_bytes_store(
            counting_embeddings(), LocalFileStore(tmp / "lfs"), namespace="m", key_encoder="sha256"
        ),
    }
    peers = {
        "CachedEmbeddings, memory": "CacheBackedEmbeddings, InMemoryByteStore",
        "CachedEmbeddings, disk": "CacheBackedEmbeddings, LocalFileStore",
    }
    targets = {"CachedEmbeddings, memory": 5.0, "CachedEmbeddings, disk": 15.0}
    results = embedding_hits(contenders, texts, repeats)
    us = {name: m.seconds * 1e6 for name, m in results.items()}
    print(f"\n== Warm embedding hits, {texts_n} texts x 384 dims ==")
    for name, value in us.items():
        note = ""
        if name in peers:
            verdict = "PASS" if value <= targets[name] else "FAIL"
            note = (f"   {us[peers[name]] / value:5.1f}x faster than its peer; "
                    f"target <= {targets[name]:.0f} µs/text: {verdict}")  # fmt: skip
            if results[name].answer != results[peers[name]].answer:
                note += f"   !! answers differ: {results[name].answer}"
        print(f"{name:42s} {value:8.2f} µs/text{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke run)")
    args = parser.parse_args()
    n, repeats, texts_n = (300, 3, 2000) if args.quick else (2000, 7, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        bench_invoke(Path(tmp), n, repeats)
        bench_embeddings(Path(tmp), texts_n, 3 if args.quick else 15)


if __name__ == "__main__":
    main()
