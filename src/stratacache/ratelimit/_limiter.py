"""The public :class:`RateLimiter`: reservation, waiting, settling, and feedback from headers."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar

from stratacache.errors import ConfigurationError, RateLimitTimeout, RequestTooLargeError
from stratacache.ratelimit._backends import LocalBudget, RedisBudget
from stratacache.ratelimit._gcra import Limit
from stratacache.ratelimit._headers import RateLimitHeaders, parse_rate_limit_headers

__all__ = ["Lease", "RateLimiter"]

log = logging.getLogger("stratacache.ratelimit")
T = TypeVar("T")

_MIN_FACTOR = 0.1  # AIMD never drops below a tenth of the configured rate
_DEFAULT_PAUSE = 1.0  # a 429 that names no wait at all


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets, smoothed, shared and adaptive.

    Budgets refill continuously and hold ``burst`` seconds' worth of each rate (one second by
    default), because providers enforce per-minute limits over much shorter windows: a full
    minute's burst up front is how clients earn 429s. See ``docs/ratelimit.md``.

    :param rpm: requests per minute, or None for no request limit.
    :param tpm: tokens per minute, or None for no token limit (``tokens=`` is then ignored).
    :param burst: seconds' worth of each rate the bucket holds (>= 1 request either way).
    :param redis_url: share the budgets with every process using the same ``name`` and URL
        (``redis://``, ``rediss://``, ``redis+cluster://h:p,h:p``).
    :param name: the budget's identity in Redis; use one name per provider/model/key.
    :param retry_redis_after: seconds of local limiting after a Redis failure before retrying.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        burst: float | None = None,
        redis_url: str | None = None,
        name: str = "default",
        *,
        redis_timeout: float = 0.25,
        retry_redis_after: float = 5.0,
        aimd_increase: float = 0.05,
    ) -> None:
        for label, value in (("rpm", rpm), ("tpm", tpm), ("burst", burst)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= 0
            ):  # fmt: skip
                raise ConfigurationError(
                    f"{label} must be a positive number or None, not {value!r}"
                )
        if not name:
            raise ConfigurationError("name must be a non-empty string")
        self.rpm = rpm
        self.tpm = tpm
        self.burst = 1.0 if burst is None else float(burst)
        self.name = name
        self.aimd_increase = aimd_increase
        #: requests that had to wait, total seconds waited, 429s recorded (stratacache.metrics)
        self.waits = 0
        self.wait_seconds = 0.0
        self.throttles = 0
        self.max_request_tokens = max(tpm, tpm / 60 * self.burst) if tpm else math.inf
        self._local = LocalBudget()
        self._redis = RedisBudget(redis_url, name, redis_timeout) if redis_url else None
        self._retry_redis_after = retry_redis_after
        self._redis_down_until = 0.0
        self._redis_warned = False
        self._redis_used = False
        self._lock = threading.Lock()
        self._factor = 1.0
        self._last_decrease = -math.inf
        self._pause_until = 0.0
        self._shift_total = 0.0

    def __repr__(self) -> str:
        where = "redis" if self._redis is not None else "local"
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm}, name={self.name!r}, {where})"

    # -- shared, non-blocking pieces ---------------------------------------------------------

    @property
    def factor(self) -> float:
        """The AIMD multiplier on the configured rates (1.0 until a 429 is seen)."""
        return self._factor

    @property
    def degraded(self) -> bool:
        """True while a Redis limiter is limiting locally because Redis failed."""
        return self._redis is not None and time.monotonic() < self._redis_down_until

    def _limits(self) -> tuple[Limit | None, Limit | None]:
        factor = self._factor
        out: list[Limit | None] = []
        for per_minute, floor in ((self.rpm, 1.0), (self.tpm, 0.0)):
            if per_minute is None:
                out.append(None)
                continue
            rate = per_minute / 60.0
            out.append(Limit(rate * factor, max(floor, rate * self.burst)))
        return out[0], out[1]

    def _costs(self, tokens: int) -> tuple[float, float]:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ConfigurationError(f"tokens must be a non-negative int, not {tokens!r}")
        if tokens > self.max_request_tokens:
            raise RequestTooLargeError(
                f"a request of {tokens} tokens can never fit a {self.tpm} tokens-per-minute "
                f"budget (largest possible request: {int(self.max_request_tokens)} tokens); "
                "split the request or raise tpm"
            )
        return 1.0, float(tokens if self.tpm else 0)

    def _pick(self) -> Any:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            return self._redis
        return self._local

    def _ok(self, budget: Any) -> None:
        if budget is self._redis:
            self._redis_used = True
            if self._redis_warned:
                self._redis_warned = False
                log.warning("rate limiter %r: Redis is back; limits are shared again", self.name)

    def _rejoin(self) -> tuple[Any, ...] | None:
        """Back on Redis after limiting locally: the shared buckets are first brought down to
        what the local ones have left (see :meth:`RedisBudget.rejoin`)."""
        if not self._redis_warned:
            return None
        limits = self._limits()
        return limits, self._local.remaining(limits)

    def _failed(self, exc: BaseException) -> None:
        self._redis_down_until = time.monotonic() + self._retry_redis_after
        if not self._redis_warned:
            if self._redis_used and self._redis is not None:
                # The shared burst was most likely spent: a full local one would be a second.
                self._local.drain(self._limits(), self._redis.granted_until)
            self._redis_warned = True
            log.warning(
                "rate limiter %r: Redis unreachable (%s); limiting in this process only "
                "and retrying Redis every %.0fs",
                self.name, exc, self._retry_redis_after,
            )  # fmt: skip

    def _run(self, op: str, *args: Any) -> tuple[Any, Any]:
        budget = self._pick()
        if budget is self._redis:
            try:
                if (rejoin := self._rejoin()) is not None:
                    self._redis.rejoin(*rejoin)
                result = getattr(budget, op)(*args)
            except self._redis.errors as exc:
                self._failed(exc)
                budget = self._local
            else:
                self._ok(budget)
                return result, budget
        return getattr(budget, op)(*args), budget

    async def _arun(self, op: str, *args: Any) -> tuple[Any, Any]:
        budget = self._pick()
        if budget is self._redis:
            try:
                if (rejoin := self._rejoin()) is not None:
                    await self._redis.arejoin(*rejoin)
                result = await getattr(budget, "a" + op)(*args)
            except self._redis.errors as exc:
                self._failed(exc)
                budget = self._local
            else:
                self._ok(budget)
                return result, budget
        return getattr(budget, op)(*args), budget

    def _sleeps(self, wait: float) -> Generator[float, None, None]:
        """How long to sleep, again and again, until the reserved slot (moved by pauses) comes.

        A generator so that ``acquire`` and ``aacquire`` share it and differ only in the sleep.
        """
        target = time.monotonic() + wait
        shifted = self._shift_total
        while True:
            left = target + (self._shift_total - shifted) - time.monotonic()
            if left <= 0:
                return
            yield left

    # -- acquiring ---------------------------------------------------------------------------

    def acquire(self, tokens: int = 0, timeout: float | None = None) -> Lease:
        """Block until the request fits both budgets; returns a :class:`Lease` (a context manager).

        Raises :class:`RequestTooLargeError` at once for a request that can never fit, and
        :class:`RateLimitTimeout` at once when the wait would exceed ``timeout``.
        """
        costs = self._costs(tokens)
        limits = self._limits()
        (ok, wait), budget = self._run("reserve", limits, costs, timeout)
        if not ok:
            raise RateLimitTimeout(f"rate limit wait of {wait:.2f}s exceeds timeout={timeout}")
        self._count_wait(wait)
        lease = Lease(self, budget, limits, tokens, max(0.0, wait), asynchronous=False)
        try:
            for left in self._sleeps(wait):
                time.sleep(left)
        except BaseException:
            lease._cancel()
            raise
        return lease

    def aacquire(self, tokens: int = 0, timeout: float | None = None) -> _Acquiring:
        """``async with limiter.aacquire(tokens=n) as lease`` (or ``lease = await ...``)."""
        costs = self._costs(tokens)  # validate now: a too-large request fails before any await
        return _Acquiring(self._aacquire(tokens, costs, timeout))

    async def _aacquire(
        self,
        tokens: int,
        costs: tuple[float, float],
        timeout: float | None,  # noqa: ASYNC109 - bounds the reservation, decided at once
    ) -> Lease:
        limits = self._limits()
        (ok, wait), budget = await self._arun("reserve", limits, costs, timeout)
        if not ok:
            raise RateLimitTimeout(f"rate limit wait of {wait:.2f}s exceeds timeout={timeout}")
        self._count_wait(wait)
        lease = Lease(self, budget, limits, tokens, max(0.0, wait), asynchronous=True)
        try:
            for left in self._sleeps(wait):
                await asyncio.sleep(left)
        except BaseException:
            await lease._acancel()
            raise
        return lease

    def _count_wait(self, wait: float) -> None:
        if wait > 0:
            with self._lock:
                self.waits += 1
                self.wait_seconds += wait

    # -- feedback ----------------------------------------------------------------------------

    def _throttle_plan(self, retry_after: float | None) -> float:
        """Record a 429 locally (AIMD decrease, in-process pause); returns the pause length."""
        seconds = _DEFAULT_PAUSE if retry_after is None else max(0.0, retry_after)
        now = time.monotonic()
        with self._lock:
            self.throttles += 1
            if now - self._last_decrease >= max(1.0, seconds):
                self._factor = max(_MIN_FACTOR, self._factor / 2)
                self._last_decrease = now
            start = max(self._pause_until, now)
            until = max(self._pause_until, now + seconds)
            self._shift_total += max(0.0, until - start)
            self._pause_until = until
        return seconds

    def record_success(self) -> None:
        """A call went through: the AIMD factor creeps back towards the configured rate."""
        if self._factor < 1.0:
            with self._lock:
                self._factor = min(1.0, self._factor + self.aimd_increase)

    def record_throttle(self, retry_after: float | None = None) -> None:
        """The provider said 429: everyone pauses once, together, and the rate halves."""
        self._run("pause", self._throttle_plan(retry_after))

    async def arecord_throttle(self, retry_after: float | None = None) -> None:
        await self._arun("pause", self._throttle_plan(retry_after))

    def _feedback(self, headers: Any, status: int | None) -> tuple[str, Any]:
        info: RateLimitHeaders = parse_rate_limit_headers(headers)
        if status == 429 or (status is None and info.retry_after is not None):
            retry = info.retry_after
            if retry is None:
                resets = [
                    r for r, left in ((info.reset_requests, info.remaining_requests),
                                      (info.reset_tokens, info.remaining_tokens))
                    if r is not None and left is not None and left <= 0
                ]  # fmt: skip
                retry = max(resets) if resets else None
            return "pause", self._throttle_plan(retry)
        if status is not None and status >= 400:
            return "none", None
        self.record_success()
        limits = self._limits()
        remaining = (info.remaining_requests, info.remaining_tokens)
        # Providers round ``remaining`` down and count it before our in-flight requests land,
        # so one unit of slack keeps clamping from wasting a slot on every response.
        slack = tuple(None if r is None else r + 1 for r in remaining)
        unlimited_empty = [
            reset
            for limit, left, reset in zip(
                limits, remaining, (info.reset_requests, info.reset_tokens), strict=True
            )
            if limit is None and left is not None and left <= 0 and reset
        ]
        if unlimited_empty:  # no local budget for it, but the provider says it is empty
            return "pause", self._throttle_plan_no_decrease(max(unlimited_empty))
        if any(
            left is not None and limit is not None
            for limit, left in zip(limits, remaining, strict=True)
        ):
            return "clamp", (limits, slack)
        return "none", None

    def _throttle_plan_no_decrease(self, seconds: float) -> float:
        now = time.monotonic()
        with self._lock:
            start = max(self._pause_until, now)
            until = max(self._pause_until, now + seconds)
            self._shift_total += max(0.0, until - start)
            self._pause_until = until
        return seconds

    def observe_headers(self, headers: Any, status: int | None = None) -> None:
        """Feed a provider response back: clamp to ``remaining``, pause on 429 / ``retry-after``.

        ``headers`` is any mapping or list of pairs (``httpx.Headers``, a dict, LiteLLM's
        ``additional_headers``). ``status`` is the HTTP status if known; without it, a
        ``retry-after`` header alone marks a throttle.
        """
        op, args = self._feedback(headers, status)
        if op == "pause":
            self._run("pause", args)
        elif op == "clamp":
            self._run("clamp", *args)

    async def aobserve_headers(self, headers: Any, status: int | None = None) -> None:
        op, args = self._feedback(headers, status)
        if op == "pause":
            await self._arun("pause", args)
        elif op == "clamp":
            await self._arun("clamp", *args)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Lease:
    """A granted request. ``settle(actual_tokens)`` refunds (or charges) the estimate's error.

    Settling happens at most once. In ``async with`` blocks on a Redis budget, the refund is
    sent in the background and awaited when the block exits.
    """

    def __init__(
        self, limiter: RateLimiter, budget: Any, limits: tuple[Limit | None, Limit | None],
        tokens: int, waited: float, *, asynchronous: bool,
    ) -> None:  # fmt: skip
        self.limiter = limiter
        self.tokens = tokens
        self.waited = waited
        """Seconds this request waited for its slot (before any pause moved it)."""
        self.settled: int | None = None
        self._budget = budget
        self._limits = limits
        self._asynchronous = asynchronous
        self._pending: list[asyncio.Task[Any]] = []

    def _refund_args(self, actual: int) -> tuple[Any, tuple[float, float]] | None:
        if isinstance(actual, bool) or not isinstance(actual, int) or actual < 0:
            raise ConfigurationError(f"actual_tokens must be a non-negative int, not {actual!r}")
        if self.settled is not None:
            return None
        self.settled = actual
        if self._limits[1] is None or actual == self.tokens:
            return None
        return self._limits, (0.0, float(self.tokens - actual))

    def settle(self, actual_tokens: int) -> None:
        args = self._refund_args(actual_tokens)
        if args is None:
            return
        if self._asynchronous and self._budget is not self.limiter._local:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._pending.append(loop.create_task(self._safe_aadjust(*args)))
                return
        self._safe_adjust(*args)

    async def asettle(self, actual_tokens: int) -> None:
        args = self._refund_args(actual_tokens)
        if args is not None:
            await self._safe_aadjust(*args)

    def _safe_adjust(self, limits: Any, amounts: Any) -> None:
        try:
            self._budget.adjust(limits, amounts)
        except Exception as exc:  # a lost refund only makes the limiter a little conservative
            log.debug("rate limiter %r: refund failed: %s", self.limiter.name, exc)

    async def _safe_aadjust(self, limits: Any, amounts: Any) -> None:
        try:
            await self._budget.aadjust(limits, amounts)
        except Exception as exc:
            log.debug("rate limiter %r: refund failed: %s", self.limiter.name, exc)

    def _cancel(self) -> None:
        self._safe_adjust(self._limits, (1.0, float(self.tokens)))
        self.settled = 0

    async def _acancel(self) -> None:
        await asyncio.shield(self._safe_aadjust(self._limits, (1.0, float(self.tokens))))
        self.settled = 0

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if exc_type is None:
            self.limiter.record_success()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
            self._pending.clear()
        if exc_type is None:
            self.limiter.record_success()


class _Acquiring:
    """What ``aacquire`` returns: awaitable, and an async context manager yielding the lease."""

    def __init__(self, coro: Coroutine[Any, Any, Lease]) -> None:
        self._coro = coro
        self._lease: Lease | None = None
        self._started = False

    def __await__(self) -> Generator[Any, None, Lease]:
        self._started = True
        return self._coro.__await__()

    async def __aenter__(self) -> Lease:
        self._started = True
        self._lease = await self._coro
        return self._lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)

    def __del__(self) -> None:
        # An ``aacquire()`` that was never awaited must not warn "coroutine never awaited".
        if not self._started:
            self._coro.close()
