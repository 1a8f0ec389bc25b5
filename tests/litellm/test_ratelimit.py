"""RateLimitCallback: budget only for provider calls, headers and 429s fed back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import litellm
import pytest
from litellm.exceptions import RateLimitError

import stratacache as sc
import stratacache.litellm as scl
from stratacache.ratelimit import RateLimiter
from stratacache.testing import OpenAICompatServer
from tests.litellm.conftest import via

MODEL = "openai/gpt-4o-mini"
MSGS = [{"role": "user", "content": "limit me"}]


class Spy(RateLimiter):
    """A real limiter that records what it was asked for."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.charged: list[int] = []
        self.headers: list[Any] = []
        # 429s: the limiter's own `throttles` counter (each record_throttle and each 429 seen
        # by observe_headers adds one)

    def acquire(self, tokens: int = 0, timeout: float | None = None) -> Any:
        self.charged.append(tokens)
        return super().acquire(tokens, timeout)

    def aacquire(self, tokens: int = 0, timeout: float | None = None) -> Any:
        self.charged.append(tokens)
        return super().aacquire(tokens, timeout)

    def observe_headers(self, headers: Any, status: int | None = None) -> None:
        self.headers.append((dict(headers), status))
        super().observe_headers(headers, status)


def settled(spy: Spy, n: int) -> None:
    for _ in range(100):  # sync success callbacks run on litellm's logging thread pool
        if len(spy.headers) >= n:
            return
        time.sleep(0.02)


def test_sync_hits_never_consume_budget(tiered: sc.TieredCache, server: OpenAICompatServer) -> None:
    spy = Spy(rpm=6000, tpm=1_000_000)
    server.rpm = 100_000  # the server sends x-ratelimit-* headers when it enforces limits
    scl.install(tiered, rate_limits={"gpt-4o-mini": spy})
    for _ in range(3):
        litellm.completion(**via(server, model=MODEL, messages=MSGS))
    assert len(spy.charged) == 1 and spy.charged[0] > 0
    assert server.stats.requests["chat"] == 1
    settled(spy, 1)
    headers, status = spy.headers[0]
    assert "x-ratelimit-remaining-requests" in headers and status is None


async def test_async_hits_never_consume_budget(
    tiered: sc.TieredCache, server: OpenAICompatServer
) -> None:
    spy = Spy(rpm=6000, tpm=1_000_000)
    server.tpm = 10_000_000
    scl.install(tiered, rate_limits={"*": spy})
    await litellm.acompletion(**via(server, model=MODEL, messages=MSGS))
    await asyncio.sleep(0.1)
    for _ in range(2):
        hit = await litellm.acompletion(**via(server, model=MODEL, messages=MSGS))
        assert hit._hidden_params["cache_hit"] is True
    assert len(spy.charged) == 1
    await asyncio.sleep(0.05)
    assert spy.headers and "x-ratelimit-remaining-tokens" in spy.headers[0][0]


async def test_async_embeddings_charge_only_uncached_items(
    tiered: sc.TieredCache, server: OpenAICompatServer
) -> None:
    spy = Spy(tpm=1_000_000)
    scl.install(tiered, rate_limits={"text-embedding-3-small": spy})
    emb = "openai/text-embedding-3-small"
    long_text = "word " * 200
    await litellm.aembedding(**via(server, model=emb, input=[long_text]))
    await asyncio.sleep(0.1)
    await litellm.aembedding(**via(server, model=emb, input=[long_text, "x"]))
    assert len(spy.charged) == 2 and spy.charged[1] < spy.charged[0] / 10


def test_limiter_waits(tiered: sc.TieredCache, server: OpenAICompatServer) -> None:
    scl.install(tiered, rate_limits={"gpt-4o-mini": {"rpm": 600}})  # 10/s, burst of 10
    start = time.monotonic()
    for i in range(14):
        messages = [{"role": "user", "content": f"q{i}"}]
        litellm.completion(**via(server, model=MODEL, messages=messages))
    assert time.monotonic() - start >= 0.3  # 4 requests beyond the burst, 0.1 s apart


def test_provider_429_pauses_the_limiter(
    tiered: sc.TieredCache, server: OpenAICompatServer
) -> None:
    spy = Spy(rpm=6000)
    scl.install(tiered, rate_limits={"gpt-4o-mini": spy})
    server.fail_next(1, status=429)
    with pytest.raises(RateLimitError):
        litellm.completion(**via(server, model=MODEL, messages=MSGS, max_retries=0))
    settled(spy, 1)
    assert any(status == 429 for _, status in spy.headers) or spy.throttles == 1


def test_mock_rate_limit_error_throttles(tiered: sc.TieredCache) -> None:
    spy = Spy(rpm=6000)
    scl.install(tiered, rate_limits={"gpt-4o-mini": spy})
    with pytest.raises(RateLimitError):
        litellm.completion(
            model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError"
        )
    for _ in range(100):
        if spy.throttles or spy.headers:
            break
        time.sleep(0.02)
    assert spy.throttles == 1 or any(status == 429 for _, status in spy.headers)
    assert spy.factor < 1.0


def test_bad_rate_limits_are_rejected() -> None:
    with pytest.raises(sc.ConfigurationError):
        scl.RateLimitCallback({})
    with pytest.raises(sc.ConfigurationError):
        scl.RateLimitCallback({"m": 5})  # type: ignore[dict-item]
