"""CachedRetriever identity: data by content where LlamaIndex holds it, never by object address."""

from __future__ import annotations

import pytest
from llama_index.core import Document, SummaryIndex, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores import SimpleVectorStore, VectorStoreQuery

import stratacache as sc
from stratacache.errors import StrataCacheError
from stratacache.llamaindex import CachedRetriever
from tests.llamaindex.conftest import CountingEmbedding


class StoreRetriever(BaseRetriever):
    """A user's retriever over a bare vector store (no index, no collection name)."""

    def __init__(self, texts: list[str], embed: CountingEmbedding) -> None:
        super().__init__()
        self._embed_model = embed
        self._nodes = {f"n{i}": TextNode(id_=f"n{i}", text=t) for i, t in enumerate(texts)}
        for node in self._nodes.values():
            node.embedding = embed.get_text_embedding(node.text)
        self._vector_store = SimpleVectorStore()
        self._vector_store.add(list(self._nodes.values()))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = VectorStoreQuery(
            query_embedding=self._embed_model.get_query_embedding(query_bundle.query_str),
            similarity_top_k=1,
        )
        result = self._vector_store.query(query)
        sims = result.similarities or []
        return [
            NodeWithScore(node=self._nodes[i], score=s)
            for i, s in zip(result.ids or [], sims, strict=True)
        ]


def test_unidentifiable_store_needs_an_explicit_version(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    """An unnamed store used to be keyed by id(store), which a later store can reuse."""
    with pytest.raises(StrataCacheError, match="version="):
        CachedRetriever(StoreRetriever(["alpha"], emb), cache=memory_cache)
    first = CachedRetriever(StoreRetriever(["alpha"], emb), cache=memory_cache, version="a")
    second = CachedRetriever(StoreRetriever(["beta"], emb), cache=memory_cache, version="b")
    assert first.retrieve("q")[0].node.get_content() == "alpha"
    assert second.retrieve("q")[0].node.get_content() == "beta"
    assert first.retrieve("q")[0].node.get_content() == "alpha"
    assert first.stats().get("hits") == 1 and "hits" not in second.stats()


def _texts(nodes: list[NodeWithScore]) -> list[str]:
    return sorted(n.node.get_content() for n in nodes)


def test_index_changes_through_the_framework_change_keys(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    index = VectorStoreIndex([TextNode(id_="n1", text="old text")], embed_model=emb)
    # Built directly, the retriever sees every node of the index, also ones added later.
    cached = CachedRetriever(VectorIndexRetriever(index, similarity_top_k=5), cache=memory_cache)
    assert _texts(cached.retrieve("q")) == ["old text"]
    assert _texts(cached.retrieve("q")) == ["old text"]
    assert cached.stats()["hits"] == 1
    index.insert(Document(text="another document", id_="d2"))
    assert _texts(cached.retrieve("q")) == ["another document", "old text"]
    index.insert_nodes([TextNode(id_="n1", text="new text")])  # upsert under the same node id
    assert _texts(cached.retrieve("q")) == ["another document", "new text"]
    index.delete_ref_doc("d2")
    assert _texts(cached.retrieve("q")) == ["new text"]
    assert cached.stats()["hits"] == 1  # every change was a miss, never the old answer


def test_summary_index_retriever_follows_inserts(memory_cache: sc.TieredCache) -> None:
    index = SummaryIndex([TextNode(text="first")])
    cached = CachedRetriever(index.as_retriever(), cache=memory_cache)
    assert _texts(cached.retrieve("anything")) == ["first"]
    index.insert(Document(text="second"))
    assert _texts(cached.retrieve("anything")) == ["first", "second"]


def test_identical_content_shares_entries(
    emb: CountingEmbedding, memory_cache: sc.TieredCache
) -> None:
    """Keys come from content, so a rebuilt identical index (another process) hits."""

    def build() -> VectorStoreIndex:
        return VectorStoreIndex([TextNode(id_="n1", text="same text")], embed_model=emb)

    CachedRetriever(build().as_retriever(), cache=memory_cache).retrieve("q")
    again = CachedRetriever(build().as_retriever(), cache=memory_cache)
    again.retrieve("q")
    assert again.stats()["hits"] == 1
