"""install(semantic=True): exact first, then the last user turn matched within its scope.

Real litellm calls against the loopback OpenAI-compatible server (its request counter says
whether the provider was asked) and the real offline ``LocalEmbedder``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm.exceptions import BadRequestError

import stratacache as sc
import stratacache.litellm as scl
from stratacache.semantic import LocalEmbedder, SemanticCache
from stratacache.testing import OpenAICompatServer
from tests.litellm.conftest import via

MODEL = "openai/gpt-4o-mini"
QUESTION = "How do I reset my password?"
TYPO = "How do I reset my pasword?"
FILLER = "hi, how do I reset my password please?"
TRAP = "How do I not reset my password?"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def sem_installed(tiered: sc.TieredCache, embedder: LocalEmbedder) -> Iterator[scl.Installation]:
    yield scl.install(tiered, semantic=True, embedder=embedder)
    scl.uninstall()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ask(server: OpenAICompatServer, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("model", MODEL)
    return litellm.completion(**via(server, messages=messages, **kwargs))


def text(response: Any) -> str:
    return str(response.choices[0].message.content)


def calls(server: OpenAICompatServer) -> int:
    return int(server.stats.requests["chat"])


def test_typo_and_filler_variants_are_served_without_a_request(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    first = ask(server, user(QUESTION))
    assert calls(server) == 1
    for variant in (TYPO, FILLER):
        hit = ask(server, user(variant))
        assert hit._hidden_params["cache_hit"] is True
        assert text(hit) == text(first)
    assert calls(server) == 1
    sem = sem_installed.semantic
    assert sem is not None and sem is sem_installed.cache.semantic
    assert sem.stats()["hit:lexical"] == 2


def test_a_trap_goes_to_the_provider(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    ask(server, user(QUESTION))
    trap = ask(server, user(TRAP))
    assert calls(server) == 2
    assert trap._hidden_params.get("cache_hit") is not True
    assert text(trap) == server.reply_for(user(TRAP), "gpt-4o-mini")


def test_exact_repeats_never_reach_the_semantic_layer(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    ask(server, user(QUESTION))
    sem = sem_installed.semantic
    assert sem is not None
    before = sem.stats().get("lookups", 0)
    hit = ask(server, user(QUESTION))
    assert hit._hidden_params["cache_hit"] is True
    assert sem.stats().get("lookups", 0) == before
    assert sem.stats()["stores"] == 1  # the miss was written to both layers


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ({"user": "alice"}, {"user": "bob"}),
        (
            {"metadata": {"user_api_key_hash": "k1"}},
            {"metadata": {"user_api_key_hash": "k2"}},
        ),
        (
            {"metadata": {"user_api_key_team_id": "t1"}},
            {"metadata": {"user_api_key_team_id": "t2"}},
        ),
        ({"temperature": 0}, {"temperature": 0.7}),
        ({"model": "openai/gpt-4o-mini"}, {"model": "openai/gpt-4o"}),
        ({"max_tokens": 50}, {"max_tokens": 60}),
    ],
    ids=["user", "proxy-key", "proxy-team", "temperature", "model", "max_tokens"],
)
def test_anything_but_the_last_turn_must_match(
    sem_installed: scl.Installation,
    server: OpenAICompatServer,
    stored: dict[str, Any],
    asked: dict[str, Any],
) -> None:
    ask(server, user(QUESTION), **stored)
    again = ask(server, user(TYPO), **stored)
    assert again._hidden_params["cache_hit"] is True  # same scope: served
    assert calls(server) == 1
    other = ask(server, user(TYPO), **asked)
    assert other._hidden_params.get("cache_hit") is not True
    assert calls(server) == 2


def test_earlier_turns_and_system_prompt_are_part_of_the_scope(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    history = [
        {"role": "user", "content": "I use the mobile app."},
        {"role": "assistant", "content": "Noted."},
    ]
    ask(server, [*history, *user(QUESTION)])
    same = ask(server, [*history, *user(TYPO)])
    assert same._hidden_params["cache_hit"] is True
    assert calls(server) == 1
    other_history = [history[0], {"role": "assistant", "content": "Noted!"}]
    for messages in (
        user(TYPO),  # no history at all: the last turn alone never matches
        [*other_history, *user(TYPO)],
        [{"role": "system", "content": "Be terse."}, *history, *user(TYPO)],
    ):
        response = ask(server, messages)
        assert response._hidden_params.get("cache_hit") is not True
        assert text(response) == server.reply_for(messages, "gpt-4o-mini")
    assert calls(server) == 4


def test_install_tenant_partitions_requests_without_their_own(
    tiered: sc.TieredCache, embedder: LocalEmbedder, server: OpenAICompatServer
) -> None:
    current = {"tenant": "acme"}
    scl.install(tiered, semantic=True, embedder=embedder, tenant=lambda: current["tenant"])
    try:
        ask(server, user(QUESTION))
        assert ask(server, user(TYPO))._hidden_params["cache_hit"] is True
        current["tenant"] = "globex"
        assert ask(server, user(TYPO))._hidden_params.get("cache_hit") is not True
        assert calls(server) == 2
    finally:
        scl.uninstall()


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": QUESTION},
        ],
        [{"role": "user", "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}],
    ],
    ids=["tool-result", "multimodal"],
)  # fmt: skip
def test_requests_not_ending_in_user_text_skip_the_layer(
    sem_installed: scl.Installation, server: OpenAICompatServer, messages: list[dict[str, Any]]
) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    ask(server, messages)
    assert sem.stats().get("stores", 0) == 0
    assert sem.stats().get("lookups", 0) == 0


def test_text_parts_are_plain_text(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    ask(server, [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    hit = ask(server, user(TYPO))
    assert hit._hidden_params["cache_hit"] is True
    assert calls(server) == 1


def test_several_choices_skip_the_layer(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    ask(server, user(QUESTION), n=2)
    ask(server, user(TYPO), n=2)
    assert calls(server) == 2
    assert sem.stats().get("stores", 0) == 0


def test_a_semantic_hit_replays_as_a_stream(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    streamed = "".join(
        c.choices[0].delta.content or "" for c in ask(server, user(QUESTION), stream=True)
    )
    assert calls(server) == 1
    replay = ask(server, user(TYPO), stream=True)
    assert isinstance(replay, litellm.CustomStreamWrapper)
    assert "".join(c.choices[0].delta.content or "" for c in replay) == streamed
    assert calls(server) == 1


def test_an_interrupted_stream_is_stored_in_neither_layer(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    server.interrupt_stream_after = 2
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever litellm raises on a cut stream
        for _ in ask(server, user(QUESTION), stream=True):
            pass
    server.interrupt_stream_after = None
    assert sem.stats().get("stores", 0) == 0
    ask(server, user(TYPO))
    assert calls(server) == 2


def test_errors_are_not_stored(sem_installed: scl.Installation, server: OpenAICompatServer) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    server.fail_next(1, status=400)
    with pytest.raises(BadRequestError):
        ask(server, user(QUESTION), num_retries=0)
    assert sem.stats().get("stores", 0) == 0


async def _until(condition: Any, seconds: float = 10.0) -> None:
    """litellm writes async results from a background task: wait until it has."""
    deadline = time.monotonic() + seconds
    for _ in range(100_000):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.02)


async def test_async_acompletion_path(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    first = await litellm.acompletion(**via(server, model=MODEL, messages=user(QUESTION)))
    await _until(lambda: sem.stats().get("stores", 0) >= 1)
    assert sem.stats()["stores"] == 1
    hit = await litellm.acompletion(**via(server, model=MODEL, messages=user(FILLER)))
    assert hit._hidden_params["cache_hit"] is True
    assert text(hit) == text(first)
    trap = await litellm.acompletion(**via(server, model=MODEL, messages=user(TRAP)))
    assert trap._hidden_params.get("cache_hit") is not True
    assert calls(server) == 2
    # sync and async share the semantic entries
    assert ask(server, user(TYPO))._hidden_params["cache_hit"] is True
    assert calls(server) == 2


def test_uninstall_removes_the_layer(
    tiered: sc.TieredCache, embedder: LocalEmbedder, server: OpenAICompatServer
) -> None:
    before = litellm.cache
    installation = scl.install(tiered, semantic=True, embedder=embedder)
    ask(server, user(QUESTION))
    assert ask(server, user(TYPO))._hidden_params["cache_hit"] is True
    scl.uninstall()
    assert litellm.cache is before
    assert scl.current() is None
    ask(server, user(TYPO))
    assert calls(server) == 2
    # installing again without semantic: exact only, no semantic hit
    scl.install(tiered)
    try:
        assert ask(server, user(FILLER))._hidden_params.get("cache_hit") is not True
        assert calls(server) == 3
        assert installation.semantic is not None
        assert scl.current() is not None and scl.current().semantic is None  # type: ignore[union-attr]
    finally:
        scl.uninstall()


def test_a_ready_semantic_cache_is_used(
    tiered: sc.TieredCache, embedder: LocalEmbedder, server: OpenAICompatServer
) -> None:
    sem = SemanticCache(embedder, tiered, namespace="own-sem")
    installation = scl.install(tiered, semantic=sem)
    try:
        assert installation.semantic is sem and installation.cache.semantic is sem
        ask(server, user(QUESTION))
        assert ask(server, user(TYPO))._hidden_params["cache_hit"] is True
        assert sem.stats()["stores"] == 1
        assert calls(server) == 1
    finally:
        scl.uninstall()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"semantic": True, "threshold": 2.0},
        {"semantic": True, "error_budget": 0},
        {"semantic": "yes"},
        {"semantic": False, "embedder": "text-embedding-3-small"},
        {"semantic": True, "tenant": 42},
    ],
)
def test_bad_semantic_arguments_raise(tiered: sc.TieredCache, kwargs: dict[str, Any]) -> None:
    with pytest.raises(sc.ConfigurationError):
        scl.install(tiered, **kwargs)
    assert scl.current() is None


@pytest.mark.parametrize("control", [{"no-store": True}, {"ttl": 0}], ids=["no-store", "ttl-0"])
def test_per_call_store_controls_apply_to_the_semantic_layer(
    sem_installed: scl.Installation, server: OpenAICompatServer, control: dict[str, Any]
) -> None:
    sem = sem_installed.semantic
    assert sem is not None
    ask(server, user(QUESTION), cache=control)
    assert sem.stats().get("stores", 0) == 0
    ask(server, user(TYPO))
    assert calls(server) == 2


def test_an_expired_semantic_entry_is_a_miss(
    sem_installed: scl.Installation, server: OpenAICompatServer
) -> None:
    ask(server, user(QUESTION), cache={"ttl": 0.5})
    time.sleep(0.6)  # past the entry's lifetime
    ask(server, user(TYPO))
    assert calls(server) == 2
