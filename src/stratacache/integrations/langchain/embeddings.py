"""``CachedEmbeddings``: a drop-in LangChain ``Embeddings`` with a per-text cache.

One entry per text, keyed by the model's identity and the text's hash, read with one
``get_many`` per call. Vectors are stored as float32 bytes (4 bytes a dimension, decoded with
``array.frombytes`` — no JSON float parsing), so a warm hit is a dict lookup and a memcpy.
Results are float32-rounded on the first call too, so cold and warm calls return identical
vectors (an index built cold and queried warm sees the same numbers).

Sync and async share the planning (``_plan`` / ``_finish``); only the I/O differs.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from typing import Any, Final

from langchain_core.embeddings import Embeddings

from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.integrations._vectors import EmbeddingPlan, is_plain, pack_vector, unpack_vector
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
        self.memo_bytes = memo_bytes
        self._memo: dict[str, tuple[bytes, list[float]]] = {}
        self._memo_used = 0

    def __repr__(self) -> str:
        return f"<CachedEmbeddings {type(self.underlying).__name__} model_id={self.model_id}>"

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, text: str, kind: str) -> str:
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return f"{self.model_id}:{kind}:{h}"

    def _plan(self, texts: Sequence[str], kind: str = "d") -> EmbeddingPlan:
        return EmbeddingPlan([self._key(t, kind) for t in texts])

    def _absorb(
        self, plan: EmbeddingPlan, texts: Sequence[str], found: dict[str, Any]
    ) -> list[tuple[str, str]]:
        """Decode hits; return the unique missing ``(key, text)`` pairs in caller order."""
        vectors = plan.vectors
        memo = self._memo
        bad = 0
        for key, data in found.items():
            known = memo.get(key)
            if known is not None and known[0] == data:
                vectors[key] = list(known[1])
                continue
            vec = unpack_vector(data)
            if vec is None:
                bad += 1
            else:
                vectors[key] = vec
                self._remember(key, data, vec)
        if bad:
            self._stats.problem("bad_entries", "%d unusable cached vectors ignored", bad)
        missing = plan.missing
        for key, text in zip(plan.keys, texts, strict=True):
            if key not in vectors and key not in missing:
                missing[key] = text
        self._stats.count("hits", len(plan.keys) - len(missing))
        self._stats.count("misses", len(missing))
        return list(missing.items())

    def _remember(self, key: str, data: bytes, vec: list[float]) -> None:
        if not self.memo_bytes:
            return
        cost = 32 * len(vec) + 200  # a Python float is 24 bytes plus its 8-byte slot
        if self._memo_used + cost > self.memo_bytes:
            self._memo.clear()
            self._memo_used = 0
        self._memo[key] = (data, list(vec))
        self._memo_used += cost

    def _chunks(self, pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        size = self.batch_size or len(pairs) or 1
        return [pairs[i : i + size] for i in range(0, len(pairs), size)]

    def _take(
        self, plan: EmbeddingPlan, pairs: list[tuple[str, str]], vectors: Any
    ) -> dict[str, bytes]:
        """Record fresh vectors; return the entries to store (bad vectors are not stored)."""
        if not isinstance(vectors, list) or len(vectors) != len(pairs):
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise ValueError(
                f"{type(self.underlying).__name__} returned {got} embeddings for {len(pairs)} texts"
            )
        store: dict[str, bytes] = {}
        for (key, _), vec in zip(pairs, vectors, strict=True):
            packed = pack_vector(vec)
            if packed is None:
                self._stats.problem(
                    "skipped_writes", "an empty or non-finite vector was not cached"
                )
                plan.vectors[key] = list(vec) if isinstance(vec, list | tuple) else vec
                continue
            store[key] = packed
            plan.vectors[key] = fresh = array("f", vec).tolist()
            self._remember(key, packed, fresh)
        return store

    @staticmethod
    def _result(plan: EmbeddingPlan) -> list[list[float]]:
        seen: set[str] = set()
        out = []
        for key in plan.keys:
            vec = plan.vectors[key]
            if key in seen:
                vec = list(vec)  # duplicates get their own list: callers may mutate results
            seen.add(key)
            out.append(vec)
        return out

    # -- Embeddings ---------------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        plan = self._plan(texts)
        missing = self._absorb(plan, texts, self.cache.get_many(plan.keys) if texts else {})
        for chunk in self._chunks(missing) if missing else ():
            texts_ = [t for _, t in chunk]
            store = self._take(plan, chunk, self.underlying.embed_documents(texts_))
            if store:
                self.cache.set_many(store, ttl=self.ttl)
        return self._result(plan)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        plan = self._plan(texts)
        found = await self.cache.aget_many(plan.keys) if texts else {}
        missing = self._absorb(plan, texts, found)
        for chunk in self._chunks(missing) if missing else ():
            texts_ = [t for _, t in chunk]
            store = self._take(plan, chunk, await self.underlying.aembed_documents(texts_))
            if store:
                await self.cache.aset_many(store, ttl=self.ttl)
        return self._result(plan)

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
