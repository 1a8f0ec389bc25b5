"""``CachedRetriever``: caches the nodes any LlamaIndex ``BaseRetriever`` returns.

The key covers what decides the result: the query bundle (``query_str``, custom embedding
strings, image path; not the embedding, which is derived from them), the retriever's class and
knobs (top-k, filters, query mode, alpha, sparse/hybrid top-k, doc ids, store kwargs), the
index (its id, and a hash of its node ids when the index lists them, so re-indexing changes
keys by itself), the embedding model's identity, and a user ``version``. Nodes are stored with
LlamaIndex's own ``doc_to_json`` (the format ``IngestionCache`` uses), after the inner
retriever resolved recursive ``IndexNode``\\s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.integrations.llamaindex._keys import embedding_identity, jsonable
from stratacache.integrations.llamaindex.events import CacheHitEvent, CacheMissEvent, emit
from stratacache.keys import digest
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CachedRetriever", "retriever_config"]

#: Private attributes built-in retrievers keep their knobs in (there is no public config API).
_CONFIG_ATTRS: Final = (
    "_similarity_top_k", "_vector_store_query_mode", "_filters", "_alpha", "_doc_ids",
    "_sparse_top_k", "_hybrid_top_k", "_kwargs", "_mode", "_num_queries",
    "_retriever_weights", "_top_k", "_choice_batch_size", "_retriever_mode",
)  # fmt: skip
_PROCESS: Final = uuid.uuid4().hex


def retriever_config(r: Any) -> dict[str, Any]:
    """Class, knobs and index identity of a retriever (raises Uncacheable if not exact)."""
    attrs = vars(r)
    cls = type(r)
    cfg: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    for name in _CONFIG_ATTRS:
        if name in attrs:
            cfg[name] = jsonable(attrs[name])
    node_ids = attrs.get("_node_ids")
    if node_ids:
        cfg["_node_ids"] = digest(sorted(str(n) for n in node_ids))
    index = attrs.get("_index")
    index_id = getattr(getattr(index, "index_struct", None), "index_id", None)
    if isinstance(index_id, str):
        cfg["index"] = index_id
    store = attrs.get("_vector_store")
    if store is not None:
        store_cls = type(store)
        desc: dict[str, Any] = {"class": f"{store_cls.__module__}.{store_cls.__qualname__}"}
        for name in ("collection_name", "index_name", "table_name", "namespace"):
            value = getattr(store, name, None)
            if isinstance(value, str):
                desc[name] = value
        if len(desc) == 1 and "index" not in cfg:
            desc["object"] = f"{_PROCESS}:{id(store)}"  # unnamed: this process only
        cfg["store"] = desc
    embed = attrs.get("_embed_model")
    if embed is not None:
        cfg["embed"] = embedding_identity(getattr(embed, "inner", embed))
    return cfg


def _bundle(qb: QueryBundle) -> dict[str, Any]:
    return {"q": qb.query_str, "emb": qb.custom_embedding_strs, "img": qb.image_path}


def _dump(nodes: list[NodeWithScore]) -> list[dict[str, Any]]:
    return [{"node": doc_to_json(n.node), "score": n.score} for n in nodes]


def _load(data: Any) -> list[NodeWithScore]:
    return [NodeWithScore(node=json_to_doc(d["node"]), score=d["score"]) for d in data]


class CachedRetriever(BaseRetriever):
    """``CachedRetriever(index.as_retriever(similarity_top_k=5), cache=cache, ttl=3600)``.

    :param retriever: the retriever to wrap (positional).
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param ttl: lifetime of cached results (seconds or ``"1h"``).
    :param namespace: default ``li-ret`` (or ``<cache namespace>.li-ret``).
    :param version: part of every key; a string, or a callable returning one (e.g. the index's
        build time). Change it when the index changes in a way the key cannot see (a vector
        store that keeps its own nodes).
    :param retriever_id: a stable name replacing the automatic identity (needed to share
        results across processes for stores that expose no collection name).
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        cache: TieredCache | None = None,
        *,
        ttl: float | str | None = None,
        namespace: str | None = None,
        version: str | Callable[[], str] = "0",
        retriever_id: str | None = None,
    ) -> None:
        super().__init__(callback_manager=retriever.callback_manager)
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.retriever = retriever
        self.cache = kind_namespace(base, "li-ret", namespace)
        self.ttl = ttl
        self.version = version
        self.retriever_id = retriever_id
        self._stats = AdapterStats("llamaindex.CachedRetriever")

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, qb: QueryBundle) -> str | None:
        try:
            ident = self.retriever_id or retriever_config(self.retriever)
            version = self.version() if callable(self.version) else self.version
            return "r:" + digest({"r": ident, "v": version, "q": _bundle(qb)})
        except Exception as exc:
            self._stats.problem("uncacheable", "retrieval not cached: %s", exc)
            return None

    def _accept(self, raw: Any, key: str, method: str) -> list[NodeWithScore] | None:
        if raw is not MISS:
            try:
                nodes = _load(raw)
            except Exception as exc:
                self._stats.problem("bad_entries", "unusable cache entry ignored (%s)", exc)
            else:
                self._stats.count("hits")
                emit(CacheHitEvent, kind="retriever", method=method, key=key, count=len(nodes))
                return nodes
        self._stats.count("misses")
        emit(CacheMissEvent, kind="retriever", method=method, key=key)
        return None

    def _encode(self, nodes: list[NodeWithScore]) -> list[dict[str, Any]] | None:
        try:
            return _dump(nodes)
        except Exception as exc:
            self._stats.problem("skipped_writes", "result not cached: %s", exc)
            return None

    # -- BaseRetriever ------------------------------------------------------------------------

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        key = self._key(query_bundle)
        if key is not None:
            hit = self._accept(self.cache.get(key, MISS), key, "retrieve")
            if hit is not None:
                return hit
        nodes = self.retriever.retrieve(query_bundle)
        value = None if key is None else self._encode(nodes)
        if key is not None and value is not None:
            self.cache.set(key, value, ttl=self.ttl)
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        key = self._key(query_bundle)
        if key is not None:
            hit = self._accept(await self.cache.aget(key, MISS), key, "aretrieve")
            if hit is not None:
                return hit
        nodes = await self.retriever.aretrieve(query_bundle)
        value = None if key is None else self._encode(nodes)
        if key is not None and value is not None:
            await self.cache.aset(key, value, ttl=self.ttl)
        return nodes

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget every cached result of this retriever's namespace (O(1), all processes)."""
        self.cache.clear()

    async def ainvalidate(self) -> None:
        await self.cache.aclear()

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
