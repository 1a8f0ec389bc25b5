"""LLMCache: the standard LangChain cache suites plus what they do not cover."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

import stratacache as sc
from stratacache._stats import GLOBAL_SAVINGS
from stratacache.langchain import LLMCache
from stratacache.tiers import MemoryTier


class TestLLMCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return LLMCache(sc.TieredCache.from_urls("memory://"))


class TestLLMCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return LLMCache(sc.TieredCache.from_urls("memory://"))


def _messages(ids: str, call_id: str = "call_A") -> list[Any]:
    return [
        SystemMessage("be brief", id=f"{ids}-0"),
        HumanMessage("add 2 and 3", id=f"{ids}-1"),
        AIMessage(
            "",
            id=f"{ids}-2",
            tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": call_id}],
            response_metadata={"model_name": "m", "system_fingerprint": ids},
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        ),
        ToolMessage("5", tool_call_id=call_id, id=f"{ids}-3"),
    ]


LLM = "[('_type', 'x'), ('model', 'm'), ('stop', None), ('temperature', 0.0)]"


def test_volatile_fields_do_not_change_the_key(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    gen = [ChatGeneration(message=AIMessage("5"))]
    cache.update(dumps(_messages("run1", "call_A")), LLM, gen)
    hit = cache.lookup(dumps(_messages("run2", "call_Z")), LLM)
    assert hit is not None and hit[0].text == "5"


def test_what_changes_the_answer_changes_the_key(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    cache.update(dumps(_messages("r")), LLM, [ChatGeneration(message=AIMessage("5"))])
    other_msgs = _messages("r")
    other_msgs[1] = HumanMessage("add 2 and 4")
    tools = (
        "[('_type', 'x'), ('stop', None), "
        "('tools', [{'type': 'function', 'function': {'name': 'add'}}])]"
    )
    for prompt, llm in [
        (dumps(other_msgs), LLM),
        (dumps(_messages("r")), LLM.replace("0.0", "0.7")),
        (dumps(_messages("r")), LLM.replace("None", "['\\n']")),
        (dumps(_messages("r")), tools),
    ]:
        assert cache.lookup(prompt, llm) is None


def test_param_order_and_transport_fields_do_not_matter(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    a = "[('max_retries', 2), ('model', 'm'), ('response_format', {'a': 1, 'b': 2}), ('stop', 0)]"
    b = "[('model', 'm'), ('response_format', {'b': 2, 'a': 1}), ('stop', 0), ('timeout', 9)]"
    cache.update("p", a, [Generation(text="x")])
    assert cache.lookup("p", b) == [Generation(text="x")]


def test_chat_generations_round_trip(tiered: sc.TieredCache) -> None:
    gens = [
        ChatGeneration(
            message=AIMessage(
                "",
                tool_calls=[{"name": "add", "args": {"a": 1}, "id": "call_1"}],
                usage_metadata={"input_tokens": 5, "output_tokens": 6, "total_tokens": 11},
                response_metadata={"finish_reason": "tool_calls", "model_name": "m"},
                additional_kwargs={"parsed": {"a": 1}},
            ),
            generation_info={"finish_reason": "tool_calls"},
        ),
        ChatGeneration(message=AIMessage("second choice")),
    ]
    LLMCache(tiered).update("p", LLM, gens)
    # A fresh adapter over a fresh view: nothing is shared in Python objects.
    again = LLMCache(tiered).lookup("p", LLM)
    assert again is not None and len(again) == 2
    first = again[0]
    assert isinstance(first, ChatGeneration) and isinstance(first.message, AIMessage)
    assert first.message.tool_calls == gens[0].message.tool_calls
    assert first.message.usage_metadata == gens[0].message.usage_metadata
    assert first.message.additional_kwargs == {"parsed": {"a": 1}}
    assert again[1].text == "second choice"
    # Hits are independent objects: mutating one does not leak into the next hit.
    first.message.tool_calls.append({"name": "x", "args": {}, "id": "y"})
    assert len(LLMCache(tiered).lookup("p", LLM)[0].message.tool_calls) == 1  # type: ignore[index,union-attr]


def test_message_ids_are_fresh_per_hit(memory_cache: sc.TieredCache) -> None:
    model = FakeListChatModel(responses=["a"] * 5, cache=LLMCache(memory_cache))
    ids = {model.invoke("hi").id for _ in range(3)}
    assert len(ids) == 3


def test_truthy_when_empty_and_works_as_global(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    assert bool(cache)
    set_llm_cache(cache)
    try:
        model = FakeListChatModel(responses=["one", "two"])
        assert model.invoke("q").content == "one"
        assert model.invoke("q").content == "one"
    finally:
        set_llm_cache(None)


def test_default_cache_one_liner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.setattr("stratacache.integrations._shared._default", None)
    cache = LLMCache()
    assert cache.cache.namespace == "lc-llm"
    assert LLMCache().cache.tiers == cache.cache.tiers  # one shared default


def test_clear_is_scoped_to_the_namespace(memory_cache: sc.TieredCache) -> None:
    llm = LLMCache(memory_cache)
    memory_cache.set("mine", 1)
    other = LLMCache(memory_cache, namespace="other")
    llm.update("p", LLM, [Generation(text="x")])
    other.update("p", LLM, [Generation(text="y")])
    llm.clear()
    assert llm.lookup("p", LLM) is None
    assert other.lookup("p", LLM) == [Generation(text="y")]
    assert memory_cache.get("mine") == 1


async def test_async_twins(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    model = GenericFakeChatModel(messages=iter([AIMessage("x"), AIMessage("y")]), cache=cache)
    assert (await model.ainvoke("hi")).content == "x"
    assert (await model.ainvoke("hi")).content == "x"
    await cache.aclear()
    assert (await model.ainvoke("hi")).content == "y"


def test_savings_are_recorded(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    msg = AIMessage(
        "x", usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    )
    cache.update("p", LLM, [ChatGeneration(message=msg)])
    before = GLOBAL_SAVINGS.summary()
    cache.lookup("p", LLM)
    cache.lookup("other", LLM)
    after = GLOBAL_SAVINGS.summary()
    assert after["tokens_saved"] - before["tokens_saved"] == 15
    assert after["llm_hits"] - before["llm_hits"] == 1
    assert after["llm_misses"] - before["llm_misses"] == 1


# -- bad input never raises -------------------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [
        [],
        [ChatGeneration(message=AIMessage(""))],
        [Generation(text="x", generation_info={"obj": _Opaque()})],
        [Generation(text="x", generation_info={"finish_reason": "error"})],
    ],
    ids=["empty", "empty-message", "unserializable", "error"],
)
def test_uncacheable_results_are_skipped(
    memory_cache: sc.TieredCache, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = LLMCache(memory_cache)
    with caplog.at_level(logging.WARNING, "stratacache"):
        cache.update("p", LLM, value)
        cache.update("p", LLM, value)
    assert cache.lookup("p", LLM) is None
    assert cache.stats()["skipped_writes"] == 2
    assert len([r for r in caplog.records if "not cached" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "stored",
    [b"garbage", b"sclc1\n{not json", {"foreign": "json"},
     b'sclc1\n[{"lc": 1, "type": "constructor", '
     b'"id": ["langchain", "llms", "openai", "OpenAI"], "kwargs": {}}]'],
    ids=["bytes", "truncated", "foreign-json", "disallowed-class"],
)  # fmt: skip
def test_corrupt_or_foreign_entries_are_misses(memory_cache: sc.TieredCache, stored: Any) -> None:
    cache = LLMCache(memory_cache)
    cache.update("p", LLM, [Generation(text="x")])
    key = cache._key("p", LLM)
    assert key is not None
    cache.cache.set(key, stored)
    assert cache.lookup("p", LLM) is None
    assert cache.stats()["bad_entries"] == 1
    assert cache.cache.get(key) is None  # dropped, so the next call refills it


class _BrokenTier(MemoryTier):
    def get(self, key: str) -> Any:
        raise OSError("disk on fire")

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        raise OSError("disk on fire")


def test_failing_tier_is_a_miss_in_a_real_chain() -> None:
    cache = LLMCache(sc.TieredCache([_BrokenTier(1 << 20)]))
    model = FakeListChatModel(responses=["a", "b"], cache=cache)
    assert model.invoke("hi").content == "a"
    assert model.invoke("hi").content == "b"


def test_errors_are_never_cached(memory_cache: sc.TieredCache) -> None:
    class Flaky(FakeListChatModel):
        fail: bool = True

        def _call(self, *args: Any, **kwargs: Any) -> str:
            if self.fail:
                self.fail = False
                raise RuntimeError("provider down")
            return super()._call(*args, **kwargs)

    model = Flaky(responses=["ok"], cache=LLMCache(memory_cache))
    with pytest.raises(RuntimeError):
        model.invoke("hi")
    assert model.invoke("hi").content == "ok"
