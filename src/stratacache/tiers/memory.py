"""In-process LRU tier bounded by bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from stratacache._config import check_size
from stratacache.tiers.base import MISS, Miss, SetEntry, Tier

__all__ = ["MemoryTier"]

#: Rough per-entry bookkeeping cost (dict slot, tuple, key object). Counting it keeps a cache
#: of millions of tiny entries from using several times its byte budget.
_ENTRY_OVERHEAD = 120
_NEVER = float("inf")


class MemoryTier(Tier):
    """Thread-safe LRU over bytes with per-entry TTL.

    Bounded by bytes rather than entry count because LLM entries range from a 1.5 KB embedding
    to a 100 KB completion: a count limit is either wasteful or unbounded in practice. Values
    are stored encoded, so a caller mutating what ``get`` returned can never corrupt the cache.
    """

    kind = "memory"

    def __init__(
        self,
        max_bytes: int = 256 * 1024 * 1024,
        *,
        ttl: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(ttl=ttl, name=name)
        self.max_bytes = check_size(max_bytes, "memory tier max_bytes")
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | Miss:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return MISS
            data, expires = entry
            if expires <= time.time():
                self._pop(key)
                return MISS
            self._data.move_to_end(key)
            return data

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        with self._lock:
            self._put(key, data, ttl)

    def add(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        """Atomic under the tier's lock: threads claiming journal slots never share one."""
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[1] > time.time():
                return False
            self._put(key, data, ttl)
            return key in self._data

    def _put(self, key: str, data: bytes, ttl: float | None) -> None:
        cost = len(data) + len(key) + _ENTRY_OVERHEAD
        expires = time.time() + ttl if ttl is not None else _NEVER
        self._pop(key)
        if cost > self.max_bytes:
            return  # would evict everything else and still not fit
        self._data[key] = (data, expires)
        self._bytes += cost
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._pop(oldest)

    def _pop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0]) + len(key) + _ENTRY_OVERHEAD

    def delete(self, key: str) -> None:
        with self._lock:
            self._pop(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        now = time.time()
        lookup, touch = self._data.get, self._data.move_to_end  # bound once: thousands of keys
        with self._lock:
            for key in keys:
                entry = lookup(key)
                if entry is None:
                    continue
                if entry[1] <= now:
                    self._pop(key)
                    continue
                touch(key)
                found[key] = entry[0]
        return found

    def set_many(self, entries: Iterable[SetEntry]) -> None:
        for key, data, ttl in entries:
            self.set(key, data, ttl)

    def scan(self, prefix: str) -> list[str]:
        with self._lock:
            return [key for key in self._data if key.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)
