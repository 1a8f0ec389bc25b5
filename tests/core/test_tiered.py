"""TieredCache policy: read-through, promotion, write-through, TTLs, single-flight, clear."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.tiers import MISS, DiskTier, MemoryTier, RedisTier


@pytest.fixture
def two_level(tmp_path: Path) -> Iterator[sc.TieredCache]:
    cache = sc.TieredCache.from_urls(
        "memory://?max_bytes=8MB", f"disk://{tmp_path}/d", namespace="t"
    )
    yield cache
    cache.close()


def physical_key(cache: sc.TieredCache, key: str) -> str:
    return cache._drive(cache._pkey(key))


def test_values_round_trip(two_level: sc.TieredCache) -> None:
    values = {"dict": {"a": [1, 2.5, None, True]}, "bytes": b"\x00raw", "none": None, "str": "é"}
    for k, v in values.items():
        two_level.set(k, v)
    assert {k: two_level.get(k) for k in values} == values
    assert two_level.get("none", MISS) is None
    assert two_level.get("absent", MISS) is MISS
    assert two_level.get("absent") is None
    assert two_level.get("absent", "fallback") == "fallback"


def test_write_through_reaches_every_tier(two_level: sc.TieredCache) -> None:
    two_level.set("k", "v")
    pk = physical_key(two_level, "k")
    assert all(isinstance(t.get(pk), bytes) for t in two_level.tiers)


def test_hit_in_slow_tier_is_promoted_with_remaining_ttl(tmp_path: Path) -> None:
    writer = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    writer.set("k", {"v": 1}, ttl=100)
    memory = MemoryTier()
    reader = sc.TieredCache([memory, DiskTier(tmp_path / "d")], namespace="t")
    pk = physical_key(reader, "k")
    assert memory.get(pk) is MISS
    assert reader.get("k") == {"v": 1}
    assert isinstance(memory.get(pk), bytes)
    expires = memory._data[pk][1]
    assert 90 < expires - time.time() <= 100  # promoted with what it had left, not a fresh TTL
    stats = reader.stats()["tiers"]
    assert (stats[0]["misses"], stats[1]["hits"]) == (1, 1)
    reader.get("k")
    assert reader.stats()["tiers"][0]["hits"] == 1
    writer.close()
    reader.close()


def test_tier_ttl_caps_lifetime_and_slow_tier_refills(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls("memory://?ttl=150ms", f"disk://{tmp_path}/d", namespace="t")
    cache.set("k", "v")
    time.sleep(0.3)
    assert cache.get("k") == "v"
    tiers = cache.stats()["tiers"]
    assert tiers[0]["misses"] == 1
    assert tiers[1]["hits"] == 1
    cache.close()


def test_default_and_explicit_ttl(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d", ttl=0.15)
    cache.set("default", 1)
    cache.set("explicit", 2, ttl="1h")
    time.sleep(0.3)
    assert cache.get("default", MISS) is MISS
    assert cache.get("explicit") == 2
    with pytest.raises(sc.ConfigurationError, match="ttl"):
        cache.set("k", 1, ttl=-1)
    cache.close()


def test_get_many_set_many_with_partial_hits(tmp_path: Path) -> None:
    disk_only = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    disk_only.set_many({"a": 1, "b": [2]})
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d", namespace="t")
    cache.set("c", {"three": 3})
    assert cache.get_many(["a", "b", "c", "d", "a"]) == {"a": 1, "b": [2], "c": {"three": 3}}
    memory = cache.tiers[0]
    assert len(memory.get_many([physical_key(cache, k) for k in "abc"])) == 3  # promoted
    assert cache.get_many([]) == {}
    cache.close()
    disk_only.close()


def test_long_keys_are_hashed_without_collisions(two_level: sc.TieredCache) -> None:
    long_key = "x" * 5000
    two_level.set(long_key, "long")
    two_level.set("x" * 200, "exactly at the limit")
    assert two_level.get(long_key) == "long"
    assert len(physical_key(two_level, long_key)) < 100
    with pytest.raises(sc.SerializationError, match="keys must be str"):
        two_level.get(42)  # type: ignore[arg-type]


def test_unstorable_value_is_a_clear_error(two_level: sc.TieredCache) -> None:
    with pytest.raises(sc.SerializationError):
        two_level.set("k", {1, 2})
    assert two_level.get("k", MISS) is MISS


def test_delete_removes_from_every_tier(two_level: sc.TieredCache) -> None:
    two_level.set("k", 1)
    two_level.delete("k")
    pk = physical_key(two_level, "k")
    assert all(t.get(pk) is MISS for t in two_level.tiers)


def test_clear_is_scoped_to_one_namespace(two_level: sc.TieredCache) -> None:
    other = two_level.with_namespace("other")
    two_level.set("k", "mine")
    other.set("k", "theirs")
    two_level.clear()
    assert two_level.get("k", MISS) is MISS
    assert other.get("k") == "theirs"
    two_level.set("k", "again")
    assert two_level.get("k") == "again"
    two_level.clear(namespace="other")
    assert other.get("k", MISS) is MISS


def test_clear_reaches_other_processes_sharing_the_disk(tmp_path: Path) -> None:
    urls = ("memory://", f"disk://{tmp_path}/d")
    a = sc.TieredCache.from_urls(*urls, namespace="t", generation_refresh=0.1)
    b = sc.TieredCache.from_urls(*urls, namespace="t", generation_refresh=0.1)
    a.set("k", 1)
    assert b.get("k") == 1  # now also in b's memory tier
    a.clear()
    time.sleep(0.2)
    assert b.get("k", MISS) is MISS  # b's memory copy is unreachable after the refresh
    a.close()
    b.close()


@pytest.mark.redis
def test_clear_never_touches_foreign_redis_keys(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("someone-else", "keep me")
    cache = sc.TieredCache.from_urls(redis_url, namespace="t")
    cache.set("k", 1)
    cache.clear()
    assert cache.get("k", MISS) is MISS
    assert client.get("someone-else") == b"keep me"
    # The foreign key and our generation counter; the old generation's entry was swept.
    assert sorted(client.keys()) == [b"scmeta:t:gen", b"someone-else"]
    client.close()
    cache.close()


def test_get_or_set_single_flight_threads(two_level: sc.TieredCache) -> None:
    calls = 0
    gate = threading.Barrier(16)

    def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        return {"v": 7}

    results: list[object] = []

    def worker() -> None:
        gate.wait()
        results.append(two_level.get_or_set("hot", compute))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1
    assert results == [{"v": 7}] * 16
    assert two_level.get_or_set("hot", compute) == {"v": 7}
    assert calls == 1


def test_get_or_set_error_is_shared_and_not_cached(two_level: sc.TieredCache) -> None:
    def boom() -> int:
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError, match="provider down"):
        two_level.get_or_set("k", boom)
    assert two_level.get("k", MISS) is MISS
    assert two_level.get_or_set("k", lambda: 5) == 5


async def test_async_api(two_level: sc.TieredCache) -> None:
    await two_level.aset("a", 1)
    await two_level.aset_many({"b": 2, "c": b"3"})
    assert await two_level.aget("a") == 1
    assert await two_level.aget_many(["a", "b", "c", "z"]) == {"a": 1, "b": 2, "c": b"3"}
    await two_level.adelete("a")
    assert await two_level.aget("a", MISS) is MISS
    await two_level.aclear()
    assert await two_level.aget("b", MISS) is MISS


async def test_aget_or_set_single_flight_tasks(two_level: sc.TieredCache) -> None:
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "done"

    results = await asyncio.gather(*(two_level.aget_or_set("k", compute) for _ in range(20)))
    assert results == ["done"] * 20
    assert calls == 1
    assert await two_level.aget_or_set("sync-compute", lambda: 3) == 3


async def test_aget_or_set_leader_cancellation_does_not_cancel_waiters(
    two_level: sc.TieredCache,
) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "value"

    leader = asyncio.create_task(two_level.aget_or_set("k", slow))
    await started.wait()
    waiter = asyncio.create_task(two_level.aget_or_set("k", slow))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await waiter == "value"
    with pytest.raises(asyncio.CancelledError):
        await leader


@pytest.mark.redis
def test_redis_lease_makes_concurrent_caches_compute_once(redis_url: str) -> None:
    """Two caches that share only Redis (as two processes would) compute a key once."""
    caches = [sc.TieredCache.from_urls("memory://", redis_url, namespace="t") for _ in range(2)]
    calls = 0
    lock = threading.Lock()

    def compute() -> str:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.3)
        return "v"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.get_or_set("k", compute)))
        for c in caches
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["v", "v"]
    assert calls == 1
    for c in caches:
        c.close()


def test_context_managers(tmp_path: Path) -> None:
    with sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d") as cache:
        cache.set("k", 1)

    async def use() -> None:
        async with sc.TieredCache.from_urls("memory://") as acache:
            await acache.aset("k", 1)

    asyncio.run(use())


def test_stats_shape(two_level: sc.TieredCache) -> None:
    two_level.set("k", "v")
    two_level.get("k")
    two_level.get("missing")
    stats = two_level.stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    memory = stats["tiers"][0]
    assert memory["hits"] == 1
    assert memory["writes"] == 1
    assert memory["size_bytes"] > 0
    assert memory["read_p50_us"] is not None
    assert memory["read_p99_us"] >= memory["read_p50_us"]
    totals = sc.stats()
    assert totals["hits"] >= 1
    assert "tokens_saved" in totals


@pytest.mark.redis
@pytest.mark.cluster
def test_three_tiers_with_cluster(tmp_path: Path, cluster_url: str) -> None:
    cache = sc.TieredCache.from_urls(
        "memory://", f"disk://{tmp_path}/d", cluster_url, namespace="c"
    )
    assert isinstance(cache.tiers[2], RedisTier)
    assert cache.tiers[2].cluster
    cache.set_many({f"k{i}": i for i in range(100)})
    fresh = sc.TieredCache.from_urls(cluster_url, namespace="c")
    assert fresh.get_many([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
    cache.clear()
    time.sleep(1.1)  # generation_refresh
    assert fresh.get("k1", MISS) is MISS
    cache.close()
    fresh.close()


def test_pickles_by_configuration(tmp_path: Path) -> None:
    import pickle

    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d", namespace="t", ttl=60)
    cache.set("k", "shared through disk")
    view = cache.with_namespace("other")
    view.set("k", "in the other namespace")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone is not cache and clone.ttl == 60
    assert clone.get("k") == "shared through disk"
    assert pickle.loads(pickle.dumps(view)).get("k") == "in the other namespace"
    with pytest.raises(TypeError, match="from_urls"):
        pickle.dumps(sc.TieredCache([MemoryTier()]))
    clone.close()
    cache.close()


# -- the hit path (TieredCache._head) and the decode memo behind it ------------------------------


async def _read(cache: sc.TieredCache, key: str, use_async: bool) -> Any:
    return await cache.aget(key, MISS) if use_async else cache.get(key, MISS)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("shape", ["memory", "memory+disk"])
async def test_hit_path_honours_overwrite_delete_clear_and_ttl(
    tmp_path: Path, shape: str, use_async: bool
) -> None:
    urls = ["memory://"] if shape == "memory" else ["memory://", f"disk://{tmp_path}/d"]
    cache = sc.TieredCache.from_urls(*urls, namespace="t")
    for value in (b"bytes one", b"bytes two", {"json": 1}, b"bytes one"):
        cache.set("k", value)  # overwrite, including back to an earlier value
        for _ in range(3):  # repeated hits: the decode memo answers from the second one on
            assert await _read(cache, "k", use_async) == value
    cache.delete("k")
    assert await _read(cache, "k", use_async) is MISS
    cache.set("k", b"again")
    assert await _read(cache, "k", use_async) == b"again"
    cache.clear()
    assert await _read(cache, "k", use_async) is MISS
    cache.set("short", b"lived", ttl=0.15)
    assert await _read(cache, "short", use_async) == b"lived"
    await asyncio.sleep(0.3)
    assert await _read(cache, "short", use_async) is MISS
    cache.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_expired_envelope_in_the_fastest_tier_is_never_served(use_async: bool) -> None:
    """The tier's own clock says live, the envelope says expired: the envelope wins, and the
    entry is deleted (the decode memo has seen these very bytes before it expired)."""
    from stratacache.codec import encode

    memory = MemoryTier()
    cache = sc.TieredCache([memory], namespace="t")
    pk = physical_key(cache, "k")
    data = encode(b"soon stale", time.time() + 0.2)
    memory.set(pk, data, None)
    assert await _read(cache, "k", use_async) == b"soon stale"
    await asyncio.sleep(0.3)
    assert await _read(cache, "k", use_async) is MISS
    assert memory.get(pk) is MISS
    assert cache.stats()["misses"] == 1


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_corrupt_entry_in_the_fastest_tier_is_counted_once(
    tmp_path: Path, use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    memory = MemoryTier()
    cache = sc.TieredCache([memory, DiskTier(tmp_path / "d")], namespace="t")
    cache.set("k", {"good": True})
    pk = physical_key(cache, "k")
    memory.set(pk, b"SC garbage that fails the checksum", None)
    assert await _read(cache, "k", use_async) == {"good": True}  # from disk
    tiers = cache.stats()["tiers"]
    assert (tiers[0]["corrupt"], tiers[0]["hits"], tiers[1]["hits"]) == (1, 1, 1)
    assert caplog.text.count("unusable entry") == 1
    assert isinstance(memory.get(pk), bytes)  # deleted, then refilled by promotion
    assert await _read(cache, "k", use_async) == {"good": True}
    assert cache.stats()["tiers"][0]["corrupt"] == 1
    cache.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_hit_path_counts_each_tier_read_once(tmp_path: Path, use_async: bool) -> None:
    writer = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    writer.set("k", b"v")
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d", namespace="t")
    assert await _read(cache, "absent", use_async) is MISS
    assert await _read(cache, "k", use_async) == b"v"  # memory miss, disk hit, promoted
    assert await _read(cache, "k", use_async) == b"v"  # memory hit
    stats = cache.stats()
    tiers = stats["tiers"]
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert (tiers[0]["hits"], tiers[0]["misses"]) == (1, 2)
    assert (tiers[1]["hits"], tiers[1]["misses"]) == (1, 1)
    writer.close()
    cache.close()


def test_json_hits_are_fresh_objects(two_level: sc.TieredCache) -> None:
    two_level.set("k", {"list": [1, 2], "nested": {"a": "b"}})
    first = two_level.get("k")
    first["list"].append(3)
    first["nested"]["a"] = "changed"
    second = two_level.get("k")
    assert second == {"list": [1, 2], "nested": {"a": "b"}}
    assert second is not first and second["list"] is not first["list"]
    many = two_level.get_many(["k"])["k"]
    assert many == second and many is not second


def test_closed_cache_raises_on_the_hit_path(two_level: sc.TieredCache) -> None:
    two_level.set("k", 1)
    two_level.close()
    with pytest.raises(sc.CacheClosedError):
        two_level.get("k")


def test_batch_storage_keys_match_single_ones() -> None:
    from stratacache.tiered import TieredCache, _storage_keys

    keys = ["plain", "", "x" * 200, "x" * 201, "é", "nul\x00key", "\ud800lone", "k:" * 50]
    expected = ["p:" + TieredCache._storage_key(k) for k in keys]
    assert _storage_keys("p:", keys) == expected
    with pytest.raises(sc.SerializationError):
        _storage_keys("p:", ["ok", 42])  # type: ignore[list-item]


def test_hit_path_under_threads(tmp_path: Path) -> None:
    """Readers racing writers, deletes and clears only ever see a value that was written for
    that key (never another key's, never a torn one), and see the last write at the end."""
    cache = sc.TieredCache.from_urls("memory://?max_bytes=64KB", f"disk://{tmp_path}/d")
    keys = [f"k{i}" for i in range(20)]
    stop = threading.Event()
    bad: list[Any] = []

    def reader() -> None:
        while not stop.is_set():
            for key in keys:
                value = cache.get(key, MISS)
                if value is not MISS and not value.startswith(key.encode() + b"="):
                    bad.append((key, value))

    def writer(n: int) -> None:
        for round_ in range(60):
            for key in keys:
                cache.set(key, f"{key}={n}.{round_}".encode() * 20)
            if round_ % 20 == 7:
                cache.delete(keys[n])
            if n == 0 and round_ % 25 == 24:
                cache.clear()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert bad == []
    for key in keys:
        cache.set(key, b"final")
    assert all(cache.get(key) == b"final" for key in keys)
    cache.close()
