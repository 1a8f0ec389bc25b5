"""CachedRetriever: the standard retriever suite and the caching behaviour."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests
from pydantic import PrivateAttr

import stratacache as sc
from stratacache.langchain import CachedRetriever

TEXTS = ["cats purr", "dogs bark", "birds sing", "fish swim", "cows moo"]


def _store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_texts(TEXTS, metadatas=[{"i": i} for i in range(len(TEXTS))])
    return store


def cached_vector_retriever(k: int = 4, **kwargs: Any) -> CachedRetriever:
    return CachedRetriever(
        _store().as_retriever(search_kwargs={"k": k}),
        cache=sc.TieredCache.from_urls("memory://"),
        **kwargs,
    )


class TestCachedRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[CachedRetriever]:
        return cached_vector_retriever  # type: ignore[return-value]

    @property
    def retriever_query_example(self) -> str:
        return "what do cats do?"


class Counting(BaseRetriever):
    """Sync-only on purpose: the async path must fall back to it, kwargs included."""

    docs: list[Document] = []  # noqa: RUF012
    # A counter, not a setting: a public field would be part of the retriever's identity.
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int = 2
    ) -> list[Document]:
        self._calls += 1
        return [d.model_copy(deep=True) for d in self.docs[:k]]


def _counting() -> Counting:
    return Counting(docs=[Document(f"doc {i}", metadata={"n": i}, id=str(i)) for i in range(4)])


def test_hits_are_deep_copies(memory_cache: sc.TieredCache) -> None:
    inner = _counting()
    retriever = CachedRetriever(inner, cache=memory_cache)
    first = retriever.invoke("q")
    first[0].metadata["n"] = 99
    second = retriever.invoke("q")
    assert inner.calls == 1
    assert second[0].metadata == {"n": 0} and second[0].id == "0"


def test_key_covers_query_kwargs_and_config(memory_cache: sc.TieredCache) -> None:
    inner = _counting()
    retriever = CachedRetriever(inner, cache=memory_cache)
    retriever.invoke("q")
    retriever.invoke("q", k=3)
    retriever.invoke("other")
    assert inner.calls == 3
    k1 = CachedRetriever(_store().as_retriever(search_kwargs={"k": 1}), cache=memory_cache)
    k2 = CachedRetriever(_store().as_retriever(search_kwargs={"k": 2}), cache=memory_cache)
    assert len(k1.invoke("cats")) == 1 and len(k2.invoke("cats")) == 2


def test_version_and_invalidate(memory_cache: sc.TieredCache) -> None:
    inner = _counting()
    retriever = CachedRetriever(inner, cache=memory_cache, version="v1")
    retriever.invoke("q")
    retriever.invoke("q")
    assert inner.calls == 1
    retriever.version = "v2"  # re-indexed
    retriever.invoke("q")
    assert inner.calls == 2
    retriever.invalidate()
    retriever.invoke("q")
    assert inner.calls == 3


def test_ttl(memory_cache: sc.TieredCache, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    inner = _counting()
    retriever = CachedRetriever(inner, cache=memory_cache, ttl=10)
    retriever.invoke("q")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 11)
    retriever.invoke("q")
    assert inner.calls == 2


async def test_async_falls_back_to_the_sync_path_with_kwargs(memory_cache: sc.TieredCache) -> None:
    inner = _counting()
    retriever = CachedRetriever(inner, cache=memory_cache)
    docs = await retriever.ainvoke("q", k=3)
    assert len(docs) == 3
    assert len(await retriever.ainvoke("q", k=3)) == 3
    assert inner.calls == 1


def test_empty_results_are_not_cached(memory_cache: sc.TieredCache) -> None:
    inner = Counting(docs=[])
    retriever = CachedRetriever(inner, cache=memory_cache)
    retriever.invoke("q")
    retriever.invoke("q")
    assert inner.calls == 2


def test_unnamed_stores_never_share_results(memory_cache: sc.TieredCache) -> None:
    a = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    a.add_texts(["only in a"])
    b = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    b.add_texts(["only in b"])
    ra = CachedRetriever(a.as_retriever(), cache=memory_cache)
    rb = CachedRetriever(b.as_retriever(), cache=memory_cache)
    assert ra.invoke("x")[0].page_content == "only in a"
    assert rb.invoke("x")[0].page_content == "only in b"


def test_one_store_per_document_never_serves_another_stores_documents(
    memory_cache: sc.TieredCache,
) -> None:
    """A store freed after each upload lets the next one reuse its address: never a key."""
    for i in range(20):
        store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
        store.add_texts([f"upload {i}"])
        docs = CachedRetriever(store.as_retriever(), cache=memory_cache).invoke("summary")
        assert [d.page_content for d in docs] == [f"upload {i}"]
        del store, docs


def test_same_contents_share_results_across_store_objects(memory_cache: sc.TieredCache) -> None:
    def retriever() -> CachedRetriever:
        store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
        store.add_documents([Document("same text", id="d1")])
        return CachedRetriever(store.as_retriever(), cache=memory_cache)

    retriever().invoke("q")
    second = retriever()
    assert [d.page_content for d in second.invoke("q")] == ["same text"]
    assert second.stats()["hits"] == 1


def test_writes_through_the_framework_change_the_key(memory_cache: sc.TieredCache) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents([Document("first", id="1")])
    retriever = CachedRetriever(store.as_retriever(search_kwargs={"k": 5}), cache=memory_cache)
    assert [d.page_content for d in retriever.invoke("q")] == ["first"]
    store.add_documents([Document("second", id="2")])
    assert sorted(d.page_content for d in retriever.invoke("q")) == ["first", "second"]
    store.delete(["1"])
    assert [d.page_content for d in retriever.invoke("q")] == ["second"]


async def test_async_writes_change_the_key(memory_cache: sc.TieredCache) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    await store.aadd_documents([Document("first", id="1")])
    retriever = CachedRetriever(store.as_retriever(), cache=memory_cache)
    assert len(await retriever.ainvoke("q")) == 1
    await store.aadd_documents([Document("second", id="2")])
    assert len(await retriever.ainvoke("q")) == 2


class ExternalStore(VectorStore):
    """Stands for a vector database client: its contents are not readable, it has no name."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.searches = 0

    def add_texts(self, texts: Iterable[str], metadatas: Any = None, **kwargs: Any) -> list[str]:
        self.texts.extend(texts)
        return []

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Any, metadatas: Any = None, **kwargs: Any
    ) -> ExternalStore:
        return cls(list(texts))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        self.searches += 1
        return [Document(t) for t in self.texts[:k]]


def test_unidentifiable_store_is_uncached_unless_named(
    memory_cache: sc.TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    store = ExternalStore(["a"])
    anonymous = CachedRetriever(store.as_retriever(), cache=memory_cache)
    anonymous.invoke("q")
    anonymous.invoke("q")
    assert store.searches == 2
    assert anonymous.stats()["unkeyable"] == 2
    assert "retriever_id" in caplog.text
    named = CachedRetriever(store.as_retriever(), cache=memory_cache, retriever_id="kb-prod")
    named.invoke("q")
    named.invoke("q")
    assert store.searches == 3
    # Writes to an external database are invisible to the key: version= says so.
    store.add_texts(["b"])
    named.version = "after-upload"
    assert len(named.invoke("q")) == 2
