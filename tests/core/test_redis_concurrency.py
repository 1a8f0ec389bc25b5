"""Concurrency on the Redis tier: no spurious misses at any fan-out, call order, back-pressure.

Every key a test reads was written first, with a long TTL: any miss is spurious. Counts are
asserted, never times. Runs against a real redis-server and a real 3-node Redis Cluster.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import stratacache as sc
from stratacache.tiers import MISS, Miss, Tier, TierBusy
from stratacache.tiers import _pipeline as pl
from stratacache.tiers.redis import RedisTier

VALUE = "v" * 40


@pytest.fixture(params=["single", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url")


def _cache(url: str, **query: str) -> sc.TieredCache:
    extra = "&".join(f"{k}={v}" for k, v in query.items())
    return sc.TieredCache.from_urls(f"{url}?{extra}" if extra else url, namespace="conc")


def _tier_stats(cache: sc.TieredCache) -> dict[str, Any]:
    return cache.stats()["tiers"][0]  # type: ignore[no-any-return]


@pytest.fixture
def filled(url: str) -> Iterator[tuple[sc.TieredCache, list[str]]]:
    cache = _cache(url)
    keys = [f"key-{i}" for i in range(2000)]
    cache.set_many(dict.fromkeys(keys, VALUE), ttl=3600)
    yield cache, keys
    cache.close()


def test_2000_concurrent_aget_have_no_spurious_misses(
    filled: tuple[sc.TieredCache, list[str]],
) -> None:
    cache, keys = filled

    async def burst() -> list[Any]:
        return await asyncio.gather(*(cache.aget(k, MISS) for k in keys))

    for _ in range(3):
        assert asyncio.run(burst()) == [VALUE] * len(keys)
    stats = _tier_stats(cache)
    assert (stats["errors"], stats["busy"], stats["skipped"]) == (0, 0, 0)
    assert stats["hits"] == 3 * len(keys)
    # They shared round trips: without coalescing 2000 callers needed 2000 connections.
    assert stats["pipelines"] >= 3
    assert stats["pipelined_calls"] >= 3 * (len(keys) - 1)


def test_256_threads_have_no_spurious_misses(filled: tuple[sc.TieredCache, list[str]]) -> None:
    cache, keys = filled
    misses: list[str] = []
    start = threading.Barrier(256)

    def worker(n: int) -> None:
        start.wait()
        for j in range(16):
            key = keys[(n * 16 + j) % len(keys)]
            if cache.get(key, MISS) != VALUE:
                misses.append(key)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(256)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert misses == []
    stats = _tier_stats(cache)
    assert (stats["hits"], stats["errors"], stats["busy"], stats["skipped"]) == (4096, 0, 0, 0)
    assert stats["pipelines"] > 0


def test_mixed_concurrent_reads_and_writes(url: str) -> None:
    """Writes and reads of many callers in one burst: each caller sees its own write."""
    cache = _cache(url)

    async def caller(n: int) -> Any:
        await cache.aset(f"own-{n}", {"n": n}, ttl=3600)
        return await cache.aget(f"own-{n}", MISS)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(caller(n) for n in range(500)))

    assert asyncio.run(burst()) == [{"n": n} for n in range(500)]
    got = cache.get_many([f"own-{n}" for n in range(500)])
    assert got == {f"own-{n}": {"n": n} for n in range(500)}
    assert _tier_stats(cache)["errors"] == 0
    cache.close()


def test_writes_of_one_caller_land_in_call_order(url: str) -> None:
    """Fire-and-forget writes of one key, issued one after the other, land in that order.
    Before coalescing, two writes in flight on two pooled connections could land reversed."""
    tier = RedisTier(url)

    async def run() -> None:
        for round_ in range(100):
            tasks = []
            for n in range(5):
                tasks.append(asyncio.create_task(tier.aset("order", str(n).encode(), 60)))
                await asyncio.sleep(0)  # each write in its own tick, i.e. its own batch
            await asyncio.gather(*tasks)
            assert await tier.aget("order") == b"4", f"round {round_}"

    asyncio.run(run())
    tier.close()


def test_one_failing_key_fails_only_its_caller(url: str) -> None:
    """Per-key failure semantics survive coalescing: a lease release on a key that holds a
    foreign type fails (WRONGTYPE inside the script) for its caller only; the reads in the
    same pipeline get their values, and reading the foreign key is a plain miss."""
    import redis

    cache = _cache(url)
    keys = [f"k{n}" for n in range(50)]
    cache.set_many(dict.fromkeys(keys, VALUE), ttl=3600)
    tier = cache.tiers[0]
    assert isinstance(tier, RedisTier)
    if tier.cluster:
        host, port = url.removeprefix("redis+cluster://").split(",")[0].split(":")
        raw: Any = redis.RedisCluster(host=host, port=int(port))
    else:
        raw = redis.Redis.from_url(url)
    raw.rpush("foreign-list", "x")
    raw.close()

    async def burst() -> list[Any]:
        calls = [tier.aget(f"sc:conc:0:k:{k}") for k in keys]
        calls.insert(25, tier.arelease_lease("foreign-list", "token"))
        calls.insert(26, tier.aget("foreign-list"))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    assert isinstance(results.pop(25), redis.ResponseError)
    assert results.pop(25) is MISS
    assert all(isinstance(r, bytes) for r in results)
    assert tier.load_stats()["pipelines"] >= 1
    cache.close()


def test_cancelled_callers_do_not_stall_the_lane(url: str) -> None:
    cache = _cache(url)
    cache.set("present", VALUE, ttl=3600)

    async def run() -> list[Any]:
        tasks = [asyncio.create_task(cache.aget("present", MISS)) for _ in range(200)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return await asyncio.gather(*(cache.aget("present", MISS) for _ in range(200)))

    assert asyncio.run(run()) == [VALUE] * 200
    cache.close()


@pytest.mark.parametrize("mode", ["async", "threads"])
def test_pool_exhaustion_is_back_pressure_not_a_miss(url: str, mode: str) -> None:
    """Without coalescing and with only 2 connections, 200 callers wait their turn: no
    MaxConnectionsError, no error fed to the breaker, waits counted separately."""
    cache = _cache(url, pipeline="0", max_connections="2", timeout="5")
    keys = [f"p{n}" for n in range(200)]
    cache.set_many(dict.fromkeys(keys, VALUE), ttl=3600)
    if mode == "async":

        async def burst() -> list[Any]:
            return await asyncio.gather(*(cache.aget(k, MISS) for k in keys))

        results = asyncio.run(burst())
    else:
        results = [MISS] * len(keys)
        # All start together: threads started one by one on a loaded machine can each
        # finish before the next starts, and then nobody ever waits for a connection.
        start = threading.Barrier(len(keys))

        def worker(n: int) -> None:
            start.wait()
            results[n] = cache.get(keys[n], MISS)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(keys))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [VALUE] * len(keys)
    stats = _tier_stats(cache)
    assert (stats["errors"], stats["busy"], stats["breaker"]) == (0, 0, "closed")
    assert stats["waits"] > 0
    assert stats["pipelines"] == 0
    cache.close()


# -- the lane and the cache, without a server --------------------------------------------


def test_sync_lane_wait_is_bounded_and_raises_tierbusy() -> None:
    release = threading.Event()

    def send_one(op: pl.Op) -> Any:
        release.wait(10)
        return op.args[0]

    def send_many(ops: list[pl.Op]) -> None:
        for op in ops:
            op.value = op.args[0]

    lane = pl.SyncLane(send_one, send_many, slots=1, wait=0.2, stats=pl.LaneStats())
    holder = threading.Thread(target=lane.submit, args=(pl.Op(pl.GET, ("first",)),))
    holder.start()
    time.sleep(0.05)
    with pytest.raises(TierBusy):
        lane.submit(pl.Op(pl.GET, ("second",)))
    release.set()
    holder.join()
    # The slot came back: the lane works again.
    assert lane.submit(pl.Op(pl.GET, ("third",))) == "third"


class _BusyTier(Tier):
    """A tier that is healthy but always saturated."""

    kind = "busy"

    def get(self, key: str) -> bytes | Miss:
        raise TierBusy("saturated")

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        raise TierBusy("saturated")

    def delete(self, key: str) -> None:
        raise TierBusy("saturated")

    def clear(self) -> None:
        pass


def test_a_busy_tier_is_a_miss_that_never_opens_the_breaker() -> None:
    cache = sc.TieredCache([_BusyTier()], breaker_threshold=3)
    for n in range(20):
        assert cache.get(f"k{n}", MISS) is MISS
    stats = _tier_stats(cache)
    assert (stats["busy"], stats["errors"], stats["skipped"], stats["breaker"]) == (
        20,
        0,
        0,
        "closed",
    )


def test_pipeline_url_option_is_validated(redis_url: str) -> None:
    tier = sc.TieredCache.from_urls(f"{redis_url}?pipeline=off").tiers[0]
    assert isinstance(tier, RedisTier) and tier.pipeline is False
    with pytest.raises(sc.ConfigurationError, match="pipeline"):
        sc.TieredCache.from_urls(f"{redis_url}?pipeline=maybe")


def _read_in_child(tier: RedisTier, key: str, out: Any) -> None:
    try:
        out.put(tier.get(key))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put(repr(exc))


def test_a_forked_child_does_not_inherit_calls_in_flight(redis_url: str) -> None:
    """A child forked while parent threads hold every pipeline slot must not wait for threads
    that do not exist in it (they would never give their slots back)."""
    import multiprocessing

    tier = RedisTier(redis_url, timeout=0.3)
    tier.set("fork-key", b"value", 60)
    lane = tier._lane
    assert lane is not None
    taken, lane._free = lane._free, 0  # as if every slot were mid-call in another thread
    try:
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        child = context.Process(target=_read_in_child, args=(tier, "fork-key", out))
        child.start()
        assert out.get(timeout=10) == b"value"
        child.join(10)
        assert child.exitcode == 0
    finally:
        lane._free = taken
    tier.close()


def test_a_waiter_that_leaves_early_loses_neither_its_slot_nor_the_queue() -> None:
    """A thread interrupted while queued (KeyboardInterrupt) must not keep a slot it was
    handed, or the lane would shrink for good."""

    def send_one(op: pl.Op) -> Any:
        return op.args[0]

    lane = pl.SyncLane(send_one, lambda ops: None, slots=1, wait=1, stats=pl.LaneStats())
    lane._free = 0  # one call in flight elsewhere
    queued, handed = pl.Op(pl.GET, ("a",)), pl.Op(pl.GET, ("b",))
    for op in (handed, queued):
        op.event = threading.Event()
        lane._queue.append(op)
    lane._abandon(queued)  # left while still queued
    assert lane._queue == [handed]
    lane._release()  # the call in flight finished: its slot goes to the oldest waiter
    assert handed.event.is_set()
    lane._abandon(handed)  # ...which left before using it
    assert (lane._free, lane._queue) == (1, [])
    assert lane.submit(pl.Op(pl.GET, ("c",))) == "c"
