"""RateLimiter in one process: budgets, fairness, refunds, timeouts, pauses and AIMD."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stratacache.errors import ConfigurationError, StrataCacheError
from stratacache.ratelimit import RateLimiter, RateLimitTimeout, RequestTooLargeError


@pytest.mark.parametrize(
    "kwargs",
    [{"rpm": -1}, {"tpm": 0}, {"rpm": float("nan")}, {"burst": -2}, {"rpm": "10"}, {"name": ""}],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_request_larger_than_the_budget_fails_fast() -> None:
    limiter = RateLimiter(tpm=6000)
    started = time.monotonic()
    with pytest.raises(RequestTooLargeError, match="6000") as info:
        limiter.acquire(tokens=6001)
    assert isinstance(info.value, StrataCacheError)
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConfigurationError):
        limiter.acquire(tokens=-1)


def test_larger_than_burst_but_within_the_minute_is_served_not_hung() -> None:
    limiter = RateLimiter(tpm=6000)  # 100 tokens/s, burst 100
    first = limiter.acquire(tokens=150)  # full bucket: goes now, leaves 50 of debt
    second = limiter.acquire(tokens=10, timeout=5)
    assert first.waited == 0
    assert 0.55 <= second.waited <= 0.65  # the debt is paid before anyone else goes


def test_80_requests_from_8_threads_at_1200_rpm_respect_the_limit() -> None:
    limiter = RateLimiter(rpm=1200)  # 20/s, burst 20
    grants: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            with limiter.acquire(), lock:
                grants.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(grants) == 80
    assert grants[-1] - started >= (80 - 20) / 20 - 0.02  # never faster than the limit allows
    grants.sort()
    for i in range(len(grants)):  # no window holds more than burst + rate * window
        j = i
        while j < len(grants) and grants[j] - grants[i] <= 1.0:
            j += 1
        assert j - i <= 20 + 20 * 1.0 + 1


async def test_async_callers_are_served_in_arrival_order() -> None:
    limiter = RateLimiter(rpm=600)  # 10/s, burst 10
    order: list[int] = []

    async def call(i: int) -> None:
        async with limiter.aacquire() as lease:
            order.append(i)
            assert lease.waited >= 0

    started = time.monotonic()
    await asyncio.gather(*(call(i) for i in range(15)))
    assert order == list(range(15))
    assert time.monotonic() - started >= 0.5 - 0.02


async def test_large_request_is_not_starved_by_small_ones() -> None:
    limiter = RateLimiter(tpm=6000)  # 100 tokens/s
    stop = asyncio.Event()

    async def small_stream() -> None:
        while not stop.is_set():
            async with limiter.aacquire(tokens=20):
                pass

    hogs = [asyncio.create_task(small_stream()) for _ in range(4)]
    await asyncio.sleep(0.2)
    lease = await limiter.aacquire(tokens=300, timeout=10)  # gets a finite slot at once
    stop.set()
    await asyncio.gather(*hogs)
    assert lease.waited < 10


def test_settle_refunds_the_over_estimate() -> None:
    limiter = RateLimiter(tpm=6000)  # 100 tokens/s, burst 100
    with limiter.acquire(tokens=100) as lease:
        lease.settle(10)
        lease.settle(5)  # only the first settle counts
    assert lease.settled == 10
    assert limiter.acquire(tokens=80).waited == 0  # 90 were given back
    assert limiter.acquire(tokens=50).waited > 0.2
    more = limiter.acquire(tokens=0)
    assert more.waited == 0  # a request with no tokens only needs the (absent) request budget


def test_settle_can_charge_more_than_estimated() -> None:
    limiter = RateLimiter(tpm=6000)
    limiter.acquire(tokens=10).settle(100)
    assert limiter.acquire(tokens=50).waited >= 0.45


def test_timeout_is_decided_at_once_and_commits_nothing() -> None:
    limiter = RateLimiter(rpm=60)  # 1/s, burst 1
    limiter.acquire()
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(timeout=0.1)
    assert time.monotonic() - started < 0.1
    assert limiter.acquire(timeout=2).waited <= 1.0  # the failed attempt took no slot


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    limiter = RateLimiter(rpm=60)
    await limiter.aacquire()
    waiter = asyncio.ensure_future(limiter.aacquire())  # slot at ~1s
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lease = await limiter.aacquire(timeout=2)
    assert lease.waited < 1.0  # not 2s: the cancelled slot was refunded


def test_a_429_pauses_every_waiter_once_and_halves_the_rate() -> None:
    limiter = RateLimiter(rpm=1200)
    limiter.acquire()
    limiter.observe_headers({"retry-after-ms": "400"}, status=429)
    limiter.observe_headers({"retry-after-ms": "400"}, status=429)  # same burst: one pause
    assert limiter.factor == 0.5
    grants: list[float] = []
    started = time.monotonic()

    def worker() -> None:
        limiter.acquire()
        grants.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert min(grants) >= 0.38
    assert max(grants) < 0.8 + 0.5  # paused once (0.4s), not once per 429
    for _ in range(20):
        limiter.observe_headers({"x-ratelimit-remaining-requests": "100"}, status=200)
    assert limiter.factor == 1.0


def test_429_without_retry_after_uses_the_exhausted_reset() -> None:
    limiter = RateLimiter(rpm=1200)
    limiter.observe_headers(
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "300ms"}, status=429
    )
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.28


def test_remaining_headers_clamp_the_local_bucket() -> None:
    limiter = RateLimiter(rpm=600)  # burst 10
    limiter.observe_headers({"x-ratelimit-remaining-requests": "0"})
    # One unit of slack for the provider's rounding: one more request now, then 10/s.
    assert limiter.acquire().waited == 0
    assert 0.05 <= limiter.acquire().waited <= 0.15


def test_provider_says_empty_for_a_budget_we_do_not_limit() -> None:
    limiter = RateLimiter(rpm=6000)  # no tpm configured
    limiter.observe_headers(
        {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": "0.3"}
    )
    started = time.monotonic()
    limiter.acquire(tokens=10)
    assert time.monotonic() - started >= 0.28
    assert limiter.factor == 1.0  # not a 429: no rate cut


async def test_async_feedback_twins() -> None:
    limiter = RateLimiter(rpm=1200)
    await limiter.aobserve_headers({"retry-after": "0.2"}, status=429)
    await limiter.arecord_throttle(0.2)
    started = time.monotonic()
    lease = await limiter.aacquire()
    assert time.monotonic() - started >= 0.18
    await lease.asettle(0)
    assert limiter.factor == 0.5


def test_unawaited_aacquire_does_not_warn() -> None:
    limiter = RateLimiter(rpm=60)
    limiter.aacquire()  # created and dropped: must not raise "never awaited" warnings
