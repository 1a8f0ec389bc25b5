"""The loopback provider, driven by the real ``openai`` client (sync and async)."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from stratacache.testing import (
    OpenAICompatServer,
    count_tokens,
    embedding_for,
    format_duration,
    prompt_tokens,
    reply_for,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer() as srv:
        yield srv


@pytest.fixture
def client(server: OpenAICompatServer) -> Iterator[openai.OpenAI]:
    server.reset()
    server.interrupt_stream_after = None
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as c:
        yield c


def test_chat_answer_is_deterministic_and_depends_on_history(
    client: openai.OpenAI, server: OpenAICompatServer
) -> None:
    first = client.chat.completions.create(model="m1", messages=MESSAGES)  # type: ignore[arg-type]
    again = client.chat.completions.create(model="m1", messages=MESSAGES)  # type: ignore[arg-type]
    other_model = client.chat.completions.create(model="m2", messages=MESSAGES)  # type: ignore[arg-type]
    other_system = client.chat.completions.create(
        model="m1",
        messages=[{"role": "system", "content": "Be verbose."}, MESSAGES[1]],  # type: ignore[list-item]
    )
    text = first.choices[0].message.content
    assert text == again.choices[0].message.content == reply_for(MESSAGES, "m1")
    assert text is not None and text.endswith("What is the capital of France?")
    assert other_model.choices[0].message.content != text
    assert other_system.choices[0].message.content != text
    assert first.usage is not None
    assert first.usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert first.usage.completion_tokens == count_tokens(text)
    assert server.stats.requests["chat"] == 4
    assert server.stats.bodies[0]["model"] == "m1"


def test_max_tokens_truncates(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens <= 2


def test_tool_call_when_user_names_the_tool_then_text_after_tool_result(
    client: openai.OpenAI,
) -> None:
    ask = [{"role": "user", "content": "Call get_weather for Paris"}]
    reply = client.chat.completions.create(model="m", messages=ask, tools=TOOLS)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city": "Call get_weather for Paris", "days": 1}'  # type: ignore[union-attr]
    follow = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = client.chat.completions.create(model="m", messages=follow, tools=TOOLS)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content is not None
    assert final.choices[0].message.content.endswith("tool said sunny")
    plain = client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    assert plain.choices[0].message.tool_calls is None
    forced = client.chat.completions.create(
        model="m",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].message.tool_calls is not None


def test_stream_reassembles_to_the_plain_answer_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_for(MESSAGES, "m")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(MESSAGES)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1


def test_stream_tool_call_arguments_arrive_in_pieces(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "get_weather please"}]
    stream = client.chat.completions.create(model="m", messages=ask, tools=TOOLS, stream=True)  # type: ignore[arg-type]
    args, name = "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            name = name or (call.function.name if call.function else None)
            args += (call.function.arguments or "") if call.function else ""
    assert name == "get_weather"
    assert args == '{"city": "get_weather please", "days": 1}'


def test_interrupted_stream_raises_in_the_client(
    client: openai.OpenAI, server: OpenAICompatServer
) -> None:
    server.interrupt_stream_after = 2
    received = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):  # noqa: PT012
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            received.append(chunk)
    assert len(received) == 2
    assert server.stats.streams_interrupted == 1


def test_embeddings_float_and_base64_agree(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="e", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == embedding_for("alpha", 64)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1.0) < 1e-5
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model="e", input="alpha")
    assert default.data[0].embedding == embedding_for("alpha", 64)
    raw = client.embeddings.with_raw_response.create(
        model="e", input="alpha", encoding_format="base64", dimensions=8
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == embedding_for("alpha", 8)
    tokens = client.embeddings.create(model="e", input=[[1, 2, 3]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 3


def test_injected_failures_and_counters(client: openai.OpenAI, server: OpenAICompatServer) -> None:
    server.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert server.stats.failures_injected == 2
    assert server.stats.total == 3 and server.stats.served == 1
    server.reset()
    assert server.stats.total == 0 and server.stats.bodies == []


def test_rate_limit_headers_and_429s() -> None:
    with (
        OpenAICompatServer(rpm=120, tpm=10_000) as server,
        openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as client,
    ):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-limit-requests"] == "120"
        assert raw.headers["x-ratelimit-limit-tokens"] == "10000"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"  # burst: 2 per second
        assert raw.headers["x-ratelimit-reset-requests"].endswith("ms")
        statuses, refusals = [], []
        for _ in range(5):
            try:
                client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
                statuses.append(200)
            except openai.RateLimitError as exc:
                statuses.append(429)
                refusals.append(exc.response.headers)
        for headers in refusals:
            assert float(headers["retry-after"]) >= 1
            assert 0 < int(headers["retry-after-ms"]) <= 500
            assert headers["x-ratelimit-remaining-requests"] == "0"
        assert statuses[0] == 200 and statuses.count(429) >= 3
        assert server.stats.rate_limited == statuses.count(429)


async def test_async_client_and_async_context() -> None:
    async with OpenAICompatServer(latency=0.01) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        reply = await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == reply_for(MESSAGES, "m")
        emb = await client.embeddings.create(model="e", input="x")
        assert emb.data[0].embedding == embedding_for("x")
        await client.close()
    assert server.stats.requests == {"chat": 1, "embeddings": 1}


def test_format_duration_matches_openai_style() -> None:
    assert format_duration(0.012) == "12ms"
    assert format_duration(1) == "1s"
    assert format_duration(360) == "6m0s"
    assert format_duration(61.5) == "1m1.5s"


def test_litellm_openai_provider_with_api_base(server: OpenAICompatServer) -> None:
    # In a subprocess: importing litellm is slow and patches global state.
    code = (
        "import litellm, sys\n"
        "r = litellm.completion(model='openai/m', api_base=sys.argv[1], api_key='t',"
        " messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(r.choices[0].message.content)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == reply_for(
        [{"role": "user", "content": "hi"}], "m"
    )
