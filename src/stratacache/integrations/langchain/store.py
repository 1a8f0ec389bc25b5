"""``ByteStore``: LangChain's ``BaseStore[str, bytes]`` over a :class:`~stratacache.TieredCache`.

It exists so that ``CacheBackedEmbeddings.from_bytes_store(emb, ByteStore(cache))`` (and
docstores of ``MultiVectorRetriever``) get multi-level storage with TTL by changing one line.

The core cache deliberately has no key listing (it never scans a keyspace), while
``BaseStore.yield_keys`` is part of the contract LangChain's own store suites check. So by
default the store keeps its key set in 16 index shards stored in the same cache; each write
updates the shards it touches. ``index_keys=False`` saves those writes for pure key-value use
(``CacheBackedEmbeddings`` never lists keys), at the price of ``yield_keys`` raising. The
index is best effort across processes (two processes writing the same shard at once can drop
each other's new keys), and keys whose entries expired are filtered out when listed.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

from langchain_core.stores import BaseStore

from stratacache.integrations._shared import default_cache, kind_namespace
from stratacache.tiered import TieredCache

__all__ = ["ByteStore"]

_SHARDS: Final = 16


def _shard(key: str) -> str:
    return f"i:{hashlib.blake2b(key.encode(), digest_size=2).digest()[0] % _SHARDS}"


class ByteStore(BaseStore[str, bytes]):
    """A LangChain byte store backed by stratacache tiers.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``lc-store`` (or ``<cache namespace>.lc-store``).
    :param ttl: lifetime of stored values.
    :param index_keys: maintain a key index so :meth:`yield_keys` works (the default; see the
        module doc for when to turn it off).
    """

    kind = "lc-store"

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | str | None = None,
        index_keys: bool = True,
    ) -> None:
        base = cache if cache is not None else default_cache()
        self.cache = kind_namespace(base, self.kind, namespace)
        self.ttl = ttl
        self.index_keys = index_keys

    # -- shared logic -------------------------------------------------------------------------

    @staticmethod
    def _values(keys: Sequence[str], found: dict[str, Any]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            value = found.get("v:" + key)
            out.append(value if isinstance(value, bytes) else None)
        return out

    @staticmethod
    def _entries(pairs: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
        entries: dict[str, bytes] = {}
        for key, value in pairs:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"ByteStore values must be bytes, not {type(value).__name__}")
            entries["v:" + key] = bytes(value)
        return entries

    @staticmethod
    def _reindex(shards: dict[str, Any], keys: Sequence[str], *, add: bool) -> dict[str, list[str]]:
        touched: dict[str, set[str]] = {}
        for key in keys:
            name = _shard(key)
            if name not in touched:
                current = shards.get(name)
                touched[name] = set(current) if isinstance(current, list) else set()
            if add:
                touched[name].add(key)
            else:
                touched[name].discard(key)
        return {name: sorted(members) for name, members in touched.items()}

    def _no_index(self) -> NotImplementedError:
        return NotImplementedError(
            "ByteStore.yield_keys needs the key index, which this store was built without "
            "(index_keys=False): the cache tiers do not list keys (they never scan a keyspace)"
        )

    @staticmethod
    def _listed(shards: dict[str, Any], prefix: str | None) -> list[str]:
        keys = {k for v in shards.values() if isinstance(v, list) for k in v if isinstance(k, str)}
        return sorted(k for k in keys if prefix is None or k.startswith(prefix))

    # -- sync ---------------------------------------------------------------------------------

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._values(keys, self.cache.get_many(["v:" + k for k in keys]))

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        entries = self._entries(key_value_pairs)
        self.cache.set_many(entries, ttl=self.ttl)
        if self.index_keys and entries:
            keys = [k for k, _ in key_value_pairs]
            shards = self.cache.get_many({_shard(k) for k in keys})
            self.cache.set_many(self._reindex(shards, keys, add=True))

    def mdelete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.cache.delete("v:" + key)
        if self.index_keys and keys:
            shards = self.cache.get_many({_shard(k) for k in keys})
            self.cache.set_many(self._reindex(shards, keys, add=False))

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        if not self.index_keys:
            raise self._no_index()
        listed = self._listed(self.cache.get_many([f"i:{i}" for i in range(_SHARDS)]), prefix)
        for start in range(0, len(listed), 512):
            batch = listed[start : start + 512]
            present = self.cache.get_many(["v:" + k for k in batch])
            yield from (k for k in batch if "v:" + k in present)

    # -- async --------------------------------------------------------------------------------

    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._values(keys, await self.cache.aget_many(["v:" + k for k in keys]))

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        entries = self._entries(key_value_pairs)
        await self.cache.aset_many(entries, ttl=self.ttl)
        if self.index_keys and entries:
            keys = [k for k, _ in key_value_pairs]
            shards = await self.cache.aget_many({_shard(k) for k in keys})
            await self.cache.aset_many(self._reindex(shards, keys, add=True))

    async def amdelete(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.cache.adelete("v:" + key)
        if self.index_keys and keys:
            shards = await self.cache.aget_many({_shard(k) for k in keys})
            await self.cache.aset_many(self._reindex(shards, keys, add=False))

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        if not self.index_keys:
            raise self._no_index()
        shards = await self.cache.aget_many([f"i:{i}" for i in range(_SHARDS)])
        listed = self._listed(shards, prefix)
        for start in range(0, len(listed), 512):
            batch = listed[start : start + 512]
            present = await self.cache.aget_many(["v:" + k for k in batch])
            for key in batch:
                if "v:" + key in present:
                    yield key

    def clear(self) -> None:
        """Drop every value (and the index) of this store's namespace, in O(1)."""
        self.cache.clear()
