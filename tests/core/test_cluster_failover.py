"""Redis Cluster failover under load (#13 items 0 and 1), on a real 3-primary/3-replica cluster.

A primary is SIGKILLed while 8 threads (or 8 asyncio tasks) run ``get_or_set``; its replica
is promoted by the cluster itself. Callers must see no exception and no wrong value, and the
Redis tier must serve again within 2 s of the promotion (measured by polling the cluster).
A slot migrated between primaries mid-load exercises ASK and MOVED redirections; the shared
rate limiter must stay within its limit plus one burst across a failover of its own slot.

Every value is a function of its key, so a wrong value (a reply handed to the wrong caller,
a stale node answering for a slot it lost) is detected, never just a missing one. The cluster
is started once for the module; a test that kills a node leaves it to the next test's fixture
to restart it (it rejoins as a replica), so every test starts from 3 primaries + 3 replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.ratelimit import RateLimiter
from tests.redis_procs import RedisClusterProcesses, RedisProcess

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

KEYS = [f"key-{i}" for i in range(400)]
#: No call may take longer, outage or not (a lease left behind made calls wait a minute).
LONGEST_CALL = 10.0
#: The Redis tier serves again within this long after the cluster finished the promotion.
RECOVERY = 2.0
#: Polling granularity and scheduling noise on a loaded 2-core machine.
SLACK = 0.5


def value_of(key: str) -> dict[str, str]:
    return {"key": key, "check": hashlib.sha256(key.encode()).hexdigest()[:16]}


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    directory: Path = tmp_path_factory.mktemp("ha-cluster")
    cluster = RedisClusterProcesses(directory, replicas=1, node_timeout=1000).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(ha_cluster: RedisClusterProcesses) -> RedisClusterProcesses:
    """The module's cluster, whole again: a node killed by the previous test is restarted."""
    for node in ha_cluster.nodes:
        if node.proc is None:
            node.start()
    ha_cluster.wait_replicated()
    return ha_cluster


def tag_on(cluster: RedisClusterProcesses, node: RedisProcess) -> str:
    """A hash tag whose slot ``node`` serves: keys containing it live there."""
    for i in range(1000):
        if cluster.primary_of(f"{{t{i}}}") is node:
            return f"{{t{i}}}"
    raise AssertionError("no tag found")  # pragma: no cover - 1000 tries over 3 primaries


class Load:
    """8 workers calling get_or_set on random keys, recording exceptions and wrong values."""

    def __init__(self, cache: sc.TieredCache, kind: str, keys: list[str] = KEYS) -> None:
        self.cache = cache
        self.keys = keys
        self.errors: list[BaseException] = []
        self.wrong: list[tuple[str, Any]] = []
        self.calls = 0
        self.slowest = 0.0
        self.hung = False
        self._stop = threading.Event()
        if kind == "threads":
            self._threads = [threading.Thread(target=self._worker, args=(n,)) for n in range(8)]
        else:
            self._threads = [threading.Thread(target=asyncio.run, args=(self._tasks(),))]

    def _check(self, key: str, value: Any, started: float) -> None:
        self.calls += 1
        self.slowest = max(self.slowest, time.monotonic() - started)
        if value != value_of(key):
            self.wrong.append((key, value))

    def _worker(self, n: int) -> None:
        rng = random.Random(n)
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            started = time.monotonic()
            try:
                value = self.cache.get_or_set(key, lambda k=key: value_of(k))
            except BaseException as exc:
                self.errors.append(exc)
            else:
                self._check(key, value, started)

    async def _task(self, n: int) -> None:
        rng = random.Random(n)
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            started = time.monotonic()
            try:
                value = await self.cache.aget_or_set(key, lambda k=key: value_of(k))
            except BaseException as exc:
                self.errors.append(exc)
            else:
                self._check(key, value, started)
            await asyncio.sleep(0)

    async def _tasks(self) -> None:
        await asyncio.gather(*(self._task(n) for n in range(8)))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + LONGEST_CALL
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.hung = any(thread.is_alive() for thread in self._threads)


def redis_stats(cache: sc.TieredCache) -> dict[str, Any]:
    return cache.stats()["tiers"][0]  # type: ignore[no-any-return]


def wait_until(condition: Any, timeout: float, step: float = 0.02) -> float | None:
    """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


def check_readback(url: str, namespace: str, keys: list[str]) -> int:
    """A fresh cache (new clients, new slot map) finds only right values; returns how many."""
    fresh = sc.TieredCache.from_urls(url, namespace=namespace)
    try:
        found = 0
        for key in keys:
            value = fresh.get(key)
            if value is not None:
                assert value == value_of(key), key
                found += 1
        return found
    finally:
        fresh.close()


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_primary_killed_under_load_serves_again_within_two_seconds_of_promotion(
    cluster: RedisClusterProcesses, kind: str
) -> None:
    """8 threads on get_or_set (or 8 asyncio tasks on aget_or_set), a primary SIGKILLed: no
    exception, no wrong value, no call stuck (a lease left behind by the dead primary made
    fills wait a minute), and the tier serves the failed-over slots again within 2 s of the
    promotion (the breaker's longest back-off) plus polling slack."""
    namespace = f"failover-{kind}-{os.urandom(4).hex()}"
    cache = sc.TieredCache.from_urls(cluster.url, namespace=namespace)
    victim = cluster.primary_of(KEYS[0])
    probe_key = "probe" + tag_on(cluster, victim)
    with Load(cache, kind) as load:
        assert wait_until(lambda: redis_stats(cache)["hits"] > 200, 20), "load never warmed up"
        killed = time.monotonic()
        cluster.kill_primary(victim)
        promotion = cluster.wait_promoted(victim)
        promoted = killed + promotion
        probes = iter(range(10**9))
        closed_at: list[float] = []

        def serving() -> bool:
            # The breaker is closed and a write to the failed-over slots reaches the new
            # primary: a fresh client (its own slot map) reads it back. Timed from before
            # the write: building the fresh client is the test's cost, not the tier's.
            if redis_stats(cache)["breaker"] != "closed":
                return False
            closed_at.append(time.monotonic())
            n = next(probes)
            cache.set(probe_key, {"probe": n})
            fresh = sc.TieredCache.from_urls(cluster.url, namespace=namespace)
            try:
                return bool(fresh.get(probe_key) == {"probe": n})
            finally:
                fresh.close()

        assert wait_until(serving, 15, step=0.05) is not None, "the Redis tier never recovered"
        recovered = closed_at[-1] - promoted
        hits = redis_stats(cache)["hits"]
        assert wait_until(lambda: redis_stats(cache)["hits"] > hits + 50, 10) is not None
    stats = redis_stats(cache)
    cache.close()
    print(
        f"\n{kind}: promotion {promotion:.2f} s after the kill, tier serving "
        f"{recovered:.2f} s after the promotion; {load.calls} calls "
        f"(slowest {load.slowest:.2f} s), "
        f"errors {stats['errors']}, skipped {stats['skipped']}, busy {stats['busy']}"
    )
    assert load.errors == []
    assert load.wrong == []
    assert not load.hung and load.slowest < LONGEST_CALL, load.slowest
    assert stats["errors"] + stats["skipped"] > 0  # the outage was seen, not slept through
    assert recovered <= RECOVERY + SLACK, recovered
    assert check_readback(cluster.url, namespace, KEYS) > len(KEYS) // 2


def _info(node: RedisProcess, section: str) -> dict[str, Any]:
    import redis

    client = redis.Redis(port=node.port)
    try:
        info: dict[str, Any] = client.info(section)
    finally:
        client.close()
    # redis-py before 5.1 leaves "count=3,..." values (errorstats, commandstats) unparsed
    return {
        name: dict(
            (k, int(v) if v.isdigit() else v)
            for k, v in (pair.split("=", 1) for pair in value.split(","))
        )
        if isinstance(value, str) and "=" in value
        else value
        for name, value in info.items()
    }


def _reset_stats(*nodes: RedisProcess) -> None:
    import redis

    for node in nodes:
        client = redis.Redis(port=node.port)
        client.config_resetstat()
        client.close()


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_slot_migrated_under_load_follows_ask_and_moved(
    cluster: RedisClusterProcesses, kind: str
) -> None:
    """A slot holding hot keys moves between primaries mid-load, a few keys at a time: callers
    are redirected with ASK while it moves and MOVED afterwards, and see no exception and no
    wrong value; afterwards the new owner serves those keys."""
    import redis

    namespace = f"migrate-{kind}-{os.urandom(4).hex()}"
    hot = [f"hot{{mig}}{i}" for i in range(40)]  # one hash tag: one slot
    keys = hot + KEYS[:60]
    slot = redis.cluster.key_slot(b"mig")
    source = cluster.primary_of("{mig}")
    target = next(n for n in cluster.primaries() if n is not source)
    cache = sc.TieredCache.from_urls(cluster.url, namespace=namespace)
    with Load(cache, kind, keys) as load:
        assert wait_until(lambda: redis_stats(cache)["hits"] > 200, 20), "load never warmed up"
        _reset_stats(source, target)
        moved = cluster.migrate_slot(slot, target, pause=0.05)
        hits = redis_stats(cache)["hits"]
        assert wait_until(lambda: redis_stats(cache)["hits"] > hits + 200, 10) is not None
    stats = redis_stats(cache)
    cache.close()
    asks = _info(source, "errorstats").get("errorstat_ASK", {}).get("count", 0)
    asking = _info(target, "commandstats").get("cmdstat_asking", {}).get("calls", 0)
    moves = _info(source, "errorstats").get("errorstat_MOVED", {}).get("count", 0)
    print(
        f"\n{kind}: {moved} keys migrated; ASK {asks}, ASKING {asking}, MOVED {moves}; "
        f"{load.calls} calls, tier errors {stats['errors']}, skipped {stats['skipped']}"
    )
    assert load.errors == []
    assert load.wrong == []
    assert not load.hung and load.slowest < LONGEST_CALL, load.slowest
    assert moved > 0 and moves > 0  # the slot really moved and stale maps were corrected
    assert asks > 0 and asking > 0  # mid-migration reads were redirected and followed
    assert cluster.primary_of("{mig}") is target
    assert check_readback(cluster.url, namespace, keys) > len(keys) // 2


def test_leases_released_in_one_cluster_pipeline_are_released(
    cluster: RedisClusterProcesses,
) -> None:
    """Releases that arrive together leave as one cluster pipeline. redis-py's sync cluster
    pipeline refuses ``.eval()``: every such release failed, each lease stayed until its TTL
    and the next fill of its key waited for it (a minute by default)."""
    from stratacache.tiers import _pipeline as pl
    from stratacache.tiers.redis import RedisTier, _send_many

    tier = RedisTier(cluster.url)
    try:
        leases = [f"lease{{t{i}}}" for i in range(6)]  # several slots, several nodes
        for key in leases:
            assert tier.acquire_lease(key, "token", 30)
        client = tier._sync()
        ops = [pl.Op(pl.RELEASE, (key, "token")) for key in leases]
        _send_many(client, ops, client.keyslot)
        assert [op.error for op in ops] == [None] * len(ops)
        for key in leases:  # free again: taken by a new holder at once
            assert tier.acquire_lease(key, "other", 30)
    finally:
        tier.close()


def test_shared_limiter_stays_within_its_limit_plus_one_burst_across_a_failover(
    cluster: RedisClusterProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    """8 threads and 8 asyncio tasks share one Redis-backed limiter (20 requests/s, a burst of
    20) while the primary holding its budget is killed and its replica promoted.

    The bound (the issue's): in every window of every length W, at most 20 * W + 20 grants
    (the limit without a failure) plus one more burst of 20. The limiter limits locally
    while Redis is unusable; that local bucket starts empty, since the shared burst was most
    likely spent (a full one would be a second burst), and back on Redis the shared bucket
    is clamped to what the local one has left (the promoted replica may lag, or have
    refilled meanwhile, which would be a third). The bound is per process: several
    processes falling back at once each limit locally at the full rate until Redis is back
    (see docs/operations.md).
    """
    rate, burst = 20.0, 20.0
    name = f"failover-{os.urandom(4).hex()}"
    limiter = RateLimiter(rpm=rate * 60, redis_url=cluster.url, name=name, retry_redis_after=1.0)
    victim = cluster.primary_of(f"{{{name}}}")
    grants: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                limiter.acquire()
            except BaseException as exc:
                errors.append(exc)
            grants.append(time.monotonic())

    async def task() -> None:
        while not stop.is_set():
            try:
                await limiter.aacquire()
            except BaseException as exc:
                errors.append(exc)
            grants.append(time.monotonic())

    async def tasks() -> None:
        await asyncio.gather(*(task() for _ in range(8)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    with caplog.at_level(logging.WARNING, logger="stratacache.ratelimit"):
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            cluster.kill_primary(victim)
            promotion = cluster.wait_promoted(victim)
            back = wait_until(lambda: any("back" in r.getMessage() for r in caplog.records), 10)
            time.sleep(1.5)  # on Redis again, for a while
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    limiter.close()
    grants.sort()
    worst = max(
        j - i + 1 - (rate * (grants[j] - grants[i]) + burst)
        for i in range(len(grants))
        for j in range(i, len(grants))
    )
    print(
        f"\nlimiter: {len(grants)} grants, promotion {promotion:.2f} s, back on Redis "
        f"{back} s after it; worst window over rate*W + burst: {worst:+.1f} grants"
    )
    assert errors == []
    # The failover was seen (the limiter fell back) and outlived (it is back on Redis).
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert back is not None and not limiter.degraded
    # The bound: never more than one burst over the limit during a failover. Most
    # runs stay within +1.1 grants of rate*W + burst (the limit without a failure); one run
    # measured +20.5, one extra burst (the cause, presumably a race between the sync and the
    # async client's fall-back and rejoin, is not found yet; see docs/operations.md). Two
    # grants of slack: a grant is recorded when its caller wakes, which on a loaded 2-core
    # machine can be ~0.1 s late (2 grants at 20/s).
    assert worst <= burst + 2, worst
