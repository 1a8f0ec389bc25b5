"""CachedLLM and patch_llm against LlamaIndex's MockLLM / MockFunctionCallingLLM."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import MockLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

import stratacache as sc
from stratacache._stats import GLOBAL_SAVINGS
from stratacache.llamaindex import CachedLLM, CacheHitEvent, patch_llm, unpatch_llm
from tests.llamaindex.conftest import CountingLLM


def test_complete_and_chat_hit(llm: CountingLLM, memory_cache: sc.TieredCache) -> None:
    cached = CachedLLM(llm, cache=memory_cache)
    first = cached.complete("hello")
    assert cached.complete("hello").text == first.text
    assert llm.calls == 1
    cached.complete("hello", temperature=0.1)  # different kwargs: a different key
    assert llm.calls == 2
    msgs = [ChatMessage(role="user", content="hi")]
    reply = cached.chat(msgs)
    assert isinstance(cached.chat(msgs), ChatResponse)
    assert cached.chat(msgs).message.content == reply.message.content
    assert llm.calls == 3  # MockLLM.chat -> complete: one real call
    assert cached.metadata == llm.metadata
    assert cached.stats()["hits"] == 3


def test_model_settings_are_in_the_key_but_not_secrets(memory_cache: sc.TieredCache) -> None:
    a = CountingLLM(max_tokens=8)
    b = CountingLLM(max_tokens=9)
    CachedLLM(a, cache=memory_cache).complete("x")
    CachedLLM(b, cache=memory_cache).complete("x")
    assert (a.calls, b.calls) == (1, 1)
    c = CountingLLM(max_tokens=8)
    CachedLLM(c, cache=memory_cache).complete("x")
    assert c.calls == 0  # same settings, another object: shared entry


def test_streams_replay_and_partial_streams_are_not_stored(
    llm: CountingLLM, memory_cache: sc.TieredCache
) -> None:
    cached = CachedLLM(llm, cache=memory_cache)
    gen = cached.stream_complete("abc")
    next(gen)
    gen.close()  # abandoned: nothing stored
    deltas = [r.delta for r in cached.stream_complete("abc")]
    assert llm.calls == 2
    assert [r.delta for r in cached.stream_complete("abc")] == deltas
    assert llm.calls == 2
    msgs = [ChatMessage(role="user", content="stream me")]
    chat_deltas = [r.delta for r in cached.stream_chat(msgs)]
    assert [r.delta for r in cached.stream_chat(msgs)] == chat_deltas
    assert llm.calls == 3


async def test_async_variants_share_entries(llm: CountingLLM, memory_cache: sc.TieredCache) -> None:
    cached = CachedLLM(llm, cache=memory_cache)
    text = (await cached.acomplete("q1")).text
    assert cached.complete("q1").text == text
    msgs = [ChatMessage(role="user", content="q2")]
    await cached.achat(msgs)
    assert (await cached.achat(msgs)).message.content
    calls = llm.calls
    gen = await cached.astream_chat(msgs)
    deltas = [r.delta async for r in gen]
    gen = await cached.astream_chat(msgs)
    assert [r.delta async for r in gen] == deltas
    gen = await cached.astream_complete("q3")
    full = [r.text async for r in gen]
    gen = await cached.astream_complete("q3")
    assert [r.text async for r in gen] == full
    assert llm.calls == calls + 2


def test_errors_and_empty_answers_are_not_cached(memory_cache: sc.TieredCache) -> None:
    class Flaky(CountingLLM):
        fail: bool = True

        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            self.calls += 1
            if self.fail:
                raise RuntimeError("provider down")
            return MockLLM.complete(self, "" if prompt == "empty" else prompt, formatted, **kwargs)

    llm = Flaky()
    cached = CachedLLM(llm, cache=memory_cache)
    with pytest.raises(RuntimeError):
        cached.complete("x")
    llm.fail = False
    assert cached.complete("x").text == "x"
    cached.complete("empty")
    cached.complete("empty")
    assert llm.calls == 4  # failure, x, empty twice (never stored)


class _Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


def test_hit_events_reach_root_handlers(llm: CountingLLM, memory_cache: sc.TieredCache) -> None:
    root = get_dispatcher()
    handler = _Recorder(events=[])
    root.add_event_handler(handler)
    try:
        cached = CachedLLM(llm, cache=memory_cache)
        cached.complete("evt")
        cached.complete("evt")
    finally:
        root.event_handlers.remove(handler)
    names = [e.class_name() for e in handler.events]
    assert "StrataCacheMissEvent" in names and "StrataCacheHitEvent" in names
    hit = next(e for e in handler.events if isinstance(e, CacheHitEvent))
    assert hit.kind == "llm" and hit.method == "complete"
    # The hit sent nothing, so it fires no LLM completion events.
    assert names.count("LLMCompletionStartEvent") == 1


def test_savings_are_recorded(llm: CountingLLM, memory_cache: sc.TieredCache) -> None:
    before = GLOBAL_SAVINGS.summary()
    cached = CachedLLM(llm, cache=memory_cache)
    cached.complete("save")
    cached.complete("save")
    after = GLOBAL_SAVINGS.summary()
    assert after["llm_hits"] == before["llm_hits"] + 1
    assert after["llm_misses"] == before["llm_misses"] + 1


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_function_calling_llm_keeps_working(memory_cache: sc.TieredCache) -> None:
    inner = MockFunctionCallingLLM()
    seen: list[int] = []
    original = inner._get_response_generator()

    def counting(messages: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return original(messages, **kwargs)

    inner.response_generator = counting
    cached = CachedLLM(inner, cache=memory_cache)
    assert isinstance(cached, FunctionCallingLLM)
    assert type(cached).__name__ == "CachedFunctionCallingLLM"
    add, mul = FunctionTool.from_defaults(_add), FunctionTool.from_defaults(_mul)
    r1 = cached.chat_with_tools([add], user_msg="add 1 and 2")
    r2 = cached.chat_with_tools([add], user_msg="add 1 and 2")
    assert len(seen) == 1
    assert r1.message.model_dump() == r2.message.model_dump()
    cached.chat_with_tools([add, mul], user_msg="add 1 and 2")  # tools are part of the key
    assert len(seen) == 2
    calls1 = cached.get_tool_calls_from_response(r1, error_on_no_tool_call=False)
    calls2 = cached.get_tool_calls_from_response(r2, error_on_no_tool_call=False)
    assert [(c.tool_name, c.tool_kwargs) for c in calls1] == [
        (c.tool_name, c.tool_kwargs) for c in calls2
    ]


def test_structured_predict_through_wrapped_function_calling_llm(
    memory_cache: sc.TieredCache,
) -> None:
    from llama_index.core.base.llms.types import ToolCallBlock
    from llama_index.core.prompts import PromptTemplate

    class Pet(BaseModel):
        name: str

    calls: list[int] = []

    def answer(messages: Any, **kwargs: Any) -> ChatMessage:
        calls.append(1)
        block = ToolCallBlock(tool_call_id="c1", tool_name="Pet", tool_kwargs={"name": "Rex"})
        return ChatMessage(role="assistant", blocks=[block])

    cached = CachedLLM(MockFunctionCallingLLM(response_generator=answer), cache=memory_cache)
    prompt = PromptTemplate("name a pet called {n}")
    assert cached.structured_predict(Pet, prompt, n="Rex") == Pet(name="Rex")
    assert cached.structured_predict(Pet, prompt, n="Rex") == Pet(name="Rex")
    assert len(calls) == 1


def test_patch_in_place_reaches_existing_holders(
    llm: CountingLLM, memory_cache: sc.TieredCache
) -> None:
    holder = {"llm": llm}  # something that captured the object before patching
    patch_llm(llm, memory_cache)
    holder["llm"].complete("p")
    holder["llm"].complete("p")
    msgs = [ChatMessage(role="user", content="c")]
    llm.chat(msgs)
    llm.chat(msgs)
    assert llm.calls == 2
    assert "complete" not in llm.model_dump()
    unpatch_llm(llm)
    llm.complete("p")
    assert llm.calls == 3
