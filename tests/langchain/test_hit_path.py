"""LLMCache's hit path: generations rebuilt from per-payload recipes must behave exactly like
generations revived by LangChain's own ``loads`` — fresh, never shared, never stale."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation

import stratacache as sc
from stratacache.integrations.langchain import _serde
from stratacache.langchain import LLMCache

LLM = "[('_type', 'x'), ('model', 'm'), ('stop', None), ('temperature', 0.0)]"


def _prompt(text: str = "add 2 and 3") -> str:
    return dumps([HumanMessage(text)])


def _answer(text: str = "5") -> list[Generation]:
    return [
        ChatGeneration(
            message=AIMessage(
                text,
                id="run-original",
                tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"}],
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                response_metadata={"model_name": "m", "finish_reason": "stop"},
            ),
            generation_info={"finish_reason": "stop", "logprobs": {"content": [1, 2]}},
        )
    ]


def _mutable_parts(gen: Any) -> list[Any]:
    msg = gen.message
    return [
        gen,
        msg,
        gen.generation_info,
        gen.generation_info["logprobs"],
        msg.tool_calls,
        msg.tool_calls[0],
        msg.tool_calls[0]["args"],
        msg.usage_metadata,
        msg.response_metadata,
        msg.additional_kwargs,
        msg.__pydantic_fields_set__,
    ]


def test_hits_share_no_mutable_object(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    cache.update(_prompt(), LLM, _answer())
    first = cache.lookup(_prompt(), LLM)
    second = cache.lookup(_prompt(), LLM)
    assert first is not None and second is not None and first is not second
    for a, b in zip(_mutable_parts(first[0]), _mutable_parts(second[0]), strict=True):
        assert a is not b
    assert first[0].message.id != second[0].message.id  # minted per hit, like a real call
    assert first[0].message.id.startswith("lc_run--")


def test_mutating_a_hit_never_changes_the_next_one(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    cache.update(_prompt(), LLM, _answer())
    hit = cache.lookup(_prompt(), LLM)
    assert hit is not None
    msg = hit[0].message
    msg.content = "tampered"
    msg.tool_calls[0]["args"]["a"] = 99
    msg.usage_metadata["total_tokens"] = 0
    hit[0].generation_info["logprobs"]["content"].append(3)
    hit[0].message = AIMessage("replaced")  # what LangChain itself does on every hit
    again = cache.lookup(_prompt(), LLM)
    assert again is not None
    expected = _answer()[0]
    assert again[0].message.content == "5"
    assert again[0].message.tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert again[0].message.usage_metadata == expected.message.usage_metadata  # type: ignore[attr-defined]
    assert again[0].generation_info == expected.generation_info


def test_rebuilt_hit_equals_what_langchain_revives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_serde, "_recipes", {})
    for gens in (
        _answer(),
        [Generation(text="plain", generation_info={"a": [1, {"b": None}]})],
        [ChatGenerationChunk(message=AIMessageChunk("chunk", id="x"))],
        [ChatGeneration(message=AIMessage("one")), ChatGeneration(message=AIMessage("two"))],
    ):
        payload, revived = _serde.encode_generations(gens)
        slow = _serde.decode_generations(payload)  # first read: revived by loads()
        fast = _serde.decode_generations(payload)  # later reads: rebuilt from recipes
        assert all(r[0] != "copy" for r in _serde._recipes[payload][0])
        for a, b, r in zip(slow, fast, revived, strict=True):
            assert type(a) is type(b) is type(r)
            if isinstance(a, ChatGeneration):
                a.message.id = b.message.id = r.message.id = None  # type: ignore[attr-defined]
            assert a == b == r
            assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__ - {"id"}


def test_what_json_cannot_rebuild_is_deep_copied() -> None:
    gen = ChatGeneration(message=AIMessage("t"), generation_info={"pair": (1, 2)})
    recipe = _serde._recipe_for(gen)
    assert recipe[0] == "copy"  # a tuple would come back as a list
    one = _serde._build(recipe, 0, "r1")
    two = _serde._build(recipe, 0, "r2")
    assert one.generation_info == two.generation_info == {"pair": (1, 2)}
    assert one is not two and one.generation_info is not two.generation_info
    assert one.message.id != two.message.id  # type: ignore[attr-defined]


def test_recipes_never_outlive_the_entry(memory_cache: sc.TieredCache) -> None:
    """The recipe memo is keyed by stored bytes: overwrite, delete, clear and expiry act on
    the tiers, and a lookup that finds nothing there never reaches the memo."""
    cache = LLMCache(memory_cache, ttl=0.2)
    cache.update(_prompt(), LLM, _answer("5"))
    assert cache.lookup(_prompt(), LLM)[0].text == "5"  # type: ignore[index]
    cache.update(_prompt(), LLM, _answer("6"))  # overwrite
    assert cache.lookup(_prompt(), LLM)[0].text == "6"  # type: ignore[index]
    cache.cache.delete(cache._key(_prompt(), LLM))  # type: ignore[arg-type]
    assert cache.lookup(_prompt(), LLM) is None
    cache.update(_prompt(), LLM, _answer("5"))
    cache.clear()
    assert cache.lookup(_prompt(), LLM) is None
    cache.update(_prompt(), LLM, _answer("5"))
    assert cache.lookup(_prompt(), LLM) is not None
    time.sleep(0.35)
    assert cache.lookup(_prompt(), LLM) is None


def test_recipe_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_serde, "_RECIPE_BUDGET", 4096)
    monkeypatch.setattr(_serde, "_recipes", {})
    monkeypatch.setattr(_serde, "_recipe_bytes", 0)
    for i in range(50):
        payload, revived = _serde.encode_generations(_answer(f"answer {i}"))
        _serde.remember(payload, revived)
        assert _serde._recipe_bytes <= 4096
    assert 0 < len(_serde._recipes) < 50
    payload, _ = _serde.encode_generations(_answer("answer 0"))
    assert _serde.decode_generations(payload)[0].text == "answer 0"  # evicted: revived again


def test_concurrent_hits_are_independent(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    for i in range(10):
        cache.update(_prompt(f"q{i}"), LLM, _answer(f"a{i}"))
    seen: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for n in range(300):
            i = (n + offset) % 10
            hit = cache.lookup(_prompt(f"q{i}"), LLM)
            if hit is None or hit[0].text != f"a{i}":
                errors.append(f"q{i}: {hit}")
                continue
            hit[0].message.tool_calls[0]["args"]["a"] = offset  # mutate what we got
            with lock:
                seen.append(hit[0].message.tool_calls[0])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(call) for call in seen}) == len(seen)  # never the same object twice
    fresh = cache.lookup(_prompt("q0"), LLM)
    assert fresh is not None and fresh[0].message.tool_calls[0]["args"] == {"a": 2, "b": 3}


def test_model_invoke_hits_stay_independent(memory_cache: sc.TieredCache) -> None:
    model = FakeListChatModel(responses=["Paris", "Lyon"], cache=LLMCache(memory_cache))
    first = model.invoke("capital?")
    second = model.invoke("capital?")
    third = model.invoke("capital?")
    assert first.content == second.content == third.content == "Paris"
    assert len({first.id, second.id, third.id}) == 3
    second.content = "changed"
    assert model.invoke("capital?").content == "Paris"
