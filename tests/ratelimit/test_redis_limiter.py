"""The Redis-backed limiter: shared budgets, atomic Lua, Cluster slots, two processes, outages."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from stratacache.ratelimit import RateLimiter, RequestTooLargeError
from tests.redis_procs import RedisProcess, client_count

pytestmark = pytest.mark.redis


def _hammer(limiters: list[RateLimiter], per_limiter: int, tokens: int = 0) -> list[float]:
    grants: list[float] = []
    lock = threading.Lock()

    def worker(limiter: RateLimiter) -> None:
        for _ in range(per_limiter):
            limiter.acquire(tokens=tokens)
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(grants)


def test_two_limiters_with_one_name_share_one_budget(redis_url: str) -> None:
    a = RateLimiter(rpm=1200, redis_url=redis_url, name="shared")
    b = RateLimiter(rpm=1200, redis_url=redis_url, name="shared")
    started = time.monotonic()
    grants = _hammer([a, b, a, b], 10)  # 40 requests, burst 20, then 20/s
    assert len(grants) == 40
    assert grants[-1] - started >= (40 - 20) / 20 - 0.02
    other = RateLimiter(rpm=1200, redis_url=redis_url, name="other")
    assert other.acquire().waited == 0  # another name is another budget
    assert not a.degraded
    for limiter in (a, b, other):
        limiter.close()


def test_redis_refunds_and_fails_fast(redis_url: str) -> None:
    limiter = RateLimiter(tpm=6000, redis_url=redis_url, name="tok")
    with pytest.raises(RequestTooLargeError):
        limiter.acquire(tokens=7000)
    with limiter.acquire(tokens=100) as lease:
        lease.settle(10)
    assert limiter.acquire(tokens=80).waited < 0.05
    assert limiter.acquire(tokens=50).waited > 0.2
    limiter.close()


def test_redis_keys_expire_and_share_a_hash_tag(redis_url: str) -> None:
    import redis

    limiter = RateLimiter(rpm=60, tpm=6000, redis_url=redis_url, name="tagged")
    limiter.acquire(tokens=50)
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.keys("stratacache:rl:*"))
    assert keys == ["stratacache:rl:{tagged}:req", "stratacache:rl:{tagged}:tok"]
    assert all(0 < client.pttl(k) <= 3000 for k in keys)
    limiter.record_throttle(0.3)
    assert client.exists("stratacache:rl:{tagged}:pause")
    client.close()
    limiter.close()


async def test_async_redis_path_with_pause_shared_across_limiters(redis_url: str) -> None:
    a = RateLimiter(rpm=6000, redis_url=redis_url, name="apause")
    b = RateLimiter(rpm=6000, redis_url=redis_url, name="apause")
    await a.aobserve_headers({"retry-after-ms": "300"}, status=429)
    started = time.monotonic()
    async with b.aacquire() as lease:  # b never saw the 429 but waits for the shared pause
        lease.settle(0)
    assert time.monotonic() - started >= 0.25
    await a.aclose()
    await b.aclose()


@pytest.mark.cluster
def test_cluster_limiter_is_atomic_in_one_slot(cluster_url: str) -> None:
    from redis.cluster import RedisCluster

    a = RateLimiter(rpm=1200, tpm=60_000, redis_url=cluster_url, name="cl")
    b = RateLimiter(rpm=1200, tpm=60_000, redis_url=cluster_url, name="cl")
    started = time.monotonic()
    grants = _hammer([a, b], 15, tokens=10)
    assert len(grants) == 30 and not a.degraded and not b.degraded
    assert grants[-1] - started >= (30 - 20) / 20 - 0.02
    host, port = cluster_url.removeprefix("redis+cluster://").split(",")[0].split(":")
    client = RedisCluster(host=host, port=int(port))
    slots = {client.keyslot(k) for k in ("stratacache:rl:{cl}:req", "stratacache:rl:{cl}:tok")}
    assert len(slots) == 1
    assert client.exists("stratacache:rl:{cl}:req")
    client.close()
    a.close()
    b.close()


@pytest.mark.cluster
async def test_cluster_async(cluster_url: str) -> None:
    limiter = RateLimiter(rpm=600, redis_url=cluster_url, name="acl")
    leases = [await limiter.aacquire() for _ in range(12)]
    assert not limiter.degraded
    assert leases[-1].waited > 0.05  # the 11th and 12th wait for the 10-request burst
    await limiter.aclose()


def test_redis_outage_degrades_to_local_and_recovers(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(rpm=6000, redis_url=private_redis.url, name="flaky",
                          retry_redis_after=0.3)  # fmt: skip
    limiter.acquire()
    private_redis.kill()
    with caplog.at_level(logging.WARNING, logger="stratacache.ratelimit"):
        for _ in range(5):
            limiter.acquire()  # no exception: local limiting
        assert limiter.degraded
        time.sleep(0.35)
        limiter.acquire()  # retry hits the dead server again: still no second warning
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    private_redis.start()
    time.sleep(0.35)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stratacache.ratelimit"):
        limiter.acquire()
    assert not limiter.degraded
    assert any("back" in r.getMessage() for r in caplog.records)
    limiter.close()


_WORKER = """
import json, sys, time
from stratacache.ratelimit import RateLimiter
url, n, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
limiter = RateLimiter(rpm=1200, redis_url=url, name="two-proc")
time.sleep(max(0.0, start_at - time.time()))
grants = []
for _ in range(n):
    limiter.acquire()
    grants.append(time.time())
print(json.dumps({"grants": grants, "degraded": limiter.degraded}))
"""


@pytest.mark.slow
def test_two_processes_sharing_one_redis_respect_the_limit_together(redis_url: str) -> None:
    start_at = time.time() + 1.5  # both processes import and connect first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_url, "30", repr(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert not any(o["degraded"] for o in outputs)
    grants = sorted(g for o in outputs for g in o["grants"])
    assert len(grants) == 60
    assert grants[-1] - start_at >= (60 - 20) / 20 - 0.05  # 2 s: one budget, not two
    for i in range(len(grants)):
        j = i
        while j < len(grants) and grants[j] - grants[i] <= 0.5:
            j += 1
        assert j - i <= 20 + 20 * 0.5 + 1


def test_unreachable_redis_at_start_is_not_a_crash() -> None:
    limiter = RateLimiter(rpm=600, redis_url="redis://127.0.0.1:1/0", name="nowhere")
    assert limiter.acquire().waited == 0
    assert limiter.degraded

    async def main() -> None:
        await limiter.aacquire()

    asyncio.run(main())
    limiter.close()


def test_async_use_from_many_event_loops_does_not_leak_connections(redis_url: str) -> None:
    """Each asyncio.run makes a new loop; its client must close with it, not pile up."""
    limiter = RateLimiter(rpm=60_000, redis_url=redis_url, name="loops")
    before = client_count(redis_url)

    async def acquire() -> None:
        async with limiter.aacquire() as lease:
            lease.settle(0)

    for _ in range(5):
        asyncio.run(acquire())
    assert client_count(redis_url) == before
    limiter.close()
