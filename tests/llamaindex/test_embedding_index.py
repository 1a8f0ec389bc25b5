"""CachedEmbedding, CachedRetriever and KVStore inside real LlamaIndex pipelines."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters

import stratacache as sc
import stratacache.llamaindex as scli
from stratacache.llamaindex import CachedEmbedding, CachedRetriever, KVStore
from stratacache.tiers import MemoryTier
from tests.llamaindex.conftest import CountingEmbedding, CountingLLM


def _splitter() -> SentenceSplitter:
    return SentenceSplitter(chunk_size=64, chunk_overlap=0)


DOCS = [
    Document(text=f"Document {i} talks about topic {i % 3} and caching layer {i}.",
             metadata={"group": str(i % 2)})
    for i in range(6)
]  # fmt: skip


def test_rebuilding_an_index_makes_zero_embedding_calls(
    emb: CountingEmbedding, tiered: sc.TieredCache
) -> None:
    cached = CachedEmbedding(emb, cache=tiered)
    VectorStoreIndex.from_documents(DOCS, embed_model=cached)
    cold = emb.texts
    assert cold == len(DOCS)
    index = VectorStoreIndex.from_documents(DOCS, embed_model=cached)
    assert emb.texts == cold
    retriever = index.as_retriever(similarity_top_k=2)
    retriever.retrieve("caching layer")
    retriever.retrieve("caching layer")
    assert emb.queries == 1
    assert cached.stats()["hits"] == len(DOCS) + 1


def test_query_and_text_modes_and_models_are_separate(tiered: sc.TieredCache) -> None:
    a, b = CountingEmbedding(embed_dim=8), CountingEmbedding(embed_dim=4)
    ca, cb = CachedEmbedding(a, cache=tiered), CachedEmbedding(b, cache=tiered)
    ca.get_text_embedding("hello")
    ca.get_query_embedding("hello")
    assert (a.texts, a.queries) == (1, 1)
    assert len(cb.get_text_embedding("hello")) == 4  # another model never sees a's vector
    assert b.texts == 1


def test_cold_and_warm_vectors_agree_and_batches_embed_only_misses(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    cached = CachedEmbedding(emb, cache=memory_cache)
    cold = cached.get_text_embedding_batch(["a", "b", "a"])
    assert emb.texts == 2  # duplicates embedded once
    warm = cached.get_text_embedding_batch(["a", "b", "c"])
    assert emb.texts == 3 and warm[:2] == cold[:2]


async def test_async_index_build_and_retrieve(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    cached = CachedEmbedding(emb, cache=memory_cache)
    await VectorStoreIndex.from_documents(DOCS, embed_model=cached, use_async=True).as_retriever(
    ).aretrieve("topic 1")  # fmt: skip
    texts, queries = emb.texts, emb.queries
    index = VectorStoreIndex.from_documents(DOCS, embed_model=cached, use_async=True)
    await index.as_retriever().aretrieve("topic 1")
    assert (emb.texts, emb.queries) == (texts, queries)


def test_ingestion_pipeline_sync_and_async(emb: CountingEmbedding, tiered: sc.TieredCache) -> None:
    cached = CachedEmbedding(emb, cache=tiered)
    pipeline = IngestionPipeline(transformations=[_splitter(), cached])
    nodes = pipeline.run(documents=DOCS)
    cold = emb.texts
    again = IngestionPipeline(transformations=[_splitter(), cached])
    import asyncio

    nodes2 = asyncio.run(again.arun(documents=DOCS))
    assert emb.texts == cold
    assert [n.embedding for n in nodes] == [n.embedding for n in nodes2]


def test_kvstore_as_ingestion_cache_and_embeddings_cache(
    emb: CountingEmbedding, tiered: sc.TieredCache
) -> None:
    kv = KVStore(tiered, ttl=3600)
    assert bool(kv)  # never "empty": LlamaIndex would bypass it
    cache = IngestionCache(cache=kv, collection="test")
    first = IngestionPipeline(transformations=[_splitter(), emb], cache=cache)
    first.run(documents=DOCS)
    cold = emb.texts
    second = IngestionPipeline(transformations=[_splitter(), emb], cache=cache)
    nodes = second.run(documents=DOCS)
    assert emb.texts == cold and all(n.embedding for n in nodes)

    other = CountingEmbedding(embed_dim=8, embeddings_cache=KVStore(tiered, prefix="m1:"))
    other.get_text_embedding("x")
    other.get_text_embedding("x")
    assert other.texts == 1


async def test_kvstore_basics_and_async(memory_cache: sc.TieredCache) -> None:
    kv = KVStore(memory_cache, prefix="p:")
    kv.put("k", {"a": 1}, collection="c1")
    assert kv.get("k", collection="c1") == {"a": 1}
    assert kv.get("k", collection="c2") is None
    await kv.aput("k2", {"b": 2})
    assert await kv.aget("k2") == {"b": 2}
    kv.put_all([("x", {"x": 1}), ("y", {"y": 2})])
    assert kv.get("y") == {"y": 2}
    assert kv.delete("x") and not kv.delete("x")
    assert await kv.adelete("k2")
    with pytest.raises(TypeError):
        kv.put("bad", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert kv.get_all() == {"y": {"y": 2}}  # listed through the collection's key index
    assert await kv.aget_all("c1") == {"k": {"a": 1}}
    with pytest.raises(NotImplementedError):
        KVStore(memory_cache, index_keys=False).get_all()
    kv.clear()
    assert kv.get("k", collection="c1") is None


def test_kvstore_pickles_by_configuration(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls(f"disk://{tmp_path / 'kv'}")
    kv = KVStore(cache, ttl=60, prefix="p:")
    kv.put("k", {"v": 1})
    clone = pickle.loads(pickle.dumps(kv))
    assert clone.get("k") == {"v": 1} and clone.prefix == "p:" and clone.ttl == 60
    unpicklable = sc.TieredCache([MemoryTier()])
    with pytest.raises(TypeError, match="from_urls"):
        pickle.dumps(KVStore(unpicklable))


def test_cached_embedding_travels_to_worker_processes(tmp_path: Path) -> None:
    """IngestionPipeline(num_workers>1) pickles its transformations into workers."""
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'emb'}")
    embed = CachedEmbedding(MockEmbedding(embed_dim=8), cache=cache)
    vector = embed.get_text_embedding("hello")
    clone = pickle.loads(pickle.dumps(embed))
    assert clone.get_text_embedding("hello") == vector
    assert clone._cacher.cache.stats()["tiers"][1]["hits"] == 1  # served from the shared disk


def test_cached_retriever_keys_ttl_and_invalidate(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    index = VectorStoreIndex.from_documents(DOCS, embed_model=emb)
    retriever = CachedRetriever(index.as_retriever(similarity_top_k=2), cache=memory_cache,
                                ttl=3600)  # fmt: skip
    first = retriever.retrieve("topic 2")
    q = emb.queries
    second = retriever.retrieve("topic 2")
    assert emb.queries == q
    assert [(n.node.node_id, n.score, n.node.get_content()) for n in first] == [
        (n.node.node_id, n.score, n.node.get_content()) for n in second
    ]
    # Different config (top_k, filters) and a different query bundle are separate keys.
    CachedRetriever(index.as_retriever(similarity_top_k=3), cache=memory_cache).retrieve("topic 2")
    filtered = index.as_retriever(
        similarity_top_k=2,
        filters=MetadataFilters(filters=[ExactMatchFilter(key="group", value="1")]),
    )
    assert all(
        n.node.metadata["group"] == "1"
        for n in CachedRetriever(filtered, cache=memory_cache).retrieve("topic 2")
    )
    assert retriever.stats()["hits"] == 1
    # Adding a document changes the index's node ids: the old entry is not served.
    index.insert(Document(text="Document new about topic 2."))
    fresh = CachedRetriever(index.as_retriever(similarity_top_k=2), cache=memory_cache)
    fresh.retrieve("topic 2")
    assert fresh.stats()["misses"] == 1
    retriever.invalidate()
    retriever.retrieve("topic 2")
    assert retriever.stats()["misses"] == 2


async def test_cached_retriever_async(emb: CountingEmbedding, memory_cache: sc.TieredCache) -> None:
    index = VectorStoreIndex.from_documents(DOCS, embed_model=emb)
    retriever = CachedRetriever(index.as_retriever(), cache=memory_cache, version="v1")
    await retriever.aretrieve("topic 0")
    await retriever.aretrieve("topic 0")
    assert retriever.stats()["hits"] == 1
    bumped = CachedRetriever(index.as_retriever(), cache=memory_cache, version="v2")
    await bumped.aretrieve("topic 0")
    assert bumped.stats()["misses"] == 1


def test_repeated_query_engine_query_makes_zero_llm_calls(
    emb: CountingEmbedding, llm: CountingLLM, tiered: sc.TieredCache
) -> None:
    Settings.llm = llm
    Settings.embed_model = emb
    scli.install(tiered)
    assert isinstance(Settings._llm, scli.CachedLLM)
    index = VectorStoreIndex.from_documents(DOCS)
    engine = index.as_query_engine()
    first = engine.query("What is topic 1?")
    calls, texts = llm.calls, emb.texts
    assert str(engine.query("What is topic 1?")) == str(first)
    assert llm.calls == calls
    VectorStoreIndex.from_documents(DOCS).as_query_engine().query("What is topic 1?")
    assert (llm.calls, emb.texts) == (calls, texts)
    assert scli.uninstall()
    assert Settings._llm is llm and Settings._embed_model is emb


def test_install_does_not_instantiate_defaults() -> None:
    Settings._llm = None
    Settings._embed_model = None
    done = scli.install()
    assert done["llm"] is None and done["embed_model"] is None
    assert Settings._llm is None and Settings._embed_model is None


def test_install_in_place_reaches_engines_built_before(
    emb: CountingEmbedding, llm: CountingLLM, tiered: sc.TieredCache
) -> None:
    Settings.llm = llm
    Settings.embed_model = emb
    engine = VectorStoreIndex.from_documents(DOCS).as_query_engine()  # built before install
    scli.install(tiered, in_place=True)
    assert Settings._llm is llm  # same object, patched
    engine.query("topic 0?")
    calls, queries = llm.calls, emb.queries
    engine.query("topic 0?")
    assert (llm.calls, emb.queries) == (calls, queries)
    scli.uninstall()
    engine.query("topic 0?")
    assert llm.calls > calls and "complete" not in vars(llm)
