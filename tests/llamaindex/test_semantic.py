"""CachedLLM(semantic=...): exact first, then the last user turn matched within its scope.

The real ``llama_index.llms.openai.OpenAI`` class against the loopback server (its request
counter says whether the model was asked; its answers carry a digest of the whole
conversation) and the real offline ``LocalEmbedder``.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.llms.openai import OpenAI

import stratacache as sc
import stratacache.llamaindex as scli
from stratacache.llamaindex import CachedLLM, patch_llm, unpatch_llm
from stratacache.semantic import LocalEmbedder, SemanticCache
from stratacache.testing import OpenAICompatServer
from tests.llamaindex.conftest import CountingLLM

QUESTION = "How do I reset my password?"
TYPO = "How do I reset my pasword?"
FILLER = "hi, how do I reset my password please?"
TRAP = "How do I not reset my password?"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
    b"\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def sem(tiered: sc.TieredCache, embedder: LocalEmbedder) -> SemanticCache:
    return SemanticCache(embedder, tiered)


def openai(server: OpenAICompatServer, **kw: Any) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0,
                  **kw)  # fmt: skip


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def calls(server: OpenAICompatServer) -> int:
    return int(server.stats.requests["chat"])


def dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [{"role": m.role.value, "content": m.content} for m in messages]


def test_typo_and_filler_variants_are_served_without_calling_the_model(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    assert cached.semantic is sem
    first = cached.chat(user(QUESTION))
    for variant in (TYPO, FILLER):
        assert cached.chat(user(variant)).message.content == first.message.content
    assert calls(server) == 1
    assert sem.stats()["hit:lexical"] == 2
    assert cached.stats()["semantic_hits"] == 2


def test_a_trap_calls_the_model(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    cached.chat(user(QUESTION))
    trap = cached.chat(user(TRAP))
    assert calls(server) == 2
    assert trap.message.content == server.reply_for(dicts(user(TRAP)), "gpt-4o-mini")


def test_exact_repeats_never_reach_the_semantic_layer(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    cached.chat(user(QUESTION))
    lookups = sem.stats().get("lookups", 0)
    cached.chat(user(QUESTION))
    assert calls(server) == 1
    assert sem.stats().get("lookups", 0) == lookups
    assert sem.stats()["stores"] == 1  # the miss was written to both layers


def test_history_and_system_prompt_are_part_of_the_scope(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    history = [
        ChatMessage(role="user", content="I use the mobile app."),
        ChatMessage(role="assistant", content="Noted."),
    ]
    first = cached.chat([*history, *user(QUESTION)])
    assert cached.chat([*history, *user(TYPO)]).message.content == first.message.content
    assert calls(server) == 1
    for messages in (
        user(TYPO),  # no history: the last turn alone never matches
        [history[0], ChatMessage(role="assistant", content="Noted!"), *user(TYPO)],
        [ChatMessage(role="system", content="Be terse."), *history, *user(TYPO)],
    ):
        answer = cached.chat(messages)
        assert answer.message.content == server.reply_for(dicts(messages), "gpt-4o-mini")
    assert calls(server) == 4


def test_model_configuration_and_call_kwargs_are_part_of_the_scope(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cold = CachedLLM(openai(server, temperature=0), cache=tiered, semantic=sem)
    cold.chat(user(QUESTION))
    assert calls(server) == 1
    warm = CachedLLM(openai(server, temperature=0.9), cache=tiered, semantic=sem)
    warm.chat(user(TYPO))
    assert calls(server) == 2
    cold.chat(user(TYPO), max_tokens=20)  # a call kwarg that changes the answer
    assert calls(server) == 3
    cold.chat(user(FILLER))  # same configuration, no kwargs: served
    assert calls(server) == 3


def test_tenants_are_separated(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    current = {"tenant": "acme"}
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem,
                       tenant=lambda: current["tenant"])  # fmt: skip
    cached.chat(user(QUESTION))
    cached.chat(user(TYPO))
    assert calls(server) == 1
    current["tenant"] = "globex"
    cached.chat(user(TYPO))
    assert calls(server) == 2
    # a string tenant on another wrapper over the same tiers
    other = CachedLLM(openai(server), cache=tiered, semantic=sem, tenant="initech")
    other.chat(user(FILLER))
    assert calls(server) == 3
    acme = CachedLLM(openai(server), cache=tiered, semantic=sem, tenant="acme")
    acme.chat(user(FILLER))
    assert calls(server) == 3


def test_complete_is_matched_on_its_prompt(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    first = cached.complete(QUESTION)
    assert cached.complete(TYPO).text == first.text
    assert calls(server) == 1
    cached.complete(TRAP)
    assert calls(server) == 2


def test_streams_are_stored_complete_and_replayed(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    server.interrupt_stream_after = 2
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises on a cut stream
        for _ in cached.stream_chat(user(QUESTION)):
            pass
    server.interrupt_stream_after = None
    assert sem.stats().get("stores", 0) == 0  # a partial stream is stored in neither layer
    deltas = [c.delta for c in cached.stream_chat(user(QUESTION))]
    assert calls(server) == 2
    assert [c.delta for c in cached.stream_chat(user(TYPO))] == deltas
    assert calls(server) == 2


@pytest.mark.parametrize(
    "last",
    [
        ChatMessage(role=MessageRole.TOOL, content=QUESTION,
                    additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="user", blocks=[TextBlock(text=QUESTION), ImageBlock(image=PNG)]),
    ],
    ids=["tool-result", "image"],
)  # fmt: skip
def test_calls_not_ending_in_user_text_skip_the_layer(
    tiered: sc.TieredCache, sem: SemanticCache, llm: CountingLLM, last: ChatMessage
) -> None:
    cached = CachedLLM(llm, cache=tiered, semantic=sem)
    cached.chat([ChatMessage(role="user", content="Look this up."), last])
    assert sem.stats().get("stores", 0) == 0
    assert sem.stats().get("lookups", 0) == 0
    assert cached.stats()["semantic_skipped: not_user_text"] == 1


def test_several_choices_skip_the_layer(
    tiered: sc.TieredCache, sem: SemanticCache, llm: CountingLLM
) -> None:
    cached = CachedLLM(llm, cache=tiered, semantic=sem)
    cached.chat(user(QUESTION), n=2)
    cached.chat(user(TYPO), n=2)
    assert llm.calls == 2
    assert sem.stats().get("stores", 0) == 0


async def test_async_paths(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    cached = CachedLLM(openai(server), cache=tiered, semantic=sem)
    first = await cached.achat(user(QUESTION))
    assert (await cached.achat(user(FILLER))).message.content == first.message.content
    assert calls(server) == 1
    await cached.achat(user(TRAP))
    assert calls(server) == 2
    # sync and async share entries
    assert cached.chat(user(TYPO)).message.content == first.message.content
    done = await cached.acomplete("What is the capital of France?")
    assert (await cached.acomplete("What is the capitol of France?")).text == done.text
    assert calls(server) == 3
    stream = await cached.astream_chat(user("Which plan includes priority support?"))
    deltas = [c.delta async for c in stream]
    replay = await cached.astream_chat(user("hi, which plan includes priority support please?"))
    assert [c.delta async for c in replay] == deltas
    assert calls(server) == 4


def test_semantic_true_builds_a_local_layer(tiered: sc.TieredCache, llm: CountingLLM) -> None:
    cached = CachedLLM(llm, cache=tiered, semantic=True)
    assert isinstance(cached.semantic, SemanticCache)
    assert isinstance(cached.semantic.embedder, LocalEmbedder)
    cached.complete(QUESTION)
    cached.complete(TYPO)
    assert llm.calls == 1
    assert CachedLLM(llm, cache=tiered).semantic is None  # default: exact only


@pytest.fixture
def settings_llm(server: OpenAICompatServer) -> OpenAI:
    model = openai(server)
    Settings.llm = model
    return model


@pytest.mark.parametrize("in_place", [False, True])
def test_install_passes_semantic_through(
    server: OpenAICompatServer,
    tiered: sc.TieredCache,
    sem: SemanticCache,
    settings_llm: OpenAI,
    in_place: bool,
) -> None:
    scli.install(tiered, semantic=sem, tenant="acme", in_place=in_place, embed_model=False)
    first = Settings.llm.chat(user(QUESTION))
    assert Settings.llm.chat(user(TYPO)).message.content == first.message.content
    assert calls(server) == 1
    scli.uninstall()
    assert Settings.llm is settings_llm
    Settings.llm.chat(user(TYPO))
    assert calls(server) == 2


def test_patch_llm_semantic(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    model = openai(server)
    patch_llm(model, tiered, semantic=sem)
    try:
        model.chat(user(QUESTION))
        model.chat(user(FILLER))
        assert calls(server) == 1
    finally:
        unpatch_llm(model)


@pytest.mark.parametrize(
    "kwargs", [{"semantic": "yes"}, {"semantic": True, "tenant": 3}, {"tenant": 3.5}]
)
def test_bad_semantic_arguments_raise(
    tiered: sc.TieredCache, llm: CountingLLM, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(sc.ConfigurationError):
        CachedLLM(llm, cache=tiered, **kwargs)
    Settings.llm = llm
    with pytest.raises(sc.ConfigurationError):
        scli.install(tiered, **kwargs)
    assert not scli.installed()
