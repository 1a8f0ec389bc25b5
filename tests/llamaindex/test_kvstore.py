"""KVStore as the storage of IngestionPipeline's docstore and cache, with the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import DocstoreStrategy, IngestionCache, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore.keyval_docstore import KVDocumentStore
from llama_index.core.vector_stores import SimpleVectorStore

import stratacache as sc
from stratacache.llamaindex import KVStore
from tests.llamaindex.conftest import CountingEmbedding


def _docs(*texts: str) -> list[Document]:
    return [Document(text=t, id_=f"doc-{i}") for i, t in enumerate(texts)]


def _pipeline(
    cache: sc.TieredCache, emb: CountingEmbedding, strategy: DocstoreStrategy
) -> IngestionPipeline:
    return IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), emb],
        docstore=KVDocumentStore(KVStore(cache, namespace="docs")),
        vector_store=SimpleVectorStore(),
        cache=IngestionCache(cache=KVStore(cache, namespace="ingest"), collection="run"),
        docstore_strategy=strategy,
    )


def test_pipeline_dedup_and_upserts_with_docstore_and_cache(
    emb: CountingEmbedding, tiered: sc.TieredCache
) -> None:
    first = _pipeline(tiered, emb, DocstoreStrategy.UPSERTS)
    assert len(first.run(documents=_docs("alpha text", "beta text"))) == 2
    assert emb.texts == 2
    # A new pipeline over the same stores (a later run, another process): only changes run.
    second = _pipeline(tiered, emb, DocstoreStrategy.UPSERTS)
    assert second.run(documents=_docs("alpha text", "beta text")) == []
    changed = second.run(documents=_docs("alpha text", "beta text, revised"))
    assert [n.get_content() for n in changed] == ["beta text, revised"]
    assert emb.texts == 3
    assert sorted(second.docstore.get_all_document_hashes().values()) == ["doc-0", "doc-1"]

    dedup = _pipeline(tiered, emb, DocstoreStrategy.DUPLICATES_ONLY)
    assert dedup.run(documents=_docs("alpha text", "beta text, revised")) == []


async def test_async_pipeline_and_ingestion_cache_clear(
    emb: CountingEmbedding, tiered: sc.TieredCache
) -> None:
    pipeline = _pipeline(tiered, emb, DocstoreStrategy.UPSERTS_AND_DELETE)
    await pipeline.arun(documents=_docs("one", "two"))
    known = await pipeline.docstore.aget_all_document_hashes()
    assert sorted(known.values()) == ["doc-0", "doc-1"]
    await pipeline.arun(documents=_docs("one"))  # doc-1 is gone from the input: deleted
    known = await pipeline.docstore.aget_all_document_hashes()
    assert sorted(known.values()) == ["doc-0"]
    assert pipeline.docstore.get_document("doc-1", raise_error=False) is None

    assert pipeline.cache is not None
    assert pipeline.cache.cache.get_all(collection="run")  # transformation results cached
    pipeline.cache.clear("run")
    assert pipeline.cache.cache.get_all(collection="run") == {}


def test_listing_skips_expired_entries_and_survives_a_bad_index(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls(f"disk://{tmp_path / 'kv'}")
    kv = KVStore(cache)
    kv.put_all([("a", {"v": 1}), ("b", {"v": 2})], collection="c")
    cache.with_namespace("li-kv").delete("1:c:a")  # gone behind the index's back (TTL, evicted)
    assert kv.get_all("c") == {"b": {"v": 2}}
    shard_of_b = next(iter(kv._shards("c", add=["b"], remove=[])))
    cache.with_namespace("li-kv").set(shard_of_b, ["not", "an", "index"])
    assert kv.get_all("c") == {}  # an unusable index lists nothing; it is not an error
    assert kv.stats()["bad_entries"] >= 1
    kv.put("c1", {"v": 3}, collection="c")
    assert kv.get_all("c") == {"c1": {"v": 3}}


def test_large_collections_list_completely(memory_cache: sc.TieredCache) -> None:
    kv = KVStore(memory_cache)
    kv.put_all([(f"k{i}", {"i": i}) for i in range(600)], collection="big")
    for i in range(0, 600, 7):
        kv.delete(f"k{i}", collection="big")
    listed = kv.get_all("big")
    assert sorted(listed) == sorted(f"k{i}" for i in range(600) if i % 7)
    assert all(v == {"i": int(k[1:])} for k, v in listed.items())


def test_index_keys_can_be_turned_off(memory_cache: sc.TieredCache) -> None:
    kv = KVStore(memory_cache, index_keys=False)
    kv.put("k", {"v": 1})
    assert kv.get("k") == {"v": 1}
    with pytest.raises(NotImplementedError, match="index_keys=False"):
        kv.get_all()
