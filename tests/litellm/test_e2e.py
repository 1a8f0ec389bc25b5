"""End to end against the loopback OpenAI-compatible server: upstream requests are counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import litellm
import pytest

import stratacache.litellm as scl
from stratacache.testing import OpenAICompatServer, embedding_for
from tests.litellm.conftest import via

MODEL = "openai/gpt-4o-mini"
MSGS = [{"role": "user", "content": "What is a cache?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def chat(server: OpenAICompatServer, **kwargs: Any) -> Any:
    return litellm.completion(**via(server, model=MODEL, messages=MSGS, **kwargs))


def test_sync_hit_makes_no_upstream_request(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    first = chat(server)
    second = chat(server)
    assert server.stats.requests["chat"] == 1
    assert second._hidden_params["cache_hit"] is True
    assert second.choices[0].message.content == first.choices[0].message.content
    assert first.choices[0].message.content == server.reply_for(messages=MSGS, model="gpt-4o-mini")


async def test_async_hit_makes_no_upstream_request(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    await litellm.acompletion(**via(server, model=MODEL, messages=MSGS))
    await asyncio.sleep(0.1)
    second = await litellm.acompletion(**via(server, model=MODEL, messages=MSGS))
    assert second._hidden_params["cache_hit"] is True
    assert server.stats.requests["chat"] == 1


def test_tool_calls_are_cached(installed: scl.Installation, server: OpenAICompatServer) -> None:
    import mcp  # noqa: F401 - a dev dependency: litellm 1.106.x imports it on every tools= call

    messages = [{"role": "user", "content": "Use get_weather for Paris"}]
    first = litellm.completion(**via(server, model=MODEL, messages=messages, tools=TOOLS))
    second = litellm.completion(**via(server, model=MODEL, messages=messages, tools=TOOLS))
    assert server.stats.requests["chat"] == 1
    assert second._hidden_params["cache_hit"] is True
    calls = second.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == first.choices[0].message.tool_calls[0].function.arguments
    third = litellm.completion(
        **via(server, model=MODEL, messages=messages, tools=TOOLS[:0] or None)
    )
    assert third._hidden_params.get("cache_hit") is None  # tools are part of the key


def test_stream_is_stored_and_replayed_as_a_stream(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(server, stream=True))
    replay = chat(server, stream=True)
    assert isinstance(replay, litellm.CustomStreamWrapper)
    assert "".join(c.choices[0].delta.content or "" for c in replay) == streamed
    plain = chat(server)  # a stream-filled entry also serves the non-stream call
    assert plain._hidden_params["cache_hit"] is True
    assert plain.choices[0].message.content == streamed
    assert server.stats.requests["chat"] == 1


async def test_async_stream_replay(installed: scl.Installation, server: OpenAICompatServer) -> None:
    kwargs = via(server, model=MODEL, messages=MSGS, stream=True)
    first = "".join(
        [c.choices[0].delta.content or "" async for c in await litellm.acompletion(**kwargs)]
    )
    await asyncio.sleep(0.1)
    replay = await litellm.acompletion(**kwargs)
    assert "".join([c.choices[0].delta.content or "" async for c in replay]) == first
    assert server.stats.requests["chat"] == 1


def test_interrupted_stream_is_not_cached(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    server.interrupt_stream_after = 2
    with pytest.raises(Exception):  # noqa: B017, PT011 - litellm maps the cut to its own errors
        "".join(c.choices[0].delta.content or "" for c in chat(server, stream=True, max_retries=0))
    server.interrupt_stream_after = None
    again = chat(server)
    assert again._hidden_params.get("cache_hit") is None
    assert server.stats.requests["chat"] == 2


def test_sync_embeddings_are_cached_per_item(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    emb = "openai/text-embedding-3-small"
    first = litellm.embedding(**via(server, model=emb, input=["a", "b"]))
    assert [d["embedding"] for d in first.data] == [embedding_for("a"), embedding_for("b")]
    mixed = litellm.embedding(**via(server, model=emb, input=["c", "a", "d", "b"]))
    assert server.stats.bodies[-1]["input"] == ["c", "d"]
    assert [d["embedding"] for d in mixed.data] == [embedding_for(t) for t in "cadb"]
    assert [d["index"] for d in mixed.data] == [0, 1, 2, 3]
    single = litellm.embedding(**via(server, model=emb, input="d"))
    assert single._hidden_params["cache_hit"] is True
    assert server.stats.requests["embeddings"] == 2


async def test_async_embeddings_are_cached_per_item(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    emb = "openai/text-embedding-3-small"
    litellm.embedding(**via(server, model=emb, input=["a", "b"]))  # sync entries serve async
    mixed = await litellm.aembedding(**via(server, model=emb, input=["b", "z", "a"]))
    assert server.stats.bodies[-1]["input"] == ["z"]
    assert [d["embedding"] for d in mixed.data] == [embedding_for(t) for t in "bza"]
    await asyncio.sleep(0.1)
    again = await litellm.aembedding(**via(server, model=emb, input=["z", "a"]))
    assert again._hidden_params["cache_hit"] is True
    assert server.stats.requests["embeddings"] == 2


def test_stats_per_model(installed: scl.Installation, server: OpenAICompatServer) -> None:
    import stratacache as sc

    before = sc.stats()
    first = chat(server)
    chat(server)
    chat(server)
    for _ in range(50):  # sync success callbacks run on litellm's logging thread pool
        stats = installed.stats.stats().get("gpt-4o-mini", {})
        if stats.get("hits", 0) + stats.get("misses", 0) >= 3:
            break
        time.sleep(0.02)
    assert stats["hits"] == 2 and stats["misses"] == 1
    assert stats["tokens_saved"] == 2 * first.usage.total_tokens
    assert stats["cost_saved"] > 0  # litellm's own cost map prices gpt-4o-mini
    assert stats["latency_saved"] > 0
    after = sc.stats()
    assert after["llm_hits"] - before["llm_hits"] == 2
