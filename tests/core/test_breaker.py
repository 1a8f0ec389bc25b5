"""The breaker's back-off grows with failed probes only, never with calls already in flight."""

from __future__ import annotations

from stratacache._breaker import CircuitBreaker


def _open(breaker: CircuitBreaker, now: float) -> None:
    opened = [breaker.failure(now) for _ in range(breaker.threshold)]
    assert opened == [False] * (breaker.threshold - 1) + [True]


def test_in_flight_failures_after_opening_do_not_grow_the_back_off() -> None:
    breaker = CircuitBreaker(threshold=3, base_backoff=1.0, max_backoff=30.0)
    _open(breaker, now=100.0)
    first_probe_at = breaker._open_until
    for _ in range(20):  # eight threads' calls that were already waiting on the dead tier
        assert breaker.failure(100.1) is False
    assert breaker._open_until == first_probe_at
    assert 100.8 <= first_probe_at <= 101.0


def test_only_failed_probes_double_the_back_off() -> None:
    breaker = CircuitBreaker(threshold=3, base_backoff=1.0, max_backoff=30.0)
    _open(breaker, now=0.0)
    now = breaker._open_until
    waits = []
    for _ in range(4):
        assert _allow_at(breaker, now)
        breaker.failure(now)
        waits.append(breaker._open_until - now)
        now = breaker._open_until
    # 2, 4, 8, 16 s (up to 20% shorter) after 1 s for the opening
    for wait, nominal in zip(waits, (2, 4, 8, 16), strict=True):
        assert 0.8 * nominal <= wait <= nominal


def test_a_successful_probe_closes_and_resets() -> None:
    breaker = CircuitBreaker(threshold=3, base_backoff=1.0, max_backoff=30.0)
    _open(breaker, now=0.0)
    assert _allow_at(breaker, breaker._open_until)
    assert breaker.success() is True
    assert not breaker.is_open
    _open(breaker, now=50.0)  # the next outage starts from the base back-off again
    assert 50.8 <= breaker._open_until <= 51.0


def _allow_at(breaker: CircuitBreaker, now: float) -> bool:
    """allow() reads the monotonic clock; move the deadline instead of the clock."""
    import time

    shift = time.monotonic() - now
    breaker._open_until += shift
    try:
        return breaker.allow()
    finally:
        breaker._open_until -= shift
