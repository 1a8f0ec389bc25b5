from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratacache.tiers import DiskTier, MemoryTier, RedisTier, Tier

TIER_KINDS = [
    "memory",
    "disk",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


def build_tier(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Tier:
    if kind == "memory":
        return MemoryTier(64 * 1024 * 1024)
    if kind == "disk":
        return DiskTier(tmp_path / "disk")
    if kind == "redis":
        return RedisTier(request.getfixturevalue("redis_url"))
    return RedisTier(request.getfixturevalue("cluster_url"))


@pytest.fixture(params=TIER_KINDS)
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tier]:
    """Every tier kind, for the one conformance suite that all tiers must pass."""
    built = build_tier(request.param, request, tmp_path)
    yield built
    built.close()


@pytest.fixture(params=TIER_KINDS[1:])
def shared_tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tier]:
    """The tiers other processes can see (disk, Redis, cluster)."""
    built = build_tier(request.param, request, tmp_path)
    yield built
    built.close()
