"""Which errors are worth retrying, and how long to wait before the retry."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stratacache.ratelimit._headers import parse_rate_limit_headers

__all__ = ["Retry", "is_transient", "retry_after_of"]


def _status(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        status = getattr(obj, "status_code", None) or getattr(obj, "status", None)
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and dropped connections: the same call may work."""
    status = _status(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    return isinstance(exc, TimeoutError | ConnectionError)


def retry_after_of(exc: BaseException) -> float | None:
    """The provider's ``retry-after`` carried by an SDK exception, if any."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float):
        return float(value)
    headers = getattr(getattr(exc, "response", None), "headers", None) or getattr(
        exc, "headers", None
    )
    if headers is None:
        return None
    try:
        return parse_rate_limit_headers(headers).retry_after
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Retry:
    """Exponential back-off with jitter that defers to the provider's ``retry-after``.

    ``attempts`` counts the first try: ``Retry(attempts=3)`` calls at most three times.
    Full jitter (a uniform fraction of the back-off) keeps a crowd of failed callers from
    retrying in lockstep; a ``retry-after`` is honoured as given, capped by ``max_delay``.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_on: Callable[[BaseException], bool] = field(default=is_transient)

    def delay(self, attempt: int, exc: BaseException, rng: Any = random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        hinted = retry_after_of(exc)
        if hinted is not None:
            return min(self.max_delay, hinted)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(backoff * (0.5 + 0.5 * rng.random()))
