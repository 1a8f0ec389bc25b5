"""The tier contract: a small byte store with TTL, sync methods and async twins.

Tiers store opaque bytes (already-encoded envelopes, see :mod:`stratacache.codec`); they do not
know about namespaces, generations or values. Policy (read-through, promotion, failure
handling) lives once in :class:`stratacache.TieredCache`, so a new tier is only the primitives.

A tier reports failure by raising; it never has to catch its own backend's exceptions, because
the tiered cache turns any exception from a tier into a counted miss and feeds its circuit
breaker. The async twins default to the sync code, which is right for local tiers whose
operations take microseconds; network tiers override them with a native async client.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from stratacache._config import parse_duration

__all__ = [
    "DATA_PREFIX",
    "META_PREFIX",
    "MISS",
    "LeaseSupport",
    "Miss",
    "SetEntry",
    "Tier",
    "TierBusy",
]


class Miss(enum.Enum):
    """Type of :data:`MISS`: a lookup found nothing (``None`` and ``b""`` are real values)."""

    MISS = "MISS"

    def __repr__(self) -> str:
        return "MISS"

    def __bool__(self) -> Literal[False]:
        return False


#: Returned by a lookup that found nothing.
MISS: Final = Miss.MISS

#: Keys with this prefix hold small bookkeeping records (namespace generations, leases) that a
#: tier must not evict for space: losing a generation would bring cleared entries back.
META_PREFIX: Final = "scmeta:"

#: Every entry key starts with this (``sc:<namespace>:<generation>:…``). Tiers that share a
#: keyspace with other applications (Redis) clear and sweep by this exact prefix, delimiter
#: included, so a foreign ``scores:…`` is never matched.
DATA_PREFIX: Final = "sc:"


class TierBusy(Exception):
    """Raised by a healthy tier whose capacity (connections, in-flight batches) stayed taken
    for longer than its timeout.

    The cache serves that call as a miss, counts it as ``busy`` and does **not** feed the
    circuit breaker: a burst of traffic is not an outage, and treating it as one switched the
    shared tier off exactly when the load made it most useful.
    """


#: ``(key, data, ttl_seconds_or_None)`` as written by :meth:`Tier.set_many`.
SetEntry = tuple[str, bytes, float | None]


class Tier(ABC):
    """One storage level of a :class:`~stratacache.TieredCache`."""

    #: Short kind name used in stats and logs ("memory", "disk", "redis").
    kind: str = "tier"
    #: True when other processes see what this tier stores (disk, Redis). Namespace generations
    #: and cross-process locks live in shared tiers only.
    shared: bool = False

    def __init__(self, *, ttl: float | None = None, name: str | None = None) -> None:
        #: Upper bound on how long this tier keeps an entry, whatever the write asked for.
        self.ttl = parse_duration(ttl, f"{self.kind} tier ttl")
        self.name = name or self.kind

    @abstractmethod
    def get(self, key: str) -> bytes | Miss:
        """Return the stored bytes, or :data:`MISS` when absent or expired."""

    @abstractmethod
    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data``; ``ttl`` is in seconds, ``None`` means no expiry."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abstractmethod
    def clear(self) -> None:
        """Remove everything this tier stores (an admin operation, never on the hot path)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the present keys only. Override when the backend has a batched read."""
        found: dict[str, bytes] = {}
        for key in keys:
            data = self.get(key)
            if not isinstance(data, Miss):
                found[key] = data
        return found

    def set_many(self, entries: Iterable[SetEntry]) -> None:
        """Store several entries. Override when the backend has a batched write."""
        for key, data, ttl in entries:
            self.set(key, data, ttl)

    def add(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        """Store ``data`` only if ``key`` is absent; True if it was stored.

        Creates namespace generations (a plain ``set`` could overwrite a generation that
        another process's ``clear()`` just wrote and bring cleared entries back) and claims
        slots of the semantic layer's journal. Shared tiers override this with an atomic
        backend operation; the default suits local tiers.
        """
        if isinstance(self.get(key), Miss):
            self.set(key, data, ttl)
            return True
        return False

    def scan(self, prefix: str) -> list[str]:
        """Every stored key that starts with ``prefix`` (an admin operation: ``clear`` sweeps
        a namespace's old generations, the CLI lists namespaces). Tiers that cannot list keys
        return ``[]``; their unreachable entries then leave by TTL or size eviction only."""
        return []

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several keys. Override when the backend has a batched delete."""
        for key in keys:
            self.delete(key)

    def size_bytes(self) -> int | None:
        """Bytes currently stored, when the tier can tell cheaply."""
        return None

    def load_stats(self) -> dict[str, int]:
        """Counters about contention that belong to the tier rather than to one cache (a
        tier can be shared by several caches): e.g. calls that waited for capacity."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most local tiers hold nothing
        """Release connections and files."""

    async def aget(self, key: str) -> bytes | Miss:
        return self.get(key)

    async def aset(self, key: str, data: bytes, ttl: float | None) -> None:
        self.set(key, data, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self.get_many(keys)

    async def aset_many(self, entries: Iterable[SetEntry]) -> None:
        self.set_many(entries)

    async def aadd(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        return self.add(key, data, ttl)

    async def ascan(self, prefix: str) -> list[str]:
        return self.scan(prefix)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        self.delete_many(keys)

    async def aclear(self) -> None:
        self.clear()

    async def aclose(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ttl={self.ttl}>"


class LeaseSupport(ABC):
    """A shared tier that can hold short leases: the cross-process half of single-flight."""

    @abstractmethod
    def acquire_lease(self, key: str, token: str, ttl: float) -> bool:
        """Atomically take ``key`` for ``ttl`` seconds if nobody holds it."""

    @abstractmethod
    def release_lease(self, key: str, token: str) -> None:
        """Give ``key`` back, only if ``token`` still holds it."""

    async def aacquire_lease(self, key: str, token: str, ttl: float) -> bool:
        return self.acquire_lease(key, token, ttl)

    async def arelease_lease(self, key: str, token: str) -> None:
        self.release_lease(key, token)
