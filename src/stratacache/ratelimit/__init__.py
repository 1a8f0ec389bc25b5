"""Client-side rate limiting for LLM calls: RPM and TPM together, local or shared via Redis.

::

    from stratacache.ratelimit import RateLimiter

    limiter = RateLimiter(rpm=500, tpm=200_000)            # redis_url="redis://..." to share
    with limiter.acquire(tokens=estimate) as lease:         # async: async with limiter.aacquire()
        response = client.chat.completions.with_raw_response.create(...)
        limiter.observe_headers(response.headers)           # clamp to the provider's view
        lease.settle(response.parse().usage.total_tokens)   # refund the over-estimate

Budgets are smoothed token buckets (GCRA) holding one second's worth of each rate by default.
Each request reserves its slot on arrival and sleeps once, so callers are served in order and
large requests are not starved. A request larger than the per-minute token budget raises
:class:`~stratacache.errors.RequestTooLargeError` instead of hanging. A 429 (via
``observe_headers(headers, status=429)`` or :meth:`RateLimiter.record_throttle`) pauses every
waiter once, for ``retry-after``, and halves the rate; successes restore it step by step.

With ``redis_url``, one Lua script checks and charges both budgets atomically on the server's
clock, with Redis-Cluster-safe hash-tagged keys. If Redis fails, the limiter limits locally,
logs one warning, and retries Redis later.
"""

from __future__ import annotations

from stratacache.errors import RateLimitTimeout, RequestTooLargeError
from stratacache.ratelimit._headers import (
    RateLimitHeaders,
    parse_duration,
    parse_rate_limit_headers,
)
from stratacache.ratelimit._limiter import Lease, RateLimiter

__all__ = [
    "Lease",
    "RateLimitHeaders",
    "RateLimitTimeout",
    "RateLimiter",
    "RequestTooLargeError",
    "parse_duration",
    "parse_rate_limit_headers",
]
