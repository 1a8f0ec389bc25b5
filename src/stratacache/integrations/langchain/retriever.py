"""``CachedRetriever``: a drop-in ``BaseRetriever`` that caches another retriever's results.

The key covers what decides the answer: the query, the call kwargs, the ``version`` tag, and
the identity of the inner retriever, described by content and recomputed on every call: its
class and settings (``search_type``, ``search_kwargs`` with ``k`` and filters), and for a vector
store its class, embedding settings and either a fingerprint of its contents (stores LangChain
lets us read, such as ``InMemoryVectorStore``: writes through ``add_documents`` change keys at
once) or its collection/index name (external databases, whose writes cannot be seen: bump
``version`` or call :meth:`CachedRetriever.invalidate`). What cannot be described by content (an
unnamed store of another kind, a settings object, a callable filter) is never replaced by
object identity: unless ``retriever_id`` names the retriever, such calls pass through uncached.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from typing import Any, Final

import orjson
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from stratacache.integrations._shared import (
    AdapterStats,
    check_tenant,
    default_cache,
    kind_namespace,
    tenant_scoped_key,
)
from stratacache.integrations.langchain._serde import (
    Uncacheable,
    decode_documents,
    encode_documents,
)
from stratacache.keys import digest
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CachedRetriever"]

_STORE_ID_FIELDS: Final = (
    "collection_name", "index_name", "table_name", "namespace", "persist_directory",
    "_collection_name", "index_path",
)  # fmt: skip
#: Retriever fields that are LangChain plumbing (tracing, callbacks), not search settings.
_SKIP_FIELDS: Final = frozenset({"callbacks", "tags", "metadata", "verbose", "vectorstore"})
_PLAIN: Final = (str, int, float, bool, list, dict, tuple)


class _Unkeyable(ValueError):
    """The retriever cannot be identified by content."""


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _content(value: Any) -> Any:
    """A field value as content, or :class:`_Unkeyable` (never its identity or repr)."""
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, BaseRetriever):
        return _describe(value, named=False)
    if isinstance(value, BaseModel):
        return {"class": _class_name(value), "value": value.model_dump(mode="json")}
    raise _Unkeyable(f"a {type(value).__name__} setting")


def _settings(obj: Any) -> dict[str, Any]:
    """Plain, non-secret settings of an embedding model or similar (its identity in a store)."""
    out: dict[str, Any] = {"class": _class_name(obj)}
    fields = getattr(type(obj), "model_fields", None) or {}
    for name in fields or vars(obj):
        value = getattr(obj, name, None)
        if value is None or (isinstance(value, _PLAIN) and not isinstance(value, SecretStr)):
            out[name] = value
    return out


def _fingerprint(store: InMemoryVectorStore) -> str:
    """Digest of every stored id, vector, text and metadata: changes with any write."""
    data = orjson.dumps(store.store, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _store_part(store: Any, *, named: bool) -> dict[str, Any]:
    desc: dict[str, Any] = {"class": _class_name(store)}
    embedding = getattr(store, "embedding", None) or getattr(store, "embeddings", None)
    if embedding is not None:
        desc["embedding"] = _settings(embedding)
    if isinstance(store, InMemoryVectorStore):
        try:
            desc["content"] = _fingerprint(store)
        except TypeError as exc:
            raise _Unkeyable(f"store contents are not JSON ({exc})") from exc
        return desc
    for name in _STORE_ID_FIELDS:
        value = getattr(store, name, None)
        if isinstance(value, str | int):
            desc[name] = value
    if len(desc) == 1 + ("embedding" in desc) and not named:
        raise _Unkeyable(
            f"{type(store).__name__} exposes neither its contents nor a collection name; "
            "pass retriever_id= (and bump version= when it changes)"
        )
    return desc


def _describe(obj: Any, *, named: bool) -> dict[str, Any]:
    """Class and settings of a retriever, by content (raises :class:`_Unkeyable`).

    ``named``: the user gave a ``retriever_id``, so parts that have no content description
    are left out instead of making the retriever unkeyable.
    """
    out: dict[str, Any] = {"class": _class_name(obj)}
    for name in getattr(type(obj), "model_fields", {}):
        if name in _SKIP_FIELDS:
            continue
        try:
            out[name] = _content(getattr(obj, name, None))
        except _Unkeyable:
            if not named:
                raise
    store = getattr(obj, "vectorstore", None)
    if store is not None:
        out["vectorstore"] = _store_part(store, named=named)
    return out


class CachedRetriever(BaseRetriever):
    """Cache the documents any retriever returns.

    :param retriever: the retriever to wrap (positional).
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param ttl: lifetime of cached results (seconds or ``"1h"``).
    :param namespace: default ``lc-ret`` (or ``<cache namespace>.lc-ret``).
    :param retriever_id: a stable name for the inner retriever and its index. Required for
        retrievers that cannot be described by content (a vector store with neither readable
        contents nor a collection name, a retriever holding a chain or client object); without
        it their calls are not cached.
    :param version: part of every key; change it (a string, or a callable returning one, e.g.
        the index build time) when an index changes in a way the key cannot see (writes to an
        external vector database). Stores whose contents are readable need no version bump.
    :param tenant: who may share results (as ``LLMCache``'s): a ``str`` or a zero-argument
        callable evaluated per call; None (default) is the no-tenant partition. Results can
        hold documents a tenant may not see (per-user filters inside the inner retriever), so
        they are never served across tenants.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BaseRetriever
    cache: Any = Field(default=None, exclude=True)
    ttl: float | str | None = None
    namespace: str | None = None
    version: str | Callable[[], str] = "0"
    retriever_id: str | None = None
    tenant: Any = Field(default=None, exclude=True)

    _store: TieredCache = PrivateAttr()
    _stats: AdapterStats = PrivateAttr(default_factory=lambda: AdapterStats("CachedRetriever"))

    def __init__(self, retriever: BaseRetriever | None = None, /, **kwargs: Any) -> None:
        if retriever is not None:
            kwargs["retriever"] = retriever
        super().__init__(**kwargs)
        check_tenant(self.tenant)
        base = self.cache if self.cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self._store = kind_namespace(base, "lc-ret", self.namespace)

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, query: str, kwargs: dict[str, Any]) -> str | None:
        """Described afresh on every call: the store's contents and settings may change."""
        try:
            identity = _describe(self.retriever, named=self.retriever_id is not None)
            version = self.version() if callable(self.version) else self.version
            key = digest(
                {"id": self.retriever_id, "r": identity, "v": version, "q": query, "kw": kwargs}
            )
        except Exception as exc:
            self._stats.problem(
                "unkeyable", "%s cannot be keyed by content (%s); results are not cached",
                type(self.retriever).__name__, exc,
            )  # fmt: skip
            return None
        return tenant_scoped_key(key, self.tenant, self._stats)

    def _accept(self, raw: Any) -> tuple[list[Document] | None, bool]:
        if raw is MISS:
            self._stats.count("misses")
            return None, False
        try:
            docs = decode_documents(raw)
        except ValueError as exc:
            self._stats.problem("bad_entries", "unusable cache entry dropped (%s)", exc)
            return None, True
        self._stats.count("hits")
        return docs, False

    def _encode(self, docs: Any) -> dict[str, Any] | None:
        try:
            return encode_documents(docs)
        except Uncacheable as exc:
            self._stats.problem("skipped_writes", "result not cached: %s", exc)
            return None

    # -- BaseRetriever ------------------------------------------------------------------------

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        key = self._key(query, kwargs)
        if key is not None:
            docs, drop = self._accept(self._store.get(key, MISS))
            if docs is not None:
                return docs
            if drop:
                self._store.delete(key)
        result = self.retriever.invoke(
            query, RunnableConfig(callbacks=run_manager.get_child()), **kwargs
        )
        value = None if key is None else self._encode(result)
        if key is not None and value is not None:
            self._store.set(key, value, ttl=self.ttl)
        return result

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        key = self._key(query, kwargs)
        if key is not None:
            docs, drop = self._accept(await self._store.aget(key, MISS))
            if docs is not None:
                return docs
            if drop:
                await self._store.adelete(key)
        inner = type(self.retriever)
        if inner._aget_relevant_documents is BaseRetriever._aget_relevant_documents:
            # The default async path does not forward kwargs (k=...); run the sync path instead.
            sync_config = RunnableConfig(callbacks=run_manager.get_sync().get_child())
            call = functools.partial(self.retriever.invoke, query, sync_config, **kwargs)
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        else:
            config = RunnableConfig(callbacks=run_manager.get_child())
            result = await self.retriever.ainvoke(query, config, **kwargs)
        value = None if key is None else self._encode(result)
        if key is not None and value is not None:
            await self._store.aset(key, value, ttl=self.ttl)
        return result

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget every cached result of this retriever's namespace (O(1), all processes)."""
        self._store.clear()

    async def ainvalidate(self) -> None:
        await self._store.aclear()

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "cache": self._store.stats()}
