"""CachedEmbeddings: the standard suites and the caching behaviour."""

from __future__ import annotations

import time
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


# -- the warm-hit memos: keys per text, decoded vectors per key ---------------------------------


def test_warm_hits_are_fresh_lists(memory_cache: sc.TieredCache) -> None:
    emb = CachedEmbeddings(DeterministicFakeEmbedding(size=8), memory_cache)
    cold = emb.embed_documents(["a", "b"])
    warm = emb.embed_documents(["a", "b", "a"])
    again = emb.embed_documents(["a", "b"])
    assert warm[:2] == cold == again
    lists = [*cold, *warm, *again]
    assert len({id(v) for v in lists}) == len(lists)  # no list handed out twice
    warm[0][0] = 123.0
    assert emb.embed_documents(["a"])[0] == cold[0]
    query = emb.embed_query("q")
    query.append(1.0)
    assert len(emb.embed_query("q")) == 8


def test_memo_follows_overwrite_delete_clear_and_ttl(memory_cache: sc.TieredCache) -> None:
    from stratacache.integrations._vectors import pack_vector

    model = Counting(size=8)
    emb = CachedEmbeddings(model, memory_cache, ttl=0.2)
    original = emb.embed_documents(["a"])[0]
    emb.embed_documents(["a"])  # the memo now holds "a"
    key = emb._key("a", "d")
    emb.cache.set(key, pack_vector([1.0] * 8))  # overwritten (another process, say)
    assert emb.embed_documents(["a"]) == [[1.0] * 8]
    emb.cache.delete(key)
    assert emb.embed_documents(["a"]) == [original]  # recomputed
    emb.cache.clear()
    assert emb.embed_documents(["a"]) == [original]
    time.sleep(0.35)
    assert emb.embed_documents(["a"]) == [original]
    assert model.calls == [["a"], ["a"], ["a"], ["a"]]


def test_changing_model_id_changes_keys(memory_cache: sc.TieredCache) -> None:
    model = Counting(size=8)
    emb = CachedEmbeddings(model, memory_cache, model_id="one")
    emb.embed_documents(["a"])
    emb.model_id = "two"
    emb.embed_documents(["a"])
    assert model.calls == [["a"], ["a"]]
    assert emb._key("a", "d").startswith("two:d:")


def test_text_keys_memo_is_exact_and_bounded() -> None:
    from stratacache.integrations._vectors import TextKeys

    keys = TextKeys("m:d:", budget=2048)
    texts = [f"text {i}" for i in range(100)] + ["é\ud800", ""]
    first = keys.keys(texts)
    assert first == [keys.key(t) for t in texts] == keys.keys(texts)
    assert len(set(first)) == len(texts)
    assert keys._used <= keys.budget and len(keys._memo) < len(texts)
    keys.keys(["x" * 5000])  # larger than the budget: keyed, never kept
    assert "x" * 5000 not in keys._memo


def test_vector_memo_accounting_and_threads() -> None:
    import threading

    from stratacache.integrations._vectors import EmbeddingPlan, VectorMemo, pack_vector

    memo = VectorMemo(budget=20 * (32 * 4 + 200))
    for _ in range(3):
        memo.remember("same", b"x", [1.0] * 4)  # overwriting must not leak budget
    assert memo._used == 32 * 4 + 200
    vectors = {f"k{i}": [float(i)] * 4 for i in range(50)}
    packed = {k: pack_vector(v) for k, v in vectors.items()}
    errors: list[str] = []

    def work(offset: int) -> None:
        for n in range(200):
            chosen = [f"k{(n + offset + j) % 50}" for j in range(5)]
            plan = EmbeddingPlan(chosen)
            memo.absorb(plan, chosen, {k: packed[k] for k in chosen})
            for key, vec in zip(chosen, plan.result(), strict=True):
                if vec != vectors[key]:
                    errors.append(key)
                vec.append(-1.0)  # the caller owns what it got

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert memo._used <= memo.budget


def test_embeddings_pickle_without_their_memos(memory_cache: sc.TieredCache) -> None:
    import pickle

    from stratacache.integrations._vectors import TextKeys, VectorMemo

    keys = TextKeys("p:", 100)
    keys.keys(["a"])
    clone = pickle.loads(pickle.dumps(keys))
    assert (clone.prefix, clone.budget, clone._memo) == ("p:", 100, {})
    memo = VectorMemo(1000)
    memo.remember("k", b"x", [1.0])
    restored = pickle.loads(pickle.dumps(memo))
    assert (restored.budget, restored._memo, restored._used) == (1000, {}, 0)
