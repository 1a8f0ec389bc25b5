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
    # Encryption at rest wraps a tier; the same contract must hold through the wrapper.
    "encrypted-disk",
    pytest.param("encrypted-redis", marks=pytest.mark.redis),
]

#: One fixed key for the conformance runs (generated once, never a production key).
CONTRACT_KEY = "lJ0kUBeGMHAY1zlNAOeKdeWZ7n8Yy8nzcZc6E-4gR7w="


def build_tier(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Tier:
    if kind.startswith("encrypted-"):
        from stratacache.tiers.encrypted import EncryptedTier

        return EncryptedTier(build_tier(kind.removeprefix("encrypted-"), request, tmp_path),
                             CONTRACT_KEY)  # fmt: skip
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
    """The tiers other processes can see (disk, Redis, cluster, and both encrypted)."""
    built = build_tier(request.param, request, tmp_path)
    yield built
    built.close()
