"""``CachedEmbedding``: a ``BaseEmbedding`` that embeds only texts it has never seen.

Why not LlamaIndex's own ``embeddings_cache``: it keys by raw text alone (two models, or a
model's query and passage modes, share entries), has no TTL, looks texts up one by one and
takes a rate-limit slot even when a whole batch is cached. Here each entry is keyed by the
model's identity, the mode (query/text) and the text's hash; a batch is one ``get_many``;
only the misses reach the model, through its public batch method, so its own rate limiter,
events and batching apply to real calls only.

Vectors are stored as float32 bytes and decoded with ``array.frombytes``; an in-process memo
of decoded vectors, validated against the bytes the cache returned, makes a warm hit a dict
lookup. Results are float32-rounded on the cold call too, so cold and warm calls agree.

The same logic (:class:`EmbeddingCacher`) serves the wrapper and the in-place patch used by
``install(in_place=True)``; sync and async differ only in their I/O calls.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr, SerializeAsAny

from stratacache._stats import GLOBAL_SAVINGS
from stratacache.errors import ConfigurationError
from stratacache.integrations._cacheable import declared_dimensions
from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.integrations._vectors import EmbeddingPlan, KeyBook, TextKeys, VectorMemo
from stratacache.integrations.llamaindex._keys import Uncacheable, embedding_identity
from stratacache.integrations.llamaindex.events import CacheHitEvent, CacheMissEvent, emit
from stratacache.integrations.llamaindex.ratelimit import metered, settle
from stratacache.tiered import TieredCache

__all__ = ["CachedEmbedding", "EmbeddingCacher", "count_tokens"]

_tokenizer: Callable[[str], Any] | None = None


def count_tokens(texts: Sequence[str]) -> int:
    """Tokens in ``texts`` by LlamaIndex's bundled tokenizer (offline), else ~4 chars/token."""
    global _tokenizer
    try:
        if _tokenizer is None:
            from llama_index.core.utils import get_tokenizer

            _tokenizer = get_tokenizer()
        return sum(len(_tokenizer(t)) for t in texts)
    except Exception:
        return sum(len(t) // 4 + 1 for t in texts)


class EmbeddingCacher:
    """Per-text embedding cache logic, independent of how the model is reached."""

    def __init__(
        self,
        cache: TieredCache,
        model_id: str,
        *,
        ttl: float | str | None,
        batch_size: int,
        memo_bytes: int,
        cache_queries: bool,
        dim: int | None = None,
    ) -> None:
        self.cache = cache
        self.model_id = model_id
        #: The vector length the model declares (``dimensions=``): other lengths are not stored.
        self.dim = dim
        self.ttl = ttl
        self.batch_size = max(1, batch_size)
        self.cache_queries = cache_queries
        self.stats = AdapterStats("llamaindex.CachedEmbedding")
        self._memo = VectorMemo(memo_bytes)
        self._text_keys = KeyBook()

    # -- planning (pure) ----------------------------------------------------------------------

    def _keys(self, mode: str) -> TextKeys:
        return self._text_keys.get(self.model_id, mode)

    def _key(self, text: str, mode: str) -> str:
        return self._keys(mode).key(text)

    def plan(self, texts: Sequence[str], mode: str) -> EmbeddingPlan:
        return EmbeddingPlan(self._keys(mode).keys(texts))

    def absorb(
        self, plan: EmbeddingPlan, texts: Sequence[str], found: dict[str, Any], method: str
    ) -> list[list[tuple[str, str]]]:
        """Decode hits; return the unique misses in caller order, in model-sized chunks."""
        bad = self._memo.absorb(plan, texts, found)
        if bad:
            self.stats.problem("bad_entries", "%d unusable cached vectors ignored", bad)
        hits, misses = len(plan.keys) - len(plan.missing), len(plan.missing)
        self.stats.count("hits", hits)
        self.stats.count("misses", misses)
        GLOBAL_SAVINGS.record_embeddings("llamaindex", hits, misses)
        if hits:
            emit(CacheHitEvent, kind="embedding", method=method, count=hits)
        if misses:
            emit(CacheMissEvent, kind="embedding", method=method, count=misses)
        pairs = list(plan.missing.items())
        size = self.batch_size
        return [pairs[i : i + size] for i in range(0, len(pairs), size)]

    def take(
        self, plan: EmbeddingPlan, pairs: list[tuple[str, str]], vectors: Any
    ) -> dict[str, bytes]:
        """Record fresh vectors; return the entries worth storing."""
        store, skipped = self._memo.take(plan, pairs, vectors, "the embedding model", self.dim)
        for _ in range(skipped):
            self.stats.problem(
                "skipped_writes", "an empty, non-finite or wrong-length vector was not cached"
            )
        return store

    # -- I/O ----------------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        mode: str,
        model: Any,
        call: Callable[[list[str]], list[Embedding]],
    ) -> list[list[float]]:
        plan = self.plan(texts, mode)
        found = self.cache.get_many(plan.keys) if texts else {}
        for chunk in self.absorb(plan, texts, found, f"{mode}_embeddings"):
            chunk_texts = [t for _, t in chunk]
            with metered(model, functools.partial(count_tokens, chunk_texts)) as scope:
                vectors = call(chunk_texts)
            settle(scope, count_tokens(chunk_texts) if scope is not None else None)
            store = self.take(plan, chunk, vectors)
            if store:
                self.cache.set_many(store, ttl=self.ttl)
        return plan.result()

    async def aembed(
        self,
        texts: Sequence[str],
        mode: str,
        model: Any,
        call: Callable[[list[str]], Awaitable[list[Embedding]]],
    ) -> list[list[float]]:
        plan = self.plan(texts, mode)
        found = await self.cache.aget_many(plan.keys) if texts else {}

        async def one(chunk: list[tuple[str, str]]) -> None:
            chunk_texts = [t for _, t in chunk]
            with metered(model, lambda: count_tokens(chunk_texts)) as scope:
                vectors = await call(chunk_texts)
            settle(scope, count_tokens(chunk_texts) if scope is not None else None)
            store = self.take(plan, chunk, vectors)
            if store:
                await self.cache.aset_many(store, ttl=self.ttl)

        chunks = self.absorb(plan, texts, found, f"a{mode}_embeddings")
        if len(chunks) == 1:
            await one(chunks[0])
        elif chunks:
            await asyncio.gather(*(one(c) for c in chunks))
        return plan.result()


def _cacher(
    model: BaseEmbedding,
    cache: TieredCache | None,
    namespace: str | None,
    model_id: str | None,
    ttl: float | str | None,
    memo_bytes: int,
    cache_queries: bool,
) -> EmbeddingCacher:
    base = cache if cache is not None else default_cache()
    if not isinstance(base, TieredCache):
        raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
    if model_id is None:
        try:
            model_id = embedding_identity(model)
        except Uncacheable as exc:
            raise ConfigurationError(
                f"cannot key {type(model).__name__}'s vectors by its configuration ({exc}); "
                "pass model_id= naming the model and its settings"
            ) from exc
    return EmbeddingCacher(
        kind_namespace(base, "li-emb", namespace),
        model_id,
        ttl=ttl,
        batch_size=model.embed_batch_size,
        memo_bytes=memo_bytes,
        cache_queries=cache_queries,
        dim=declared_dimensions(model),
    )


class CachedEmbedding(BaseEmbedding):
    """Wrap any LlamaIndex embedding model; usable as ``Settings.embed_model``, in
    ``VectorStoreIndex`` and as an ``IngestionPipeline`` transformation.

    :param embed_model: the model to wrap (positional).
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``li-emb`` (or ``<cache namespace>.li-emb``).
    :param model_id: override the automatic model identity keys are scoped by.
    :param ttl: lifetime of new entries.
    :param cache_queries: also cache query embeddings (kept apart from text embeddings).
    :param memo_bytes: budget of the in-process memo of decoded vectors (0 disables it).
    """

    inner: SerializeAsAny[BaseEmbedding]
    _cacher: EmbeddingCacher = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        model_id: str | None = None,
        ttl: float | str | None = None,
        cache_queries: bool = True,
        memo_bytes: int = 64 * 1024**2,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model_name", embed_model.model_name)
        # Lookups are batched wider than the model's requests: a warm batch is one get_many
        # instead of one per 10 texts. Misses still reach the model in its own batch size.
        kwargs.setdefault("embed_batch_size", max(embed_model.embed_batch_size, 256))
        kwargs.setdefault("num_workers", embed_model.num_workers)
        kwargs.setdefault("callback_manager", embed_model.callback_manager)
        super().__init__(inner=embed_model, **kwargs)  # type: ignore[call-arg]
        self._cacher = _cacher(
            embed_model, cache, namespace, model_id, ttl, memo_bytes, cache_queries
        )

    @classmethod
    def class_name(cls) -> str:
        return "CachedEmbedding"

    def stats(self) -> dict[str, Any]:
        return {**self._cacher.stats.snapshot(), "cache": self._cacher.cache.stats()}

    def clear(self) -> None:
        """Drop every cached vector of this wrapper's namespace (O(1))."""
        self._cacher.cache.clear()

    # Misses go through the inner model's *public* methods: its rate limiter, events and
    # own batching then apply to real calls only.

    def _get_query_embedding(self, query: str) -> Embedding:
        if not self._cacher.cache_queries:
            return self.inner.get_query_embedding(query)
        return self._cacher.embed(
            [query], "q", self.inner, lambda ts: [self.inner.get_query_embedding(ts[0])]
        )[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        if not self._cacher.cache_queries:
            return await self.inner.aget_query_embedding(query)

        async def call(ts: list[str]) -> list[Embedding]:
            return [await self.inner.aget_query_embedding(ts[0])]

        return (await self._cacher.aembed([query], "q", self.inner, call))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._cacher.embed(texts, "t", self.inner, self.inner.get_text_embedding_batch)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._cacher.aembed(
            texts, "t", self.inner, self.inner.aget_text_embedding_batch
        )


# -- in-place mode ----------------------------------------------------------------------------

_PATCHED = "__stratacache_embedding__"
_EMBED_METHODS = (
    "_get_query_embedding", "_aget_query_embedding", "_get_text_embedding",
    "_aget_text_embedding", "_get_text_embeddings", "_aget_text_embeddings",
)  # fmt: skip


def patch_embedding(
    model: BaseEmbedding,
    cache: TieredCache | None = None,
    *,
    namespace: str | None = None,
    model_id: str | None = None,
    ttl: float | str | None = None,
    memo_bytes: int = 64 * 1024**2,
) -> BaseEmbedding:
    """Cache an existing model object in place (reaches indexes and engines built earlier).

    Instance attributes shadow the class's private embedding methods; the public methods (and
    thus events) are untouched. LlamaIndex acquires the model's rate limiter in the public
    batch method *before* these run, so in this mode cached batches still take a slot.
    """
    if _PATCHED in vars(model):
        return model
    cacher = _cacher(model, cache, namespace, model_id, ttl, memo_bytes, True)
    cls = type(model)
    orig = {name: getattr(cls, name).__get__(model) for name in _EMBED_METHODS}

    def get_q(query: str) -> Embedding:
        return cacher.embed([query], "q", None, lambda ts: [orig["_get_query_embedding"](ts[0])])[0]

    async def aget_q(query: str) -> Embedding:
        async def call(ts: list[str]) -> list[Embedding]:
            return [await orig["_aget_query_embedding"](ts[0])]

        return (await cacher.aembed([query], "q", None, call))[0]

    def get_ts(texts: list[str]) -> list[Embedding]:
        return cacher.embed(texts, "t", None, orig["_get_text_embeddings"])

    async def aget_ts(texts: list[str]) -> list[Embedding]:
        return await cacher.aembed(texts, "t", None, orig["_aget_text_embeddings"])

    def get_t(text: str) -> Embedding:
        return get_ts([text])[0]

    async def aget_t(text: str) -> Embedding:
        return (await aget_ts([text]))[0]

    patches = {
        "_get_query_embedding": get_q, "_aget_query_embedding": aget_q,
        "_get_text_embedding": get_t, "_aget_text_embedding": aget_t,
        "_get_text_embeddings": get_ts, "_aget_text_embeddings": aget_ts,
    }  # fmt: skip
    for name, fn in patches.items():
        object.__setattr__(model, name, fn)
    object.__setattr__(model, _PATCHED, cacher)
    return model


def unpatch_embedding(model: BaseEmbedding) -> None:
    """Undo :func:`patch_embedding` (a no-op for an unpatched model)."""
    state = vars(model)
    if state.pop(_PATCHED, None) is None:
        return
    for name in _EMBED_METHODS:
        state.pop(name, None)
