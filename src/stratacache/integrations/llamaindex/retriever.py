"""``CachedRetriever``: caches the nodes any LlamaIndex ``BaseRetriever`` returns.

The key covers what decides the result: the query bundle (``query_str``, custom embedding
strings, image path; not the embedding, which is derived from them), the retriever's class and
knobs (top-k, filters, query mode, alpha, sparse/hybrid top-k, doc ids, store kwargs), what
the retriever searches, the embedding model's identity, and a user ``version``.

"What it searches" is identified by content wherever LlamaIndex holds the data itself: an
index whose nodes live in its docstore (``VectorStoreIndex`` over the in-memory store, summary,
keyword and tree indexes) is fingerprinted from its ``index_struct`` and the docstore's node
hashes, so ``index.insert``, ``insert_nodes`` (also an upsert of an existing node id),
``delete_ref_doc`` and ``update_ref_doc`` change keys by themselves. A vector store that keeps
its own nodes (an external database) is identified by class and collection/index name, and
cannot tell us when it changes: that is what ``version=``, ``ttl=`` and ``invalidate()`` are
for. Something neither applies to (an unnamed store without an index, a custom retriever) must
be given ``version=`` or ``retriever_id=``: object addresses are never identities, since
CPython reuses them once an object is freed. Nodes are stored with LlamaIndex's own
``doc_to_json`` (the format ``IngestionCache`` uses), after the inner retriever resolved
recursive ``IndexNode``\\s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

from stratacache.errors import ConfigurationError
from stratacache.integrations._shared import (
    AdapterStats,
    Tenant,
    check_tenant,
    default_cache,
    kind_namespace,
    tenant_scoped_key,
)
from stratacache.integrations.llamaindex._keys import (
    embedding_identity,
    jsonable,
    llm_identity,
)
from stratacache.integrations.llamaindex.events import CacheHitEvent, CacheMissEvent, emit
from stratacache.keys import digest
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CachedRetriever", "data_identity", "retriever_config"]

#: Private attributes built-in retrievers keep their knobs in (there is no public config API).
_CONFIG_ATTRS: Final = (
    "_similarity_top_k", "_vector_store_query_mode", "_filters", "_alpha", "_doc_ids",
    "_sparse_top_k", "_hybrid_top_k", "_kwargs", "_mode", "_num_queries",
    "_retriever_weights", "_top_k", "_choice_batch_size", "_retriever_mode",
)  # fmt: skip
#: Attributes that name an external store's data.
_STORE_NAMES: Final = ("collection_name", "index_name", "table_name", "namespace")


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _index_identity(index: Any) -> dict[str, Any] | None:
    """A content fingerprint of an index whose nodes LlamaIndex holds, else its store's name."""
    struct = getattr(index, "index_struct", None)
    if struct is None:
        return None
    store = getattr(index, "_vector_store", None)
    if store is not None and getattr(store, "stores_text", False):
        return _store_identity(store, index_id=getattr(struct, "index_id", None))
    docstore = getattr(index, "docstore", None)
    if docstore is None:
        return None
    # The struct lists the index's node ids; the docstore's hashes change when a node's text
    # or metadata does, also under an unchanged id. O(nodes) per lookup, as is the in-memory
    # search itself. The index's random id is left out: two builds of one content answer alike.
    shape = {k: v for k, v in struct.to_dict().items() if k != "index_id"}
    content = {"struct": shape, "hashes": sorted(docstore.get_all_document_hashes())}
    return {"class": _qualname(index), "content": digest(content)}


def _store_identity(store: Any, index_id: Any = None) -> dict[str, Any] | None:
    desc: dict[str, Any] = {"class": _qualname(store)}
    for name in _STORE_NAMES:
        value = getattr(store, name, None)
        if isinstance(value, str):
            desc[name] = value
    if isinstance(index_id, str):
        desc["index"] = index_id  # a uuid minted when the index was built
    return desc if len(desc) > 1 else None


def data_identity(r: Any) -> dict[str, Any] | None:
    """What a retriever searches, by content or name; None when nothing identifies it."""
    attrs = vars(r)
    if "_index" in attrs:
        return _index_identity(attrs["_index"])
    if attrs.get("_vector_store") is not None:
        return _store_identity(attrs["_vector_store"])
    inner = attrs.get("_retrievers")
    if isinstance(inner, list | tuple) and inner:
        parts = [data_identity(x) for x in inner]
        return None if any(p is None for p in parts) else {"retrievers": parts}
    if isinstance(attrs.get("_retriever"), BaseRetriever):
        return data_identity(attrs["_retriever"])
    return None


def _identifiable(r: Any) -> bool:
    try:
        return data_identity(r) is not None
    except Exception:  # e.g. a docstore that cannot list: every lookup says so, as a miss
        return True


def retriever_config(r: Any) -> dict[str, Any]:
    """Class and knobs of a retriever and the models it uses (raises Uncacheable if not exact)."""
    attrs = vars(r)
    cfg: dict[str, Any] = {"class": _qualname(r)}
    for name in _CONFIG_ATTRS:
        if name in attrs:
            cfg[name] = jsonable(attrs[name])
    node_ids = attrs.get("_node_ids")
    if node_ids:
        cfg["_node_ids"] = digest(sorted(str(n) for n in node_ids))
    embed = attrs.get("_embed_model")
    if embed is not None:
        cfg["embed"] = embedding_identity(getattr(embed, "inner", embed))
    llm = attrs.get("_llm")  # query generation (fusion retrievers) changes what is searched
    if llm is not None:
        cfg["llm"] = llm_identity(getattr(llm, "inner", llm))
    inner = attrs.get("_retrievers")
    if isinstance(inner, list | tuple):
        cfg["retrievers"] = [retriever_config(x) for x in inner]
    if isinstance(attrs.get("_retriever"), BaseRetriever):
        cfg["retriever"] = retriever_config(attrs["_retriever"])
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
    :param version: part of every key; a string, or a callable returning one (e.g. the
        external store's last write time). Change it when the data changes in a way the key
        cannot see (a vector store that keeps its own nodes). Required, as is ``retriever_id``,
        when nothing else identifies the data (an unnamed store without an index, a custom
        retriever).
    :param retriever_id: a stable name replacing the automatic identity of the retriever and
        its data (the user then owns bumping ``version`` when the data changes).
    :param tenant: who may share results (as :class:`CachedLLM`'s): a string or a
        zero-argument callable evaluated per call; None (default) is the no-tenant partition.
        Results can hold nodes a tenant may not see (per-user filters in the inner
        retriever), so they are never served across tenants.
    :raises ConfigurationError: when the retriever's data has no identity and neither
        ``version`` nor ``retriever_id`` is given.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        cache: TieredCache | None = None,
        *,
        ttl: float | str | None = None,
        namespace: str | None = None,
        version: str | Callable[[], str] | None = None,
        retriever_id: str | None = None,
        tenant: Tenant = None,
    ) -> None:
        check_tenant(tenant)
        super().__init__(callback_manager=retriever.callback_manager)
        if version is None and retriever_id is None and not _identifiable(retriever):
            raise ConfigurationError(
                f"CachedRetriever cannot tell what {type(retriever).__name__} searches (no "
                "index LlamaIndex holds, no named vector store), so it could serve another "
                "store's results: pass version= (bumped when the data changes) or retriever_id="
            )
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.retriever = retriever
        self.cache = kind_namespace(base, "li-ret", namespace)
        self.ttl = ttl
        self.version = version
        self.retriever_id = retriever_id
        self.tenant = tenant
        self._stats = AdapterStats("llamaindex.CachedRetriever")

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, qb: QueryBundle) -> str | None:
        try:
            ident: Any = self.retriever_id or {
                "config": retriever_config(self.retriever),
                "data": data_identity(self.retriever),
            }
            version = self.version() if callable(self.version) else self.version
            key = "r:" + digest({"r": ident, "v": version, "q": _bundle(qb)})
        except Exception as exc:
            self._stats.problem("uncacheable", "retrieval not cached: %s", exc)
            return None
        return tenant_scoped_key(key, self.tenant, self._stats)

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
