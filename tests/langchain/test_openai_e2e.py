"""A real client (langchain-openai) against the loopback OpenAI-compatible server."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, create_model

import stratacache as sc
from stratacache.langchain import CachedEmbeddings, LLMCache, cache_streaming
from stratacache.testing import OpenAICompatServer, _server


def _chat(server: OpenAICompatServer, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=server.base_url, api_key="test", max_retries=0, **kwargs
    )


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Sum(BaseModel):
    """The sum of two numbers."""

    total: int


def test_second_run_of_a_chain_makes_no_request(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    chain = (
        ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
        | _chat(server, cache=LLMCache(tiered), temperature=0)
        | StrOutputParser()
    )
    first = chain.invoke({"q": "what is a cache?"})
    assert server.stats.requests["chat"] == 1
    assert chain.invoke({"q": "what is a cache?"}) == first
    assert server.stats.requests["chat"] == 1
    chain.invoke({"q": "another question"})
    assert server.stats.requests["chat"] == 2


def test_tool_calls_and_structured_output_round_trip(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    model = _chat(server, cache=LLMCache(tiered))
    with_tools = model.bind_tools([add], tool_choice="add")
    first = with_tools.invoke("please add 2 and 3")
    assert first.tool_calls and first.tool_calls[0]["name"] == "add"
    again = with_tools.invoke("please add 2 and 3")
    assert again.tool_calls == first.tool_calls and again.usage_metadata
    assert server.stats.requests["chat"] == 1
    # Tools are part of the key: the same prompt without tools is a different request.
    model.invoke("please add 2 and 3")
    assert server.stats.requests["chat"] == 2

    structured = model.with_structured_output(Sum, method="function_calling")
    a = structured.invoke("sum please")
    b = structured.invoke("sum please")
    assert isinstance(b, Sum) and a == b
    assert server.stats.requests["chat"] == 3


async def test_async_chain(server: OpenAICompatServer, tiered: sc.TieredCache) -> None:
    model = _chat(server, cache=LLMCache(tiered))
    first = await model.ainvoke("hello async")
    second = await model.ainvoke("hello async")
    assert first.content == second.content
    assert server.stats.requests["chat"] == 1


def test_streaming_served_from_and_stored_to_the_cache(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    model = cache_streaming(_chat(server), tiered)
    streamed = "".join(str(c.content) for c in model.stream("stream me"))
    assert server.stats.requests["chat"] == 1
    replay = list(model.stream("stream me"))
    assert "".join(str(c.content) for c in replay) == streamed
    assert server.stats.requests["chat"] == 1
    assert model.invoke("stream me").content == streamed  # the same entry serves invoke
    assert server.stats.requests["chat"] == 1


async def test_astream_and_interrupted_streams(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    model = cache_streaming(_chat(server), tiered)
    server.interrupt_stream_after = 2
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises
        async for _ in model.astream("a long answer to cut"):
            pass
    server.interrupt_stream_after = None
    text = "".join([str(c.content) async for c in model.astream("a long answer to cut")])
    assert server.stats.requests["chat"] == 2  # the cut stream was not stored
    assert "".join([str(c.content) async for c in model.astream("a long answer to cut")]) == text
    assert server.stats.requests["chat"] == 2


def test_consumer_that_stops_early_stores_nothing(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    model = cache_streaming(_chat(server), tiered)
    for _ in model.stream("partial read please"):
        break
    list(model.stream("partial read please"))
    assert server.stats.requests["chat"] == 2


def test_openai_embeddings_warm_run_makes_no_request(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    emb = CachedEmbeddings(
        OpenAIEmbeddings(
            model="text-embedding-3-small",
            base_url=server.base_url,
            api_key="test",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
        ),
        tiered,
    )
    texts = ["alpha", "beta", "alpha", "gamma"]
    cold = emb.embed_documents(texts)
    assert server.stats.requests["embeddings"] == 1
    assert server.stats.bodies[-1]["input"] == ["alpha", "beta", "gamma"]  # deduplicated
    assert emb.embed_documents(texts) == cold
    assert cold[0] == pytest.approx(server.embedding_for("alpha"), abs=1e-6)
    assert server.stats.requests["embeddings"] == 1


def test_second_process_with_other_message_ids_hits_the_disk_tier(
    server: OpenAICompatServer, tmp_path: Path
) -> None:
    disk = tmp_path / "shared"
    cache = sc.TieredCache.from_urls("memory://", f"disk://{disk}")
    model = _chat(server, cache=LLMCache(cache))
    history = [SystemMessage("be brief", id="run1-a"), HumanMessage("cross process?", id="run1-b")]
    first = model.invoke(history)
    assert server.stats.requests["chat"] == 1
    script = textwrap.dedent(
        f"""
        import stratacache as sc
        from langchain_core.messages import HumanMessage, SystemMessage
        from langchain_openai import ChatOpenAI
        from stratacache.langchain import LLMCache
        cache = sc.TieredCache.from_urls("memory://", "disk://{disk}")
        model = ChatOpenAI(model="gpt-4o-mini", base_url="{server.base_url}", api_key="test",
                           max_retries=0, cache=LLMCache(cache))
        out = model.invoke([SystemMessage("be brief", id="run2-x"),
                            HumanMessage("cross process?", id="run2-y")])
        print(out.content)
        print(cache.stats()["tiers"][1]["hits"])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    content, disk_hits = proc.stdout.strip().splitlines()[-2:]
    assert content == first.content
    assert int(disk_hits) >= 1
    assert server.stats.requests["chat"] == 1


def test_ai_history_with_new_tool_call_ids_still_hits(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    model = _chat(server, cache=LLMCache(tiered))

    def history(run: str) -> list[object]:
        return [
            HumanMessage("add 1 and 2", id=f"{run}-h"),
            AIMessage(
                "",
                id=f"{run}-a",
                tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": f"call_{run}"}],
            ),
            {"role": "tool", "content": "3", "tool_call_id": f"call_{run}"},
        ]

    tools_model = model.bind_tools([add])
    tools_model.invoke(history("one"))
    tools_model.invoke(history("two"))
    assert server.stats.requests["chat"] == 1


@pytest.fixture
def json_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback provider answers with JSON, as a model under ``response_format`` would.

    The server has no ``response_format`` support of its own; only its answer text changes
    here, the HTTP exchange and the real client stay as they are.
    """

    def reply(messages: Any, model: str) -> str:
        text = str(messages[-1].get("content"))
        return json.dumps({"total": len(text), "note": text})

    monkeypatch.setattr(_server, "reply_for", reply)


def test_structured_output_json_schema_hit_is_parsed(
    server: OpenAICompatServer, tiered: sc.TieredCache, json_replies: None
) -> None:
    structured = _chat(server, cache=LLMCache(tiered)).with_structured_output(Sum)
    first = structured.invoke("sum please")
    assert isinstance(first, Sum) and server.stats.requests["chat"] == 1
    # A second process: the entry comes back from disk, through JSON, not from memory.
    again = _chat(server, cache=LLMCache(sc.TieredCache(tiered.tiers[1:])))
    second = again.with_structured_output(Sum).invoke("sum please")
    assert isinstance(second, Sum) and second == first
    assert server.stats.requests["chat"] == 1


async def test_structured_output_json_schema_hit_is_parsed_async(
    server: OpenAICompatServer, tiered: sc.TieredCache, json_replies: None
) -> None:
    structured = _chat(server, cache=LLMCache(tiered)).with_structured_output(Sum)
    first = await structured.ainvoke("sum please")
    second = await structured.ainvoke("sum please")
    assert isinstance(second, Sum) and second == first
    assert server.stats.requests["chat"] == 1


def _answer_class(**fields: Any) -> type[BaseModel]:
    """A class named ``Answer`` in this module, as a redefinition in a notebook would be."""
    return create_model("Answer", __module__=__name__, **fields)


def test_redefined_response_format_class_is_never_served_the_old_entry(
    server: OpenAICompatServer, tiered: sc.TieredCache, json_replies: None
) -> None:
    model = _chat(server, cache=LLMCache(tiered))
    old = _answer_class(total=(int, ...))
    assert isinstance(model.with_structured_output(old).invoke("q"), old)
    assert isinstance(model.with_structured_output(old).invoke("q"), old)
    assert server.stats.requests["chat"] == 1
    new = _answer_class(total=(int, ...), note=(str, ...))
    result = model.with_structured_output(new).invoke("q")
    assert isinstance(result, new) and result.note == "q"  # type: ignore[attr-defined]
    assert server.stats.requests["chat"] == 2
    del old
    gc.collect()
    # Whether caching resumes once `old` is freed depends on whether the framework still holds
    # the class (langchain-openai 1.0 does); what must hold either way is that every answer is
    # the new class's, never the old entry.
    for _ in range(2):
        again = model.with_structured_output(new).invoke("q")
        assert isinstance(again, new) and again == result
