"""ByteStore: the standard store suites and the CacheBackedEmbeddings switch."""

from __future__ import annotations

import pytest
from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.stores import BaseStore
from langchain_tests.integration_tests import BaseStoreAsyncTests, BaseStoreSyncTests

import stratacache as sc
from stratacache.langchain import ByteStore


class TestByteStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"

    @pytest.fixture
    def kv_store(self, tiered: sc.TieredCache) -> BaseStore[str, bytes]:
        return ByteStore(tiered)  # the default must pass the framework's suites


class TestByteStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    async def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"

    @pytest.fixture
    async def kv_store(self, tiered: sc.TieredCache) -> BaseStore[str, bytes]:
        return ByteStore(tiered)  # the default must pass the framework's suites


def test_yield_keys_without_the_index_says_why(memory_cache: sc.TieredCache) -> None:
    store = ByteStore(memory_cache, index_keys=False)
    store.mset([("a", b"1")])
    assert store.mget(["a", "b"]) == [b"1", None]
    with pytest.raises(NotImplementedError, match="index_keys=False"):
        list(store.yield_keys())


def test_default_store_lists_its_keys(memory_cache: sc.TieredCache) -> None:
    store = ByteStore(memory_cache)
    store.mset([("b", b"2"), ("a", b"1")])
    assert sorted(store.yield_keys()) == ["a", "b"]


def test_expired_keys_are_not_listed(memory_cache: sc.TieredCache) -> None:
    store = ByteStore(memory_cache)
    store.mset([("a", b"1"), ("b", b"2")])
    store.cache.delete("v:a")  # as if it had expired
    assert list(store.yield_keys()) == ["b"]


def test_cache_backed_embeddings_switch_in_one_line(tiered: sc.TieredCache) -> None:
    emb = CacheBackedEmbeddings.from_bytes_store(
        DeterministicFakeEmbedding(size=8), ByteStore(tiered), namespace="m1", key_encoder="sha256"
    )
    first = emb.embed_documents(["a", "b"])
    assert emb.embed_documents(["a", "b"]) == first
    # Another process (a fresh cache over the same disk directory) reads the stored vectors.
    disk = sc.TieredCache(tiered.tiers[1:])
    again = CacheBackedEmbeddings.from_bytes_store(
        DeterministicFakeEmbedding(size=8), ByteStore(disk), namespace="m1", key_encoder="sha256"
    )
    assert again.document_embedding_store.mget(["a", "b"]) == first  # type: ignore[attr-defined]
