"""Storage tiers. ``DiskTier`` and ``RedisTier`` are imported on first use, so that
``import stratacache`` never loads diskcache's SQLite machinery or redis-py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratacache.tiers.base import META_PREFIX, MISS, LeaseSupport, Miss, SetEntry, Tier, TierBusy
from stratacache.tiers.memory import MemoryTier

if TYPE_CHECKING:
    from stratacache.tiers.disk import DiskTier
    from stratacache.tiers.redis import RedisTier

__all__ = [
    "META_PREFIX",
    "MISS",
    "DiskTier",
    "LeaseSupport",
    "MemoryTier",
    "Miss",
    "RedisTier",
    "SetEntry",
    "Tier",
    "TierBusy",
]


def __getattr__(name: str) -> Any:
    if name == "DiskTier":
        from stratacache.tiers.disk import DiskTier

        return DiskTier
    if name == "RedisTier":
        from stratacache.tiers.redis import RedisTier

        return RedisTier
    raise AttributeError(f"module 'stratacache.tiers' has no attribute {name!r}")
