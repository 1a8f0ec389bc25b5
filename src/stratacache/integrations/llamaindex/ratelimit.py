"""``RateLimiter``: LlamaIndex's native ``rate_limiter`` slot, on :mod:`stratacache.ratelimit`.

LlamaIndex calls ``rate_limiter.acquire()`` inside every decorated LLM/embedding call but never
passes a token count, so its own limiter cannot enforce TPM. This one can, because our wrappers
open a *metered scope* (a context variable) around each call they forward to the model:

* at acquire time the scope supplies an estimate (prompt tokens from LlamaIndex's tokenizer
  plus the completion budget; for embeddings the texts' token count);
* after the call, the wrapper settles the lease with the usage the provider reported;
* a scope charges one request per forwarded call, even though ``CustomLLM.chat`` calls
  ``acquire`` twice (once for ``chat``, once for the ``complete`` it delegates to).

Attach it to the **inner** model (``OpenAI(..., rate_limiter=RateLimiter(...))``) and wrap that
model: cache hits never reach the inner model, so they take no budget. Used without a wrapper,
each request is charged ``tokens_per_request`` (a moving average once usage was seen).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

from llama_index.core.rate_limiter import BaseRateLimiter

from stratacache.ratelimit import Lease
from stratacache.ratelimit import RateLimiter as CoreRateLimiter

__all__ = ["RateLimiter", "metered", "usage_of"]


class _Scope:
    __slots__ = ("estimate", "leases")

    def __init__(self, estimate: Callable[[], int]) -> None:
        self.estimate = estimate
        self.leases: list[tuple[RateLimiter, Lease]] = []


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "stratacache_llamaindex_scope", default=None
)


@contextlib.contextmanager
def metered(model: Any, estimate: Callable[[], int]) -> Iterator[_Scope | None]:
    """Open a scope around a forwarded call if ``model`` uses our limiter (else do nothing)."""
    if not isinstance(getattr(model, "rate_limiter", None), RateLimiter):
        yield None
        return
    scope = _Scope(estimate)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def settle(scope: _Scope | None, tokens: int | None) -> None:
    """Settle a scope's grant with the real token count (a no-op when unknown)."""
    if scope is None:
        return
    for limiter, lease in scope.leases:
        limiter._observe(lease, tokens)
    scope.leases.clear()


def usage_of(response: Any) -> int | None:
    """Total tokens a LlamaIndex response reports (OpenAI-style ``additional_kwargs``)."""
    extra = getattr(response, "additional_kwargs", None) or {}
    total = extra.get("total_tokens") if isinstance(extra, dict) else None
    if isinstance(total, int) and total > 0:
        return total
    if isinstance(extra, dict):
        parts = [extra.get("prompt_tokens"), extra.get("completion_tokens")]
        if all(isinstance(p, int) for p in parts) and sum(parts) > 0:  # type: ignore[arg-type]
            return int(sum(parts))  # type: ignore[arg-type]
    usage = getattr(getattr(response, "raw", None), "usage", None)
    total = getattr(usage, "total_tokens", None)
    return total if isinstance(total, int) and total > 0 else None


class RateLimiter(BaseRateLimiter):
    """``OpenAI(..., rate_limiter=RateLimiter(rpm=500, tpm=200_000))``; ``redis_url=`` shares it.

    :param rpm: requests per minute (None: unlimited).
    :param tpm: tokens per minute (None: unlimited).
    :param redis_url: share the budgets across processes (same ``name`` and URL).
    :param name: the budget's identity (one per provider/model/API key).
    :param tokens_per_request: the charge for calls made outside a stratacache wrapper, until
        real usage has been observed.
    :param limiter: use an existing :class:`stratacache.ratelimit.RateLimiter` instead.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        redis_url: str | None = None,
        name: str = "llamaindex",
        tokens_per_request: int = 1000,
        limiter: CoreRateLimiter | None = None,
    ) -> None:
        self.limiter = limiter or CoreRateLimiter(rpm=rpm, tpm=tpm, redis_url=redis_url, name=name)
        self.estimate = float(tokens_per_request)
        self._observed = 0
        self._lock = threading.Lock()
        self.acquired = 0
        self.tokens_charged = 0

    def __repr__(self) -> str:
        return f"<stratacache.llamaindex.RateLimiter {self.limiter!r}>"

    def _plan(self, num_tokens: int) -> tuple[_Scope | None, int] | None:
        """``(scope, tokens to charge)``, or None when this acquire is a duplicate in a scope."""
        scope = _scope.get()
        if scope is not None and any(lim is self for lim, _ in scope.leases):
            return None
        if self.limiter.tpm is None:
            return scope, 0
        if num_tokens > 0:
            tokens = num_tokens
        elif scope is not None:
            try:
                tokens = int(scope.estimate())
            except Exception:
                tokens = int(self.estimate)
        else:
            tokens = int(self.estimate)
        return scope, max(1, min(tokens, int(self.limiter.max_request_tokens)))

    def _granted(self, scope: _Scope | None, lease: Lease) -> None:
        with self._lock:
            self.acquired += 1
            self.tokens_charged += lease.tokens
        if scope is not None:
            scope.leases.append((self, lease))

    def _observe(self, lease: Lease, tokens: int | None) -> None:
        if tokens is not None:
            with self._lock:
                self._observed += 1
                weight = 1.0 / min(self._observed, 20)
                self.estimate = (1 - weight) * self.estimate + weight * tokens
                self.tokens_charged += tokens - lease.tokens if self.limiter.tpm else 0
            if self.limiter.tpm is not None:
                lease.settle(tokens)
        self.limiter.record_success()

    def acquire(self, num_tokens: int = 0) -> None:
        plan = self._plan(num_tokens)
        if plan is None:
            return
        scope, tokens = plan
        self._granted(scope, self.limiter.acquire(tokens=tokens))

    async def async_acquire(self, num_tokens: int = 0) -> None:
        plan = self._plan(num_tokens)
        if plan is None:
            return
        scope, tokens = plan
        self._granted(scope, await self.limiter.aacquire(tokens=tokens))
