"""CachedEmbeddings: the standard suites and the caching behaviour."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

import stratacache as sc
from stratacache.langchain import CachedEmbeddings


def _params() -> dict[str, Any]:
    return {
        "underlying": DeterministicFakeEmbedding(size=8),
        "cache": sc.TieredCache.from_urls("memory://"),
    }


class TestCachedEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _params()


class TestCachedEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return _params()


class Counting(DeterministicFakeEmbedding):
    calls: list[list[str]] = []  # noqa: RUF012 - pydantic field, copied per instance
    queries: list[str] = []  # noqa: RUF012

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return super().embed_documents(texts)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return super().embed_query(text)


def _f32(vec: list[float]) -> list[float]:
    return array("f", vec).tolist()


def test_only_unique_misses_reach_the_model_in_caller_order(memory_cache: sc.TieredCache) -> None:
    model = Counting(size=16)
    emb = CachedEmbeddings(model, memory_cache)
    emb.embed_documents(["b", "a"])
    out = emb.embed_documents(["c", "a", "d", "c", "b", "e"])
    assert model.calls == [["b", "a"], ["c", "d", "e"]]
    expected = [_f32(DeterministicFakeEmbedding(size=16).embed_query(t)) for t in "cadcbe"]
    assert out == expected
    out[0].append(1.0)  # duplicates are separate lists
    assert len(out[3]) == 16


def test_cold_and_warm_results_are_identical(memory_cache: sc.TieredCache) -> None:
    emb = CachedEmbeddings(DeterministicFakeEmbedding(size=32), memory_cache)
    assert emb.embed_documents(["x", "y"]) == emb.embed_documents(["x", "y"])


def test_model_identity_scopes_entries(memory_cache: sc.TieredCache) -> None:
    small = CachedEmbeddings(DeterministicFakeEmbedding(size=4), memory_cache)
    large = CachedEmbeddings(DeterministicFakeEmbedding(size=8), memory_cache)
    assert len(small.embed_documents(["t"])[0]) == 4
    assert len(large.embed_documents(["t"])[0]) == 8


def test_queries_cached_separately_and_opt_out(memory_cache: sc.TieredCache) -> None:
    model = Counting(size=8)
    emb = CachedEmbeddings(model, memory_cache)
    emb.embed_query("q")
    emb.embed_query("q")
    assert model.queries == ["q"]
    emb.embed_documents(["q"])
    assert model.calls == [["q"]]  # a query entry does not serve documents
    no_q = CachedEmbeddings(Counting(size=8), memory_cache, cache_queries=False)
    no_q.embed_query("z")
    no_q.embed_query("z")
    assert no_q.underlying.queries == ["z", "z"]  # type: ignore[attr-defined]


def test_batch_size_and_disk_tier(tiered: sc.TieredCache) -> None:
    model = Counting(size=8)
    emb = CachedEmbeddings(model, tiered, batch_size=2)
    emb.embed_documents(list("abcde"))
    assert model.calls == [["a", "b"], ["c", "d"], ["e"]]
    disk_only = sc.TieredCache(tiered.tiers[1:])
    again = CachedEmbeddings(Counting(size=8), disk_only)
    assert again.embed_documents(list("edcba")) == emb.embed_documents(list("edcba"))
    assert again.underlying.calls == []  # type: ignore[attr-defined]


async def test_async_twins(memory_cache: sc.TieredCache) -> None:
    model = Counting(size=8)
    emb = CachedEmbeddings(model, memory_cache)
    first = await emb.aembed_documents(["a", "b", "a"])
    assert await emb.aembed_documents(["b", "a"]) == [first[1], first[0]]
    assert model.calls == [["a", "b"]]
    assert await emb.aembed_query("q") == await emb.aembed_query("q")


class Broken(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[] if t == "empty" else [float("nan")] if t == "nan" else [1.0] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0]


def test_bad_vectors_are_returned_but_never_cached(memory_cache: sc.TieredCache) -> None:
    emb = CachedEmbeddings(Broken(), memory_cache)
    assert emb.embed_documents(["ok", "empty"]) == [[1.0], []]
    emb.embed_documents(["ok", "empty", "nan"])
    assert emb.stats()["skipped_writes"] == 3
    assert emb.stats()["hits"] == 1


def test_wrong_count_from_model_raises(memory_cache: sc.TieredCache) -> None:
    class Short(Broken):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0]]

    with pytest.raises(ValueError, match="returned 1 embeddings for 2 texts"):
        CachedEmbeddings(Short(), memory_cache).embed_documents(["a", "b"])


def test_corrupt_entry_is_a_miss(memory_cache: sc.TieredCache) -> None:
    model = Counting(size=8)
    emb = CachedEmbeddings(model, memory_cache)
    emb.embed_documents(["a"])
    emb.cache.set(emb._key("a", "d"), {"not": "a vector"})
    assert len(emb.embed_documents(["a"])[0]) == 8
    assert model.calls == [["a"], ["a"]]
