"""A cache problem is never the caller's exception: it is a miss, logged once, counted."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import diskcache
import pytest

import stratacache as sc
from stratacache.tiers import MISS, DiskTier, MemoryTier, Miss, Tier
from tests.redis_procs import RedisProcess, free_port


class FlakyTier(MemoryTier):
    """A memory tier whose backend can be switched off, to drive the breaker precisely."""

    kind = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def get(self, key: str) -> bytes | Miss:
        self.calls += 1
        if self.down:
            raise ConnectionError("backend unreachable")
        return super().get(key)

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("backend unreachable")
        super().set(key, data, ttl)


def test_breaker_skips_a_failing_tier_and_probes_it_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = FlakyTier()
    cache = sc.TieredCache([MemoryTier(), flaky], breaker_backoff=0.2, breaker_max_backoff=0.2)
    flaky.down = True
    with caplog.at_level(logging.WARNING, logger="stratacache"):
        for i in range(50):
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i  # served by memory; the broken tier costs nothing
            assert cache.get(f"absent{i}", MISS) is MISS
    stats = cache.stats()["tiers"][1]
    assert stats["errors"] == 3
    assert stats["skipped"] > 50
    assert flaky.calls == 3  # after the threshold the tier is not called at all
    assert stats["breaker"] == "open"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    flaky.down = False
    time.sleep(0.3)
    cache.set("after", 1)
    assert flaky.get(cache._drive(cache._pkey("after"))) is not MISS
    assert cache.stats()["tiers"][1]["breaker"] == "closed"


def test_corrupt_and_foreign_entries_are_misses_and_deleted(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    disk = cache.tiers[0]
    for i, junk in enumerate(
        [b"", b"\x00garbage", pickle.dumps({"x": 1}), b"SC\x01\x00" + bytes(20)]
    ):
        pk = cache._drive(cache._pkey(f"k{i}"))
        disk.set(pk, junk, None)
        assert cache.get(f"k{i}", MISS) is MISS
        assert disk.get(pk) is MISS  # deleted, so the next read does not pay again
    assert cache.stats()["tiers"][0]["corrupt"] == 4


def test_pickled_values_in_a_shared_disk_dir_are_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    cache = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    pk = cache._drive(cache._pkey("k"))
    cache.close()
    foreign = diskcache.Cache(str(tmp_path / "d"))  # default Disk: pickles non-bytes values
    foreign.set(pk, Exploit())
    foreign.close()
    cache = sc.TieredCache.from_urls(f"disk://{tmp_path}/d", namespace="t")
    assert cache.get_many(["k"]) == {}
    assert cache.get("k", MISS) is MISS
    assert not marker.exists()
    cache.close()


@pytest.mark.redis
def test_redis_killed_mid_run_then_restarted(private_redis: RedisProcess) -> None:
    cache = sc.TieredCache.from_urls(
        "memory://", private_redis.url, namespace="t", breaker_backoff=0.2, breaker_max_backoff=0.5
    )
    cache.set("before", 1)
    private_redis.kill()
    exceptions = 0
    for i in range(600):
        try:
            if i % 2:
                cache.set(f"k{i}", {"i": i})
            else:
                cache.get(f"k{i - 1}")
        except Exception:
            exceptions += 1
    assert exceptions == 0
    redis_stats = cache.stats()["tiers"][1]
    assert redis_stats["errors"] >= 3
    assert redis_stats["skipped"] > 0
    assert cache.get("before") == 1  # memory still serves

    private_redis.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cache.set("after", 2)
        if cache.stats()["tiers"][1]["breaker"] == "closed":
            break
        time.sleep(0.1)
    cache.set("after", 2)
    fresh = sc.TieredCache.from_urls(private_redis.url, namespace="t")
    assert fresh.get("after") == 2
    fresh.close()
    cache.close()


@pytest.mark.redis
def test_hung_redis_times_out_then_is_skipped(private_redis: RedisProcess) -> None:
    """SIGSTOP: the server accepts connections but never answers (a blackholed host)."""
    cache = sc.TieredCache.from_urls(
        "memory://", f"{private_redis.url}?timeout=100ms&connect_timeout=100ms", namespace="t"
    )
    cache.set("k", 1)
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        for i in range(30):
            assert cache.get(f"missing{i}", MISS) is MISS
        stats = cache.stats()["tiers"][1]
        assert stats["errors"] == 3
        assert stats["skipped"] >= 27
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    cache.close()


def test_redis_down_from_the_start_is_only_a_miss() -> None:
    cache = sc.TieredCache.from_urls("memory://", f"redis://127.0.0.1:{free_port()}/0")
    cache.set("k", 1)
    assert cache.get("k") == 1
    assert cache.get_many(["k", "x"]) == {"k": 1}
    assert cache.get_or_set("y", lambda: 2) == 2
    cache.delete("k")
    with pytest.raises(sc.TierError, match="redis"):  # an admin action that did not happen
        cache.clear()
    assert cache.get("y") is None  # though this process already uses the new generation
    assert cache.stats()["tiers"][1]["errors"] >= 1

    async def async_calls() -> None:
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aget_or_set("b", lambda: 3) == 3

    asyncio.run(async_calls())
    cache.close()


DISK_FULL_SCRIPT = """
import resource, signal, sys
import stratacache as sc
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
cache = sc.TieredCache.from_urls("memory://", "disk://" + sys.argv[1], namespace="t")
cache.set("warm", "x" * 100)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
for i in range(300):
    cache.set(f"k{i}", "y" * 20_000)
    assert cache.get(f"k{i}") is not None   # memory tier keeps serving
disk = cache.stats()["tiers"][1]
print(disk["errors"], disk["writes"])
"""


def test_full_disk_is_counted_not_raised(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse to grow files, exactly as a full disk does."""
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    errors, writes = map(int, out.stdout.split())
    assert errors >= 1
    assert writes >= 1


class ExplodingTier(Tier):
    """A third-party tier with a bug: every method raises."""

    kind = "exploding"

    def get(self, key: str) -> bytes | Miss:
        raise ValueError("bug")

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        raise ValueError("bug")

    def delete(self, key: str) -> None:
        raise ValueError("bug")

    def clear(self) -> None:
        raise ValueError("bug")


def test_even_a_buggy_tier_never_raises_into_the_caller() -> None:
    cache = sc.TieredCache([ExplodingTier()])
    cache.set("k", 1)
    assert cache.get("k", MISS) is MISS
    assert cache.get_many(["k"]) == {}
    cache.set_many({"a": 1})
    cache.delete("k")
    assert cache.get_or_set("k", lambda: 4) == 4


def test_stats_survive_a_broken_disk_size_query(tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "d")
    cache = sc.TieredCache([disk])
    disk.close()
    disk._cache = None
    assert cache.stats()["tiers"][0]["size_bytes"] is None


@pytest.mark.redis
@pytest.mark.parametrize("load", ["threads", "asyncio"])
def test_a_one_second_redis_blip_under_load_costs_at_most_two_more_seconds(
    private_redis: RedisProcess, load: str
) -> None:
    """8 threads on get_or_set (or 8 asyncio tasks on aget_or_set), Redis killed and restarted
    one second later: the Redis tier serves again within 2 s of the restart (default breaker
    settings), with 0 exceptions."""
    cache = sc.TieredCache.from_urls(private_redis.url, namespace="blip")
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                cache.get_or_set(f"w{n}-{i % 50}", lambda: {"n": n})
            except BaseException as exc:
                errors.append(exc)
            i += 1

    async def task(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                await cache.aget_or_set(f"w{n}-{i % 50}", lambda: {"n": n})
            except BaseException as exc:
                errors.append(exc)
            i += 1
            await asyncio.sleep(0)

    async def tasks() -> None:
        await asyncio.gather(*(task(n) for n in range(8)))

    if load == "threads":
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    else:
        threads = [threading.Thread(target=asyncio.run, args=(tasks(),))]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        private_redis.kill()
        time.sleep(1.0)
        private_redis.start()
        restarted = time.monotonic()
        serving_after = None
        while time.monotonic() - restarted < 10:
            tier = cache.stats()["tiers"][0]
            if tier["breaker"] == "closed":
                cache.set("probe", 1)
                fresh = sc.TieredCache.from_urls(private_redis.url, namespace="blip")
                if fresh.get("probe") == 1:
                    serving_after = time.monotonic() - restarted
                    fresh.close()
                    break
                fresh.close()
            time.sleep(0.05)
        # ...and the load itself is served by Redis again, not just the probe. The restarted
        # server is empty, so the load first refills its 400 keys (each fill takes a lease):
        # poll rather than expect hits within a fixed window on a slow machine.
        hits = cache.stats()["tiers"][0]["hits"]
        deadline = time.monotonic() + 10
        while (load_hits := cache.stats()["tiers"][0]["hits"] - hits) == 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    cache.close()
    assert errors == []
    assert serving_after is not None and serving_after <= 2.5, serving_after
    assert load_hits > 0
