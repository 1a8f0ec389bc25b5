"""``KVStore``: a LlamaIndex ``BaseKVStore`` over a :class:`~stratacache.TieredCache`.

One class fills both native LlamaIndex cache slots: ``IngestionCache(cache=KVStore(...))``
and ``BaseEmbedding.embeddings_cache``. Differences from LlamaIndex's own stores that matter:

* it is always truthy: LlamaIndex tests ``if not self.embeddings_cache`` and would silently
  bypass an empty store that defines ``__len__``;
* entries have a TTL and live in the cache's tiers (memory, disk, Redis), under a key
  ``prefix`` you choose (e.g. a model name, since ``embeddings_cache`` keys by raw text only);
* it pickles (``IngestionPipeline(num_workers>1)`` sends it to worker processes) the way
  :class:`~stratacache.TieredCache` does, by configuration: a worker re-opens the same disk
  and Redis tiers with a fresh memory tier. A cache built from tier objects instead of
  ``from_urls``/``default`` cannot travel and says so when pickled.

The core never lists keys (it never scans a keyspace), so ``get_all`` is not supported;
``clear()`` drops the store's whole namespace in O(1).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.storage.kvstore.types import DEFAULT_COLLECTION, BaseKVStore

from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["KVStore"]


class KVStore(BaseKVStore):
    """``IngestionCache(cache=KVStore(cache))`` / ``embed_model.embeddings_cache = KVStore()``.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``li-kv`` (or ``<cache namespace>.li-kv``).
    :param ttl: lifetime of stored values (seconds or ``"1d"``).
    :param prefix: prepended to every key, e.g. to scope ``embeddings_cache`` to one model.
    """

    kind = "li-kv"

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | str | None = None,
        prefix: str = "",
    ) -> None:
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.cache = kind_namespace(base, self.kind, namespace)
        self.ttl = ttl
        self.prefix = prefix
        self._stats = AdapterStats("llamaindex.KVStore")

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<stratacache.llamaindex.KVStore namespace={self.cache.namespace!r}>"

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, key: str, collection: str) -> str:
        # Length-prefixed so no (collection, key) pair can collide with another.
        return f"{len(collection)}:{collection}:{self.prefix}{key}"

    def _value(self, raw: Any) -> dict[str, Any] | None:
        if raw is MISS:
            return None
        if isinstance(raw, dict):
            return raw
        self._stats.problem("bad_entries", "a non-dict entry was ignored")
        return None

    def _check(self, val: Any) -> dict[str, Any]:
        if not isinstance(val, dict):
            raise TypeError(f"KVStore values must be dicts, not {type(val).__name__}")
        return val

    # -- BaseKVStore, sync --------------------------------------------------------------------

    def put(self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION) -> None:
        self.cache.set(self._key(key, collection), self._check(val), ttl=self.ttl)

    def put_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = 1,
    ) -> None:
        entries = {self._key(k, collection): self._check(v) for k, v in kv_pairs}
        self.cache.set_many(entries, ttl=self.ttl)

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        return self._value(self.cache.get(self._key(key, collection), MISS))

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        raise NotImplementedError(
            "stratacache.llamaindex.KVStore cannot list keys (the cache tiers never scan a "
            "keyspace); use KVStore.clear() to drop everything"
        )

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        full = self._key(key, collection)
        existed = self.cache.get(full, MISS) is not MISS
        self.cache.delete(full)
        return existed

    def clear(self) -> None:
        """Drop every entry of this store's namespace (O(1), all collections)."""
        self.cache.clear()

    # -- BaseKVStore, async -------------------------------------------------------------------

    async def aput(
        self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION
    ) -> None:
        await self.cache.aset(self._key(key, collection), self._check(val), ttl=self.ttl)

    async def aput_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = 1,
    ) -> None:
        entries = {self._key(k, collection): self._check(v) for k, v in kv_pairs}
        await self.cache.aset_many(entries, ttl=self.ttl)

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        return self._value(await self.cache.aget(self._key(key, collection), MISS))

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        return self.get_all(collection)

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        full = self._key(key, collection)
        existed = await self.cache.aget(full, MISS) is not MISS
        await self.cache.adelete(full)
        return existed

    async def aclear(self) -> None:
        await self.cache.aclear()

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
