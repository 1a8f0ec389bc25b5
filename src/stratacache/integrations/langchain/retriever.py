"""``CachedRetriever``: a drop-in ``BaseRetriever`` that caches another retriever's results.

The key covers what decides the answer: the query, the inner retriever's class and plain
settings (``search_type``, ``search_kwargs`` with ``k`` and filters, the vector store's class
and collection/index names), the call kwargs, and a ``version`` tag. Bumping ``version`` (or
calling :meth:`CachedRetriever.invalidate`) after re-indexing stops old results at once.
Results that cannot be keyed (a callable filter) are passed through uncached, never guessed.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from typing import Any, Final

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
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
#: Stores that name no collection are identified by object, and only within this process:
#: two unnamed in-memory stores must never share results, here or in another process.
_PROCESS: Final = uuid.uuid4().hex
_SKIP_FIELDS: Final = frozenset({"callbacks", "tags", "metadata", "verbose", "vectorstore"})


def _describe(obj: Any) -> dict[str, Any]:
    """Class and plain settings of a retriever or vector store (raises for unkeyable values)."""
    cls = type(obj)
    out: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    for name in getattr(cls, "model_fields", {}):
        if name in _SKIP_FIELDS:
            continue
        value = getattr(obj, name, None)
        if isinstance(value, BaseRetriever):
            out[name] = _describe(value)
        elif value is None or isinstance(value, str | int | float | bool | list | dict | tuple):
            out[name] = value
    store = getattr(obj, "vectorstore", None)
    if store is not None:
        desc: dict[str, Any] = {"class": f"{type(store).__module__}.{type(store).__qualname__}"}
        for name in _STORE_ID_FIELDS:
            value = getattr(store, name, None)
            if isinstance(value, str | int):
                desc[name] = value
        if len(desc) == 1:
            desc["object"] = f"{_PROCESS}:{id(store)}"
        out["vectorstore"] = desc
    return out


class CachedRetriever(BaseRetriever):
    """Cache the documents any retriever returns.

    :param retriever: the retriever to wrap (positional).
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param ttl: lifetime of cached results (seconds or ``"1h"``).
    :param namespace: default ``lc-ret`` (or ``<cache namespace>.lc-ret``).
    :param retriever_id: a stable name for the inner retriever and its index, replacing the
        automatic identity (needed to share results across processes for vector stores that
        expose no collection/index name).
    :param version: part of every key; change it (a string, or a callable returning one, e.g.
        the index build time) when the underlying index changes.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BaseRetriever
    cache: Any = Field(default=None, exclude=True)
    ttl: float | str | None = None
    namespace: str | None = None
    version: str | Callable[[], str] = "0"
    retriever_id: str | None = None

    _store: TieredCache = PrivateAttr()
    _identity: str | None = PrivateAttr(default=None)
    _stats: AdapterStats = PrivateAttr(default_factory=lambda: AdapterStats("CachedRetriever"))

    def __init__(self, retriever: BaseRetriever | None = None, /, **kwargs: Any) -> None:
        if retriever is not None:
            kwargs["retriever"] = retriever
        super().__init__(**kwargs)
        base = self.cache if self.cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self._store = kind_namespace(base, "lc-ret", self.namespace)
        try:
            self._identity = self.retriever_id or digest(_describe(self.retriever))
        except Exception as exc:
            self._stats.problem(
                "unkeyable", "retriever %s cannot be keyed (%s); results are not cached",
                type(self.retriever).__name__, exc,
            )  # fmt: skip

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, query: str, kwargs: dict[str, Any]) -> str | None:
        if self._identity is None:
            return None
        version = self.version() if callable(self.version) else self.version
        try:
            return digest({"r": self._identity, "v": version, "q": query, "kw": kwargs})
        except Exception as exc:
            self._stats.problem("unkeyable", "call kwargs cannot be keyed (%s); not cached", exc)
            return None

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
