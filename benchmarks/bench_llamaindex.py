"""LlamaIndex integration figures, in one process, against LlamaIndex's own mechanisms.

    python benchmarks/bench_llamaindex.py [--quick]

1. Rebuilding a ``VectorStoreIndex`` of N docs with a deterministic MockEmbedding-like model:
   cold vs warm through ``CachedEmbedding`` (embedding calls counted, wall time).
2. A repeated query-engine query: LLM calls counted; latency of a ``CachedLLM`` hit vs calling
   ``MockLLM`` directly (MockLLM costs nothing, so this is the cache's overhead floor).
3. Warm hit µs per text, 384 dims: ``CachedEmbedding`` vs LlamaIndex's own
   ``embeddings_cache`` (a ``SimpleKVStore``, and our ``KVStore`` in that slot).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.storage.kvstore import SimpleKVStore
from pydantic import BaseModel, PrivateAttr

import stratacache as sc
from stratacache._peers import best_of
from stratacache.llamaindex import CachedEmbedding, CachedLLM, KVStore


class Counting(BaseModel):
    """A call counter outside the pydantic fields: a field would be part of the model's cache
    identity (full configuration), so every call would change the key."""

    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._calls = value


class DetEmbedding(Counting, MockEmbedding):
    """Text-dependent deterministic vectors; counts texts embedded."""

    def _vec(self, text: str) -> list[float]:
        h = hash(text) & 0xFFFF
        return [((h >> (i % 16)) & 7) / 7.0 + 0.01 for i in range(self.embed_dim)]

    def _get_text_embedding(self, text: str) -> list[float]:
        self.calls += 1
        return self._vec(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        self.calls += 1
        return self._vec(query)


class CountingLLM(Counting, MockLLM):
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self.calls += 1
        return super().complete(prompt, formatted=formatted, **kwargs)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_index(tmp: Path, docs: int) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'idx'}")
    emb = DetEmbedding(embed_dim=384)
    cached = CachedEmbedding(emb, cache=cache)
    documents = [Document(text=f"Document {i}: caching notes, part {i}.") for i in range(docs)]
    print(f"\n== VectorStoreIndex rebuild, {docs} docs, 384 dims ==")
    VectorStoreIndex.from_documents(documents[:5], embed_model=DetEmbedding(embed_dim=384))
    plain = DetEmbedding(embed_dim=384)
    secs = timed(lambda: VectorStoreIndex.from_documents(documents, embed_model=plain))
    print(f"{'no cache':24s} {secs * 1e3:8.1f} ms   embedding calls {plain.calls}")
    for label in ("cold (CachedEmbedding)", "warm (CachedEmbedding)"):
        before = emb.calls
        secs = timed(lambda: VectorStoreIndex.from_documents(documents, embed_model=cached))
        print(f"{label:24s} {secs * 1e3:8.1f} ms   embedding calls {emb.calls - before}")
    cache.close()


def bench_query(tmp: Path, n: int, repeats: int) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'q'}")
    llm = CountingLLM(max_tokens=16)
    cached_llm = CachedLLM(llm, cache=cache)
    emb = CachedEmbedding(DetEmbedding(embed_dim=64), cache=cache)
    index = VectorStoreIndex.from_documents(
        [Document(text=f"fact {i}") for i in range(20)], embed_model=emb
    )
    engine = index.as_query_engine(llm=cached_llm)
    print("\n== repeated query-engine query ==")
    engine.query("what is fact 3?")
    first = llm.calls
    for _ in range(5):
        engine.query("what is fact 3?")
    print(f"LLM calls: first query {first}, next 5 identical queries {llm.calls - first}")
    prompt = "Context: fact 3\nQuestion: what is fact 3?\nAnswer:"
    cached_llm.complete(prompt)
    direct = best_of(lambda: llm.complete(prompt), n, repeats)
    hit = best_of(lambda: cached_llm.complete(prompt), n, repeats)
    print(f"{'MockLLM.complete direct':28s} {direct * 1e6:8.1f} µs/call")
    print(f"{'CachedLLM.complete hit':28s} {hit * 1e6:8.1f} µs/call (memory+disk tiers)")
    cache.close()


def bench_embedding_hits(tmp: Path, texts_n: int, repeats: int) -> None:
    texts = [f"text number {i} with some words" for i in range(texts_n)]
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'emb'}")
    contenders: dict[str, Any] = {
        "CachedEmbedding(memory+disk)": CachedEmbedding(DetEmbedding(embed_dim=384), cache=cache),
        "embeddings_cache=SimpleKVStore": DetEmbedding(
            embed_dim=384, embeddings_cache=SimpleKVStore()
        ),
        "embeddings_cache=KVStore": DetEmbedding(
            embed_dim=384, embeddings_cache=KVStore(cache, prefix="bench:")
        ),
    }
    print(f"\n== warm embedding hits, {texts_n} texts x 384 dims (get_text_embedding_batch) ==")
    for name, model in contenders.items():
        model.get_text_embedding_batch(texts)
        inner = getattr(model, "inner", model)
        before = inner.calls
        secs = best_of(lambda m=model: m.get_text_embedding_batch(texts), 1, repeats)
        print(f"{name:34s} {secs / texts_n * 1e6:8.2f} µs/text   model calls "
              f"{inner.calls - before}")  # fmt: skip
    cache.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    docs, n, repeats, texts = (100, 200, 3, 500) if args.quick else (1000, 2000, 5, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        bench_index(Path(tmp), docs)
        bench_query(Path(tmp), n, repeats)
        bench_embedding_hits(Path(tmp), texts, repeats)


if __name__ == "__main__":
    main()
