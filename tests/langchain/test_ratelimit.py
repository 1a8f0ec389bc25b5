"""RateLimiter: LangChain's rate_limiter hook on stratacache.ratelimit."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

import stratacache as sc
from stratacache.langchain import LLMCache, RateLimiter, cache_streaming
from stratacache.testing import OpenAICompatServer


def test_cache_hits_take_no_budget(memory_cache: sc.TieredCache) -> None:
    limiter = RateLimiter(rpm=6000)
    model = FakeListChatModel(
        responses=["a", "b"], cache=LLMCache(memory_cache), rate_limiter=limiter
    )
    for _ in range(3):
        model.invoke("same")
    assert limiter.acquired == 1
    streaming = cache_streaming(model)
    list(streaming.stream("same"))  # served from the cache: no acquire
    assert limiter.acquired == 1


def test_non_blocking_acquire_reports_no_slot() -> None:
    limiter = RateLimiter(rpm=60)  # one request per second, burst of one
    assert limiter.acquire(blocking=False)
    assert not limiter.acquire(blocking=False)


async def test_async_acquire() -> None:
    limiter = RateLimiter(rpm=6000, tpm=1_000_000)
    assert await limiter.aacquire()
    assert limiter.acquired == 1


def test_usage_settles_the_estimate(server: OpenAICompatServer) -> None:
    limiter = RateLimiter(rpm=6000, tpm=600_000, tokens_per_request=5000)
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=server.base_url, api_key="test", max_retries=0,  # type: ignore[arg-type]
        rate_limiter=limiter, callbacks=[limiter.usage_handler],
    )  # fmt: skip
    for i in range(3):
        reply = model.invoke(f"hello {i}")
        assert isinstance(reply, AIMessage)
    assert limiter.acquired == 3
    assert limiter.estimate < 5000  # moved toward the real (small) usage
    assert not limiter._leases  # every grant was settled


@pytest.mark.redis
def test_redis_shared_limiter(redis_url: str) -> None:
    a = RateLimiter(rpm=60, redis_url=redis_url, name="shared-test")
    b = RateLimiter(rpm=60, redis_url=redis_url, name="shared-test")
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)  # the other process-like limiter sees the grant
