"""A slow or partitioned Redis never makes a memory hit slow, and never a caller's exception.

Redis is made slow for real, three ways: the process is frozen (SIGSTOP: it accepts
connections and never answers, like a host behind a black hole), the server blocks itself
(``DEBUG SLEEP``: every client waits, as during a long command or a fork on a huge
dataset), and a loopback proxy holds back the replies of one client's path (a slow or
partitioned network; other clients stay healthy). In each, with ``memory://`` in front:

* hits stay served from memory; no call, hit or miss, waits longer than the Redis timeout
  allows (``2 x timeout``: one connection wait plus one socket timeout, + 0.5 s of slack for
  a loaded two-core machine), including the namespace-generation refresh that a hit makes
  against Redis every ``generation_refresh`` seconds;
* misses cost about one timeout each until the breaker opens, then nothing but its probes;
* once Redis answers again, the tier serves within 2 s (the breaker's default cap);
* no late reply is ever taken for another key's (every value read is its key's).

Budget: under 30 s for this file on the shared two-core machine (measured with
``--durations``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.tiers import MISS
from tests.delay_proxy import DelayProxy
from tests.redis_procs import RedisProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 0.2
#: Longest any one call may take while Redis is slow: a wait for a connection that a hung
#: call holds, then our own socket timeout, plus slack for a loaded machine.
BOUND = 2 * TIMEOUT + 0.5
SLOW_FOR = 1.5
#: The breaker's default maximum back-off, plus slack: the tier serves again within it.
RECOVERY = 2.0 + 0.5
REFRESH = 0.2
WORKERS = 4
MODES = ["sigstop", "debug_sleep", "proxy"]


@pytest.fixture
def debug_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private server that allows DEBUG (Redis 7 refuses it unless enabled)."""
    server = RedisProcess(tmp_path / "redis", None, "--enable-debug-command", "yes").start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)  # never leave a frozen server behind
    server.stop()


class Slowdown:
    """One way of making Redis slow; ``url`` is what the cache under test connects to."""

    def __init__(self, mode: str, server: RedisProcess, proxy: DelayProxy) -> None:
        self.mode = mode
        self.server = server
        self.proxy = proxy
        self._sleeper: threading.Thread | None = None

    @property
    def url(self) -> str:
        query = f"timeout={TIMEOUT}&connect_timeout={TIMEOUT}"
        if self.mode == "proxy":
            return self.proxy.url(query)
        return f"{self.server.url}?{query}"

    def start(self) -> None:
        if self.mode == "sigstop":
            assert self.server.proc is not None
            os.kill(self.server.proc.pid, signal.SIGSTOP)
        elif self.mode == "debug_sleep":
            import redis

            def sleep() -> None:
                client = redis.Redis(port=self.server.port)
                client.execute_command("DEBUG", "SLEEP", SLOW_FOR + 0.5)
                client.close()

            self._sleeper = threading.Thread(target=sleep)
            self._sleeper.start()
            _wait_until_blocked(self.server.port)
        else:
            self.proxy.delay = 2 * TIMEOUT

    def stop(self) -> None:
        """Redis answers again when this returns."""
        if self.mode == "sigstop":
            assert self.server.proc is not None
            os.kill(self.server.proc.pid, signal.SIGCONT)
        elif self.mode == "debug_sleep":
            assert self._sleeper is not None
            self._sleeper.join(30)
        else:
            self.proxy.delay = 0.0


def _wait_until_blocked(port: int) -> None:
    """Until the server leaves a PING unanswered for the test's timeout (a raw socket: the
    redis-py client would retry the timeout and hide it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            try:
                sock.recv(16)
            except TimeoutError:
                return
        time.sleep(0.01)
    raise AssertionError("DEBUG SLEEP did not block the server")


@contextlib.contextmanager
def slowed(mode: str, server: RedisProcess) -> Iterator[Slowdown]:
    with DelayProxy(server.port) as proxy:
        slowdown = Slowdown(mode, server, proxy)
        try:
            yield slowdown
        finally:
            slowdown.stop()


async def _drive_while_slow(
    get: Callable[[str, Any], Awaitable[Any]], n: int, deadline: float, latencies: list[float]
) -> list[str]:
    """One worker: hits on the warm keys, a miss every tenth call; returns wrong answers."""
    wrong = []
    i = 0
    while time.monotonic() < deadline:
        key = f"hot{(n * 7 + i) % 20}" if i % 10 else f"absent-{n}-{i}"
        start = time.perf_counter()
        value = await get(key, MISS)
        latencies.append(time.perf_counter() - start)
        expected = MISS if key.startswith("absent") else {"k": key}
        if value != expected:
            wrong.append(f"{key} -> {value!r}")
        i += 1
        await asyncio.sleep(0)
    return wrong


def _getter(cache: sc.TieredCache, flavour: str) -> Callable[[str, Any], Awaitable[Any]]:
    if flavour == "async":
        return cache.aget

    async def get(key: str, default: Any) -> Any:
        return cache.get(key, default)

    return get


async def _run_workers(cache: sc.TieredCache, flavour: str, latencies: list[float]) -> list[str]:
    """WORKERS concurrent callers for SLOW_FOR seconds: tasks on one loop (async) or threads."""
    deadline = time.monotonic() + SLOW_FOR
    get = _getter(cache, flavour)
    if flavour == "async":
        results = await asyncio.gather(
            *(_drive_while_slow(get, n, deadline, latencies) for n in range(WORKERS))
        )
    else:
        results = await asyncio.gather(
            *(
                asyncio.to_thread(asyncio.run, _drive_while_slow(get, n, deadline, latencies))
                for n in range(WORKERS)
            )
        )
    return [w for r in results for w in r]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("mode", MODES)
def test_memory_hits_stay_bounded_while_redis_is_slow(
    debug_redis: RedisProcess, mode: str, flavour: str
) -> None:
    direct = sc.TieredCache.from_urls(debug_redis.url, namespace="slow")
    for i in range(20):  # in Redis only: misses of the cache under test read them later
        direct.set(f"cold{i}", {"k": f"cold{i}"})
    with slowed(mode, debug_redis) as slow:
        cache = sc.TieredCache.from_urls(
            "memory://", slow.url, namespace="slow", generation_refresh=REFRESH
        )
        for i in range(20):
            cache.set(f"hot{i}", {"k": f"hot{i}"})
        latencies: list[float] = []
        slow.start()
        wrong = asyncio.run(_run_workers(cache, flavour, latencies))
        during = cache.stats()["tiers"][1]
        slow.stop()
        healed = time.monotonic()

        assert wrong == []
        assert max(latencies) <= BOUND, sorted(latencies)[-5:]
        # The slow path was really taken (refreshes and misses reached the hung Redis), and
        # the breaker then kept the rest of the calls away from it.
        assert during["errors"] >= 3, during
        assert during["skipped"] > 0, during
        slow_calls = sum(1 for x in latencies if x > TIMEOUT / 2)
        # Three failures open the breaker; after that only its probes (one per back-off of
        # at least 0.8 s) and calls already queued behind a hung one may wait.
        assert slow_calls <= 3 * WORKERS + 2 * (SLOW_FOR / 0.8 + 1) * WORKERS, slow_calls

        # Redis answers again: the tier serves within the breaker's cap.
        while True:
            cache.set("after", {"k": "after"})
            if direct.get("after") == {"k": "after"}:
                break
            assert time.monotonic() - healed < RECOVERY, cache.stats()["tiers"][1]
            time.sleep(0.02)
        # Replies that came back late were never taken for another key's.
        assert cache.get_many([f"cold{i}" for i in range(20)]) == {
            f"cold{i}": {"k": f"cold{i}"} for i in range(20)
        }
        cache.close()
    direct.close()


def test_a_partitioned_process_sees_a_clear_soon_after_the_partition_heals(
    debug_redis: RedisProcess,
) -> None:
    """Only our path to Redis is cut; another process clears the namespace meanwhile.

    While cut off, this process cannot learn of the clear and serves its memory tier (the
    documented bound); once the path heals it drops the cleared entry within
    ``generation_refresh`` + the breaker's back-off cap (+ one timeout), never later.
    """
    with DelayProxy(debug_redis.port) as proxy:
        query = f"timeout={TIMEOUT}&connect_timeout={TIMEOUT}"
        cache = sc.TieredCache.from_urls(
            "memory://", proxy.url(query), namespace="part", generation_refresh=REFRESH
        )
        other = sc.TieredCache.from_urls(debug_redis.url, namespace="part")
        cache.set("k", "old")
        assert other.get("k") == "old"
        proxy.delay = 3600.0  # a black hole
        other.clear()
        started = time.monotonic()
        # Until the breaker is open: the worst case, where recovery waits for its probe.
        while cache.stats()["tiers"][1]["breaker"] != "open" or time.monotonic() - started < 1:
            t0 = time.perf_counter()
            assert cache.get("k") == "old"  # stale, bounded, and no exception
            assert time.perf_counter() - t0 <= BOUND
            assert time.monotonic() - started < 10, cache.stats()["tiers"][1]
        proxy.delay = 0.0
        healed = time.monotonic()
        while cache.get("k", MISS) is not MISS:
            assert time.monotonic() - healed <= REFRESH + 2.0 + TIMEOUT + 0.5
            time.sleep(0.01)
        cache.close()
        other.close()
