"""``--rate-limit`` for LangChain: a grant per cache miss (where a chat model would consult its
own limiter), none for a hit, settled when the result is stored; same entries as LLMCache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_openai import ChatOpenAI

from stratacache import TieredCache
from stratacache.integrations.langchain._limited import ModelLimits, model_name, rate_limited
from stratacache.langchain import LLMCache


@pytest.fixture
def cache() -> Iterator[TieredCache]:
    with TieredCache.from_urls("memory://", namespace="limits-test") as tiers:
        yield tiers


def test_the_model_is_named_by_the_llm_string() -> None:
    assert model_name(ChatOpenAI(model="gpt-4o-mini", api_key="k")._get_llm_string()) == (
        "gpt-4o-mini"
    )
    assert model_name(FakeListChatModel(responses=["a"])._get_llm_string()) == ""
    assert model_name("not an llm string") == ""
    limits = ModelLimits({"gpt-4o-mini": {"rpm": 5}, "*": {"rpm": 7}})
    assert limits._spec("openai/gpt-4o-mini") == {"rpm": 5}
    assert limits._spec("other") == {"rpm": 7}
    assert ModelLimits({"gpt-4o": {"rpm": 5}})._spec("") is None


def test_misses_take_grants_and_hits_take_none(cache: TieredCache) -> None:
    limits = ModelLimits({"*": {"rpm": 60_000, "tpm": 10_000_000}})
    llm_cache = rate_limited(LLMCache, limits, cache)
    assert isinstance(llm_cache, LLMCache)
    model = FakeListChatModel(responses=["a", "b", "c"], cache=llm_cache)
    answers = [model.invoke(q).content for q in ("one", "two", "one", "two")]
    assert answers == ["a", "b", "a", "b"]
    limiter = limits.for_call(model._get_llm_string())
    assert limiter is not None
    assert limiter.acquired == 2  # the two misses; the repeats were hits
    assert not limiter._leases  # every grant was settled when its result was stored


async def test_async_calls_are_limited_the_same_way(cache: TieredCache) -> None:
    limits = ModelLimits({"*": {"rpm": 60_000}})
    model = FakeListChatModel(responses=["x", "y"], cache=rate_limited(LLMCache, limits, cache))
    assert [(await model.ainvoke(q)).content for q in ("p", "p", "q")] == ["x", "x", "y"]
    limiter = limits.for_call(model._get_llm_string())
    assert limiter is not None and limiter.acquired == 2


def test_a_model_without_a_configured_limit_is_not_limited(cache: TieredCache) -> None:
    limits = ModelLimits({"gpt-4o": {"rpm": 1}})
    model = FakeListChatModel(responses=["a"], cache=rate_limited(LLMCache, limits, cache))
    assert model.invoke("hello").content == "a"
    assert limits.for_call(model._get_llm_string()) is None


def test_limited_and_plain_caches_share_entries(cache: TieredCache) -> None:
    limited = rate_limited(LLMCache, ModelLimits({"*": {"rpm": 60_000}}), cache)
    FakeListChatModel(responses=["stored"], cache=limited).invoke("shared question")
    plain = LLMCache(cache)
    assert FakeListChatModel(responses=["stored"], cache=plain).invoke("shared question").content
    assert plain.stats()["hits"] == 1
    assert plain.stats().get("misses", 0) == 0
