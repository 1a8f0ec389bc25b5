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
  ``from_urls``/``default`` cannot travel and says so when pickled;
* ``get_all`` works without scanning a keyspace (the tiers never do): each collection has a
  key index, sharded into small entries so that a put rewrites only 1/256 of it, updated on
  every put and delete. That is what ``IngestionCache.clear()`` and ``KVDocumentStore`` (the
  docstore behind ``IngestionPipeline``'s dedup and upsert strategies) need. The update is a
  read-modify-write: two processes writing one collection at the same time can lose an index
  update (never an entry), and a tier that evicts (a bounded memory tier alone) can evict the
  index; so give a docstore a tier that keeps it, and one writer. ``index_keys=False`` skips
  the index for write-heavy stores that never list (``get_all`` then raises
  ``NotImplementedError``).

``clear()`` drops the store's whole namespace in O(1).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any, Final

from llama_index.core.storage.kvstore.types import DEFAULT_COLLECTION, BaseKVStore

from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["KVStore"]

#: Index entries per collection: a write rewrites one of them (1/256 of the keys), a listing
#: reads them all in one ``get_many``.
_SHARDS: Final = 256


class KVStore(BaseKVStore):
    """``IngestionCache(cache=KVStore(cache))`` / ``embed_model.embeddings_cache = KVStore()``.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``li-kv`` (or ``<cache namespace>.li-kv``).
    :param ttl: lifetime of stored values (seconds or ``"1d"``).
    :param prefix: prepended to every key, e.g. to scope ``embeddings_cache`` to one model.
    :param index_keys: keep a key index per collection so that ``get_all`` works (default).
    """

    kind = "li-kv"

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | str | None = None,
        prefix: str = "",
        index_keys: bool = True,
    ) -> None:
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.cache = kind_namespace(base, self.kind, namespace)
        self.ttl = ttl
        self.prefix = prefix
        self.index_keys = index_keys
        self._stats = AdapterStats("llamaindex.KVStore")

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<stratacache.llamaindex.KVStore namespace={self.cache.namespace!r}>"

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, key: str, collection: str) -> str:
        # Length-prefixed so no (collection, key) pair can collide with another.
        return f"{len(collection)}:{collection}:{self.prefix}{key}"

    def _index_key(self, collection: str, shard: int) -> str:
        # Entry keys start with a digit, so this can never be a user key.
        return f"~index:{len(collection)}:{collection}:{shard}:{self.prefix}"

    def _index_keys(self, collection: str) -> list[str]:
        return [self._index_key(collection, shard) for shard in range(_SHARDS)]

    def _shards(
        self, collection: str, add: Iterable[str], remove: Iterable[str]
    ) -> dict[str, tuple[list[str], list[str]]]:
        """The index entries a write touches, each with the keys it adds and removes there."""
        out: dict[str, tuple[list[str], list[str]]] = {}
        for i, keys in enumerate((add, remove)):
            for key in keys:
                index = self._index_key(collection, zlib.crc32(key.encode()) % _SHARDS)
                out.setdefault(index, ([], []))[i].append(key)
        return out

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

    def _listed(self, raw: Any) -> list[str]:
        """The keys an index entry lists (an unusable entry lists none, and is counted)."""
        if raw is MISS:
            return []
        keys = raw.get("keys") if isinstance(raw, dict) else None
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            return keys
        self._stats.problem("bad_entries", "an unusable key index was ignored")
        return []

    def _reindexed(
        self, raw: Any, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> dict[str, Any] | None:
        """The index entry after a write, or None when it need not be written.

        Puts always rewrite it, also of known keys: the index's TTL must keep up with its
        newest entry.
        """
        added, before = set(add), self._listed(raw)
        after = (set(before) | added) - set(remove)
        if not added and raw is not MISS and after == set(before):
            return None
        return {"keys": sorted(after)}

    def _reindexed_all(
        self, shards: dict[str, tuple[list[str], list[str]]], found: dict[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (add, remove) in shards.items():
            new = self._reindexed(found.get(index, MISS), add, remove)
            if new is not None:
                out[index] = new
        return out

    def _all_listed(self, collection: str, found: dict[str, Any]) -> list[str]:
        return [
            k
            for index in self._index_keys(collection)
            for k in self._listed(found.get(index, MISS))
        ]

    def _entries(self, keys: list[str], collection: str, found: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for key in keys:
            value = self._value(found.get(self._key(key, collection), MISS))
            if value is not None:  # expired or evicted since it was listed
                out[key] = value
        return out

    def _no_index(self) -> NotImplementedError:
        return NotImplementedError(
            "this KVStore was built with index_keys=False, so it cannot list keys (the cache "
            "tiers never scan a keyspace); use KVStore.clear() to drop everything"
        )

    # -- BaseKVStore, sync --------------------------------------------------------------------

    def _reindex(
        self, collection: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        if self.index_keys:
            shards = self._shards(collection, add, remove)
            new = self._reindexed_all(shards, self.cache.get_many(shards))
            if new:
                self.cache.set_many(new, ttl=self.ttl)

    def put(self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION) -> None:
        self.put_all([(key, val)], collection)

    def put_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = 1,
    ) -> None:
        entries = {self._key(k, collection): self._check(v) for k, v in kv_pairs}
        self.cache.set_many(entries, ttl=self.ttl)
        self._reindex(collection, add=[k for k, _ in kv_pairs])

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        return self._value(self.cache.get(self._key(key, collection), MISS))

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        if not self.index_keys:
            raise self._no_index()
        keys = self._all_listed(collection, self.cache.get_many(self._index_keys(collection)))
        found = self.cache.get_many([self._key(k, collection) for k in keys]) if keys else {}
        return self._entries(keys, collection, found)

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        full = self._key(key, collection)
        existed = self.cache.get(full, MISS) is not MISS
        self.cache.delete(full)
        self._reindex(collection, remove=[key])
        return existed

    def clear(self) -> None:
        """Drop every entry of this store's namespace (O(1), all collections)."""
        self.cache.clear()

    # -- BaseKVStore, async -------------------------------------------------------------------

    async def _areindex(
        self, collection: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        if self.index_keys:
            shards = self._shards(collection, add, remove)
            new = self._reindexed_all(shards, await self.cache.aget_many(shards))
            if new:
                await self.cache.aset_many(new, ttl=self.ttl)

    async def aput(
        self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION
    ) -> None:
        await self.aput_all([(key, val)], collection)

    async def aput_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = 1,
    ) -> None:
        entries = {self._key(k, collection): self._check(v) for k, v in kv_pairs}
        await self.cache.aset_many(entries, ttl=self.ttl)
        await self._areindex(collection, add=[k for k, _ in kv_pairs])

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        return self._value(await self.cache.aget(self._key(key, collection), MISS))

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        if not self.index_keys:
            raise self._no_index()
        keys = self._all_listed(
            collection, await self.cache.aget_many(self._index_keys(collection))
        )
        full = [self._key(k, collection) for k in keys]
        found = await self.cache.aget_many(full) if keys else {}
        return self._entries(keys, collection, found)

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        full = self._key(key, collection)
        existed = await self.cache.aget(full, MISS) is not MISS
        await self.cache.adelete(full)
        await self._areindex(collection, remove=[key])
        return existed

    async def aclear(self) -> None:
        await self.cache.aclear()

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
