"""``RateLimiter``: LangChain's ``BaseRateLimiter`` on :mod:`stratacache.ratelimit` (RPM + TPM).

LangChain calls ``acquire()`` with no request details, after the cache lookup (so cache hits
never take budget) and before the provider call. Token counts are therefore *estimated* at
acquire time: ``tokens_per_request`` at first, then a moving average of the usage the model
actually reported. Attach :attr:`RateLimiter.usage_handler` as a callback to feed that average
and to settle each grant against the real usage (refunding or charging the difference); the
settlement is matched to grants in FIFO order, which is exact for sequential calls and an
approximation for concurrent ones. 429 errors seen by the handler pause and slow the limiter.
"""

from __future__ import annotations

import collections
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.rate_limiters import BaseRateLimiter

from stratacache.errors import RateLimitTimeout
from stratacache.ratelimit import Lease
from stratacache.ratelimit import RateLimiter as CoreRateLimiter

__all__ = ["RateLimiter"]


def _usage(response: LLMResult) -> tuple[int | None, bool]:
    """``(total tokens or None, served from cache?)`` of a model response."""
    total = 0
    found = False
    cached = False
    for gens in response.generations:
        for gen in gens[:1]:
            usage = getattr(getattr(gen, "message", None), "usage_metadata", None)
            if usage:
                found = True
                total += int(usage.get("total_tokens") or 0)
                # LangChain marks cache hits by zeroing the cost on the cached usage.
                cached = cached or usage.get("total_cost") == 0
    if not found and isinstance(response.llm_output, dict):
        usage = response.llm_output.get("token_usage") or {}
        if isinstance(usage, dict) and usage.get("total_tokens") is not None:
            return int(usage["total_tokens"]), False
    return (total if found else None), cached


class _UsageHandler(BaseCallbackHandler):
    def __init__(self, owner: RateLimiter) -> None:
        self.owner = owner

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        tokens, cached = _usage(response)
        if not cached:
            self.owner._observe(tokens)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.owner._observe_error(error)


class RateLimiter(BaseRateLimiter):
    """``ChatOpenAI(rate_limiter=RateLimiter(rpm=500, tpm=200_000), callbacks=[rl.usage_handler])``.

    :param rpm: requests per minute (None: unlimited).
    :param tpm: tokens per minute (None: unlimited); needs a token estimate per request.
    :param redis_url: share the budgets across processes (same ``name`` and URL).
    :param name: the budget's identity (one per provider/model/API key).
    :param tokens_per_request: the estimate charged until real usage has been observed.
    :param limiter: use an existing :class:`stratacache.ratelimit.RateLimiter` instead.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        redis_url: str | None = None,
        name: str = "langchain",
        tokens_per_request: int = 1000,
        limiter: CoreRateLimiter | None = None,
    ) -> None:
        self.limiter = limiter or CoreRateLimiter(rpm=rpm, tpm=tpm, redis_url=redis_url, name=name)
        self.estimate = float(tokens_per_request)
        self._observed = 0
        self._leases: collections.deque[Lease] = collections.deque(maxlen=4096)
        self._lock = threading.Lock()
        self.usage_handler = _UsageHandler(self)
        self.acquired = 0

    def _tokens(self) -> int:
        if self.limiter.tpm is None:
            return 0
        return max(1, min(int(self.estimate), int(self.limiter.max_request_tokens)))

    def _granted(self, lease: Lease) -> bool:
        with self._lock:
            self._leases.append(lease)
            self.acquired += 1
        return True

    def _observe(self, tokens: int | None) -> None:
        with self._lock:
            lease = self._leases.popleft() if self._leases else None
            if tokens is not None:
                self._observed += 1
                weight = 1.0 / min(self._observed, 20)
                self.estimate = (1 - weight) * self.estimate + weight * tokens
        if lease is not None and tokens is not None:
            lease.settle(tokens)
        self.limiter.record_success()

    def _observe_error(self, error: BaseException) -> None:
        with self._lock:
            if self._leases:
                self._leases.popleft()
        status = getattr(error, "status_code", None)
        response = getattr(error, "response", None)
        if status == 429:
            headers = getattr(response, "headers", None)
            if headers is not None:
                self.limiter.observe_headers(headers, status=429)
            else:
                self.limiter.record_throttle()

    def acquire(self, *, blocking: bool = True) -> bool:
        try:
            lease = self.limiter.acquire(tokens=self._tokens(), timeout=None if blocking else 0.0)
        except RateLimitTimeout:
            return False
        return self._granted(lease)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        try:
            lease = await self.limiter.aacquire(
                tokens=self._tokens(), timeout=None if blocking else 0.0
            )
        except RateLimitTimeout:
            return False
        return self._granted(lease)
