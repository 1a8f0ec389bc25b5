"""Provider rate-limit headers, normalised to seconds and counts.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with Go durations
(``6m0s``, ``12ms``); Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,
output-tokens}-{limit,remaining,reset}`` with RFC 3339 timestamps; both send ``retry-after``
(seconds or an HTTP date), and some gateways ``retry-after-ms`` / ``x-ms-retry-after-ms``.
LiteLLM copies originals under an ``llm_provider-`` prefix, which is stripped. Missing or
malformed headers are simply absent from the result: headers are advice, never a crash.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["RateLimitHeaders", "parse_duration", "parse_rate_limit_headers"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What the provider said; every field is None when it was not said."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration (``1m30.5s``, ``12ms``) or a bare number of seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _reset(text: str, now: float) -> float | None:
    """A reset is a duration (OpenAI) or an RFC 3339 timestamp (Anthropic)."""
    duration = parse_duration(text)
    if duration is not None:
        return duration
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def _retry_after(values: Mapping[str, str], now: float) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in values:
            try:
                return max(0.0, float(values[name]) / 1000)
            except ValueError:
                pass
    text = values.get("retry-after")
    if text is None:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def _number(values: Mapping[str, str], name: str) -> float | None:
    text = values.get(name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _items(headers: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(headers, Mapping) or hasattr(headers, "items"):
        return list(headers.items())
    return list(headers)


def parse_rate_limit_headers(headers: Any, now: float | None = None) -> RateLimitHeaders:
    """Read a mapping (dict, ``httpx.Headers``, aiohttp headers) or ``(name, value)`` pairs."""
    now = time.time() if now is None else now
    values: dict[str, str] = {}
    for key, value in _items(headers):
        name = str(key).lower().removeprefix("llm_provider-")
        values.setdefault(name, str(value))
    fields: dict[str, float | None] = {}
    for kind in ("requests", "tokens"):
        names = [f"x-ratelimit-{{}}-{kind}", f"anthropic-ratelimit-{kind}-{{}}"]
        if kind == "tokens":
            names.append("anthropic-ratelimit-input-tokens-{}")
        for pattern in names:
            limit = _number(values, pattern.format("limit"))
            remaining = _number(values, pattern.format("remaining"))
            reset_text = values.get(pattern.format("reset"))
            if limit is None and remaining is None and reset_text is None:
                continue
            fields[f"limit_{kind}"] = limit
            fields[f"remaining_{kind}"] = remaining
            fields[f"reset_{kind}"] = None if reset_text is None else _reset(reset_text, now)
            break
    return RateLimitHeaders(retry_after=_retry_after(values, now), **fields)
