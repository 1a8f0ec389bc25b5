"""``CachedEmbeddings``: a drop-in LangChain ``Embeddings`` with a per-text cache.

One entry per text, keyed by the model's identity and the text's hash, read with one
``get_many`` per call. Vectors are stored as float32 bytes (4 bytes a dimension, decoded with
``array.frombytes`` — no JSON float parsing), so a warm hit is a dict lookup and a memcpy.
Results are float32-rounded on the first call too, so cold and warm calls return identical
vectors (an index built cold and queried warm sees the same numbers).

Sync and async share the planning (``_plan`` / ``_finish``); only the I/O differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from langchain_core.embeddings import Embeddings

from stratacache._stats import GLOBAL_SAVINGS
from stratacache.integrations._cacheable import declared_dimensions
from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.integrations._vectors import (
    EmbeddingPlan,
    KeyBook,
    TextKeys,
    VectorMemo,
    is_plain,
)
from stratacache.keys import digest
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CachedEmbeddings", "model_identity"]

#: Field names that never change a vector: credentials, clients, retries, batching, progress.
_SKIP_WORDS: Final = (
    "key", "secret", "token", "password", "client", "header", "timeout", "retr", "proxy",
    "progress", "chunk_size", "batch", "concurrency", "callback", "http", "session",
)  # fmt: skip


def model_identity(model: Any) -> str:
    """A digest of what determines a model's vectors: its class and its plain-valued settings.

    Credentials, clients and batching knobs are skipped; secrets are never plain values anyway.
    Pass ``model_id=`` to :class:`CachedEmbeddings` when this heuristic is not enough.
    """
    cls = type(model)
    names = list(getattr(cls, "model_fields", {}) or vars(model))
    params = {}
    for name in names:
        if name.startswith("_") or any(w in name.lower() for w in _SKIP_WORDS):
            continue
        value = getattr(model, name, None)
        if is_plain(value):
            params[name] = value
    return digest({"class": f"{cls.__module__}.{cls.__qualname__}", "params": params})[:32]


class CachedEmbeddings(Embeddings):
    """Wrap any ``Embeddings``; only texts never seen before reach the model.

    :param underlying: the model to wrap (``OpenAIEmbeddings()``, ...).
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``lc-emb`` (or ``<cache namespace>.lc-emb``).
    :param model_id: override the model identity that keys are scoped by.
    :param ttl: lifetime of new entries.
    :param cache_queries: also cache ``embed_query`` (kept apart from documents, because some
        models embed queries differently).
    :param batch_size: send misses to the model in chunks of this size, storing each chunk as
        it arrives, so a long job that fails half-way keeps what it paid for.
    :param memo_bytes: budget of an in-process memo of decoded vectors (0 disables it).
        Turning 384 float32 into Python floats costs ~10-20 µs; copying a decoded list costs
        ~1 µs. The memo is checked against the bytes the cache returned, so TTL, ``clear()``
        and other processes' writes are honoured exactly as without it.
    """

    kind = "lc-emb"

    def __init__(
        self,
        underlying: Embeddings,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        model_id: str | None = None,
        ttl: float | str | None = None,
        cache_queries: bool = True,
        batch_size: int | None = None,
        memo_bytes: int = 64 * 1024**2,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        base = cache if cache is not None else default_cache()
        self.underlying = underlying
        self.cache = kind_namespace(base, self.kind, namespace)
        self.model_id = model_id or model_identity(underlying)
        self.ttl = ttl
        self.cache_queries = cache_queries
        self.batch_size = batch_size
        self._stats = AdapterStats("CachedEmbeddings")
        self._memo = VectorMemo(memo_bytes)
        self._text_keys = KeyBook()

    def __repr__(self) -> str:
        return f"<CachedEmbeddings {type(self.underlying).__name__} model_id={self.model_id}>"

    # -- shared logic -------------------------------------------------------------------------

    def _keys(self, kind: str) -> TextKeys:
        return self._text_keys.get(self.model_id, kind)

    def _key(self, text: str, kind: str) -> str:
        return self._keys(kind).key(text)

    def _plan(self, texts: Sequence[str], kind: str = "d") -> EmbeddingPlan:
        return EmbeddingPlan(self._keys(kind).keys(texts))

    def _absorb(
        self, plan: EmbeddingPlan, texts: Sequence[str], found: dict[str, Any]
    ) -> list[tuple[str, str]]:
        """Decode hits; return the unique missing ``(key, text)`` pairs in caller order."""
        bad = self._memo.absorb(plan, texts, found)
        if bad:
            self._stats.problem("bad_entries", "%d unusable cached vectors ignored", bad)
        hits, misses = len(plan.keys) - len(plan.missing), len(plan.missing)
        self._stats.count("hits", hits)
        self._stats.count("misses", misses)
        GLOBAL_SAVINGS.record_embeddings("langchain", hits, misses)
        return list(plan.missing.items())

    def _chunks(self, pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        size = self.batch_size or len(pairs) or 1
        return [pairs[i : i + size] for i in range(0, len(pairs), size)]

    def _take(
        self, plan: EmbeddingPlan, pairs: list[tuple[str, str]], vectors: Any
    ) -> dict[str, bytes]:
        """Record fresh vectors; return the entries to store (bad vectors are not stored)."""
        store, skipped = self._memo.take(
            plan, pairs, vectors, type(self.underlying).__name__,
            declared_dimensions(self.underlying),
        )  # fmt: skip
        for _ in range(skipped):
            self._stats.problem(
                "skipped_writes", "an empty, non-finite or wrong-length vector was not cached"
            )
        return store

    # -- Embeddings ---------------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        plan = self._plan(texts)
        missing = self._absorb(plan, texts, self.cache.get_many(plan.keys) if texts else {})
        for chunk in self._chunks(missing) if missing else ():
            texts_ = [t for _, t in chunk]
            store = self._take(plan, chunk, self.underlying.embed_documents(texts_))
            if store:
                self.cache.set_many(store, ttl=self.ttl)
        return plan.result()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        plan = self._plan(texts)
        found = await self.cache.aget_many(plan.keys) if texts else {}
        missing = self._absorb(plan, texts, found)
        for chunk in self._chunks(missing) if missing else ():
            texts_ = [t for _, t in chunk]
            store = self._take(plan, chunk, await self.underlying.aembed_documents(texts_))
            if store:
                await self.cache.aset_many(store, ttl=self.ttl)
        return plan.result()

    def embed_query(self, text: str) -> list[float]:
        if not self.cache_queries:
            return self.underlying.embed_query(text)
        plan = self._plan([text], "q")
        raw = self.cache.get(plan.keys[0], MISS)
        missing = self._absorb(plan, [text], {} if raw is MISS else {plan.keys[0]: raw})
        if missing:
            store = self._take(plan, missing, [self.underlying.embed_query(text)])
            if store:
                self.cache.set_many(store, ttl=self.ttl)
        return plan.vectors[plan.keys[0]]

    async def aembed_query(self, text: str) -> list[float]:
        if not self.cache_queries:
            return await self.underlying.aembed_query(text)
        plan = self._plan([text], "q")
        raw = await self.cache.aget(plan.keys[0], MISS)
        missing = self._absorb(plan, [text], {} if raw is MISS else {plan.keys[0]: raw})
        if missing:
            store = self._take(plan, missing, [await self.underlying.aembed_query(text)])
            if store:
                await self.cache.aset_many(store, ttl=self.ttl)
        return plan.vectors[plan.keys[0]]

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
