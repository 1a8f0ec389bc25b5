"""Pure bucket maths and header parsing: no clocks, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from stratacache.ratelimit import parse_duration, parse_rate_limit_headers
from stratacache.ratelimit._gcra import Limit, adjust, clamp, reserve, shift

RPM = Limit(rate=10.0, burst=10.0)
TPM = Limit(rate=100.0, burst=100.0)


def test_full_bucket_then_one_slot_per_interval_in_arrival_order() -> None:
    tats: list[float | None] = [None, None]
    waits = []
    for _ in range(12):
        wait, new = reserve(tats, [RPM, None], [1, 0], now=0.0)
        assert new is not None
        tats, waits = new, [*waits, wait]
    assert waits[:10] == [0.0] * 10
    assert all(abs(a - b) < 1e-9 for a, b in zip(waits[10:], [0.1, 0.2], strict=True))


def test_oversized_request_waits_for_a_full_bucket_and_leaves_debt() -> None:
    _, tats = reserve([None, None], [None, TPM], [0, 50], now=0.0)
    assert tats is not None
    wait, tats2 = reserve(tats, [None, TPM], [0, 250], now=0.0)  # 2.5x the burst
    assert abs(wait - 0.5) < 1e-9  # waits until the 50 used tokens refill, not forever
    assert tats2 is not None
    wait_small, _ = reserve(tats2, [None, TPM], [0, 10], now=0.0)
    assert wait_small > wait  # the large request keeps its place: no starvation


def test_both_budgets_are_charged_at_the_same_start() -> None:
    tats: list[float | None] = [5.0, None]  # requests budget busy until t=5
    wait, new = reserve(tats, [RPM, TPM], [1, 10], now=0.0)
    assert abs(wait - (5.0 + 0.1 - 1.0)) < 1e-9
    assert new is not None and new[1] is not None
    assert abs(new[1] - (wait + 0.1)) < 1e-9


def test_max_wait_commits_nothing() -> None:
    wait, new = reserve([10.0, None], [RPM, None], [1, 0], now=0.0, max_wait=1.0)
    assert new is None and wait > 1.0


def test_refund_charge_clamp_and_shift() -> None:
    assert adjust(2.0, TPM, 50, now=0.0) == 1.5
    assert adjust(0.2, TPM, 50, now=0.0) is None  # never fuller than full
    assert adjust(None, TPM, -50, now=1.0) == 1.5
    assert clamp(None, RPM, 0, now=0.0) == 1.0  # provider says empty: next slot in 1/rate
    assert clamp(5.0, RPM, 0, now=0.0) == 5.0
    assert clamp(None, RPM, 10, now=0.0) is None
    assert shift(3.0, now=1.0, seconds=2.0) == 5.0
    assert shift(None, now=1.0, seconds=2.0) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 0.5), st.integers(0, 300), st.integers(0, 200)),
        min_size=1,
        max_size=40,
    )
)
def test_granted_schedule_never_exceeds_rate_plus_burst(
    steps: list[tuple[float, int, int]],
) -> None:
    now, grants = 0.0, []
    tats_: list[float | None] = [None, None]
    for gap, tokens, refund in steps:
        now += gap
        wait, new = reserve(tats_, [RPM, TPM], [1, tokens], now=now)
        assert new is not None
        tats_ = new
        granted = now + wait
        back = min(refund, tokens)
        if back:  # a settle happens after the call, so the clock has reached the grant
            now = granted
            tats_[1] = adjust(tats_[1], TPM, back, now=now)
        grants.append((granted, tokens - back))
    grants.sort()
    for i, (start, _) in enumerate(grants):
        for j in range(i, len(grants)):
            window = grants[j][0] - start
            sent = grants[i : j + 1]
            assert len(sent) <= RPM.burst + RPM.rate * window + 1e-3
            big = max(t for _, t in sent)
            assert sum(t for _, t in sent) <= max(TPM.burst, big) + TPM.rate * window + 1e-3


def test_parse_duration_go_style() -> None:
    assert parse_duration("6m0s") == 360
    assert parse_duration("12ms") == 0.012
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("0.5") == 0.5
    assert parse_duration("soon") is None


def test_openai_headers() -> None:
    info = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert (info.limit_requests, info.remaining_requests, info.reset_requests) == (60, 59, 1)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens) == (150000, 149984, 360)
    assert info.retry_after is None


def test_anthropic_headers_and_retry_after_forms() -> None:
    now = datetime(2025, 8, 21, 12, 40, 0, tzinfo=UTC)
    info = parse_rate_limit_headers(
        [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "100"),
            ("retry-after", "7"),
        ],
        now=now.timestamp(),
    )
    assert info.remaining_requests == 0 and info.reset_requests == 59
    assert info.remaining_tokens == 100
    assert info.retry_after == 7
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_rate_limit_headers({"retry-after": date}, now=now.timestamp()).retry_after == 30
    assert (
        parse_rate_limit_headers({"retry-after-ms": "250", "retry-after": "1"}).retry_after == 0.25
    )
    litellm = parse_rate_limit_headers({"llm_provider-x-ratelimit-remaining-tokens": "5"})
    assert litellm.remaining_tokens == 5
    assert (
        parse_rate_limit_headers({"x-ratelimit-remaining-tokens": "lots"}).remaining_tokens is None
    )
