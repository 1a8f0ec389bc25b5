"""SemanticLLMCache through LangChain's own cache hooks: exact first, then semantic.

The model's answers are numbered (``r1``, ``r2``, ...), so an answer tells whether the model
was called: a repeated ``r1`` was served by the cache, a fresh ``r2`` came from the model.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import PromptTemplate
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

import stratacache as sc
from stratacache.errors import ConfigurationError
from stratacache.langchain import LLMCache, SemanticLLMCache
from stratacache.semantic import LocalEmbedder
from stratacache.testing import OpenAICompatServer

RESET = "How do I reset my password?"
RESET_TYPO = "How do I reset my pasword?"
RESET_FILLER = "Hi, how do I reset my password please?"
ORDER = "What is the status of order 48213?"
ORDER_TRAP = "What is the status of order 48231?"
INCLUDE = "Should the report include the appendix?"
EXCLUDE = "Should the report exclude the appendix?"


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    """The real offline e5 model (loaded once per process)."""
    return LocalEmbedder()


@pytest.fixture
def sem(memory_cache: sc.TieredCache, local: LocalEmbedder) -> SemanticLLMCache:
    return SemanticLLMCache(memory_cache, embeddings=local)


@pytest.fixture
def installed(sem: SemanticLLMCache) -> Iterator[SemanticLLMCache]:
    """``sem`` as LangChain's global cache, the documented one-liner."""
    set_llm_cache(sem)
    try:
        yield sem
    finally:
        set_llm_cache(None)


def _chat(n: int = 8) -> FakeListChatModel:
    return FakeListChatModel(responses=[f"r{i}" for i in range(1, n + 1)])


def _ask(model: Any, question: Any, **kwargs: Any) -> str:
    content = model.invoke(question, **kwargs).content
    assert isinstance(content, str)
    return content


# -- the decision, end to end ----------------------------------------------------------------


def test_exact_hit_is_served_by_the_exact_layer(installed: SemanticLLMCache) -> None:
    model = _chat()
    assert _ask(model, RESET) == "r1"
    assert _ask(model, RESET) == "r1"
    stats = installed.stats()
    assert stats["hits"] == 1
    assert stats.get("semantic_hits", 0) == 0
    assert stats["semantic"]["stores"] == 1


@pytest.mark.parametrize("variant", [RESET_TYPO, RESET_FILLER, RESET.lower().rstrip("?")])
def test_a_variant_is_served_without_calling_the_model(
    installed: SemanticLLMCache, variant: str
) -> None:
    model = _chat()
    assert _ask(model, RESET) == "r1"
    assert _ask(model, variant) == "r1"
    assert installed.stats()["semantic_hits"] == 1
    # Each hit is a fresh message, as a real call would be.
    assert model.invoke(variant).id != model.invoke(variant).id


@pytest.mark.parametrize(("cached", "trap"), [(ORDER, ORDER_TRAP), (INCLUDE, EXCLUDE)])
def test_a_trap_calls_the_model(installed: SemanticLLMCache, cached: str, trap: str) -> None:
    model = _chat()
    assert _ask(model, cached) == "r1"
    assert _ask(model, trap) == "r2"
    assert _ask(model, trap) == "r2"  # its own answer is now cached
    assert installed.stats().get("semantic_hits", 0) == 0


def test_the_same_last_turn_after_other_history_is_a_miss(installed: SemanticLLMCache) -> None:
    model = _chat()
    about_bank: list[BaseMessage] = [HumanMessage("I use the bank app."), AIMessage("Noted.")]
    about_mail: list[BaseMessage] = [HumanMessage("I use the mail app."), AIMessage("Noted.")]
    assert _ask(model, [*about_bank, HumanMessage(RESET)]) == "r1"
    assert _ask(model, [*about_bank, HumanMessage(RESET_TYPO)]) == "r1"  # same history: hit
    assert _ask(model, [*about_mail, HumanMessage(RESET)]) == "r2"  # the very same last turn
    assert _ask(model, [*about_mail, HumanMessage(RESET_TYPO)]) == "r2"  # served within mail
    assert _ask(model, [HumanMessage(RESET_TYPO)]) == "r3"  # no history is a history too


def test_another_system_prompt_is_a_miss(installed: SemanticLLMCache) -> None:
    model = _chat()
    brief, french = SystemMessage("Be brief."), SystemMessage("Answer in French.")
    assert _ask(model, [brief, HumanMessage(RESET)]) == "r1"
    assert _ask(model, [brief, HumanMessage(RESET_TYPO)]) == "r1"
    assert _ask(model, [french, HumanMessage(RESET_TYPO)]) == "r2"


def test_other_call_parameters_are_a_miss(installed: SemanticLLMCache) -> None:
    model = _chat()
    assert _ask(model, RESET, temperature=0) == "r1"
    assert _ask(model, RESET_TYPO, temperature=0) == "r1"
    assert _ask(model, RESET_TYPO, temperature=0.7) == "r2"
    assert _ask(model, RESET_TYPO, stop=["\n"]) == "r3"


def _openai(server: OpenAICompatServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.base_url, api_key=SecretStr("test"), max_retries=0, **kwargs)


def test_a_real_client_other_model_or_temperature_is_a_miss(
    installed: SemanticLLMCache, server: OpenAICompatServer
) -> None:
    mini = _openai(server, model="gpt-4o-mini", temperature=0)
    first = _ask(mini, RESET)
    assert _ask(mini, RESET_TYPO) == first
    assert server.stats.requests["chat"] == 1
    _ask(_openai(server, model="gpt-4o", temperature=0), RESET_TYPO)
    assert server.stats.requests["chat"] == 2
    _ask(_openai(server, model="gpt-4o-mini", temperature=0.7), RESET_TYPO)
    assert server.stats.requests["chat"] == 3
    # The same model built again in another object still shares answers.
    assert _ask(_openai(server, model="gpt-4o-mini", temperature=0), RESET_FILLER) == first
    assert server.stats.requests["chat"] == 3


def test_tenants_never_share_semantic_answers(
    memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    current: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="a")
    cache = SemanticLLMCache(memory_cache, embeddings=local, tenant=current.get)
    model = FakeListChatModel(responses=["r1", "r2", "r3"], cache=cache)
    assert _ask(model, RESET) == "r1"
    assert _ask(model, RESET_TYPO) == "r1"
    token = current.set("b")
    try:
        assert _ask(model, RESET_TYPO) == "r2"
        assert _ask(model, RESET_FILLER) == "r2"  # b's own entry serves b
    finally:
        current.reset(token)
    assert _ask(model, RESET_FILLER) == "r1"  # and a's serves a


def test_a_fixed_tenant_is_part_of_the_scope(
    memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    acme = SemanticLLMCache(memory_cache, embeddings=local, tenant="acme")
    other = SemanticLLMCache(memory_cache, embeddings=local, tenant="other")
    model = FakeListChatModel(responses=["r1", "r2"], cache=acme)
    assert _ask(model, RESET) == "r1"
    assert _ask(model, RESET_TYPO) == "r1"
    model.cache = other
    assert _ask(model, RESET_TYPO) == "r2"


async def test_async_path(installed: SemanticLLMCache) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(f"r{i}") for i in range(1, 5)]))
    assert (await model.ainvoke(RESET)).content == "r1"
    assert (await model.ainvoke(RESET)).content == "r1"
    assert (await model.ainvoke(RESET_TYPO)).content == "r1"
    assert (await model.ainvoke(ORDER)).content == "r2"
    assert (await model.ainvoke(ORDER_TRAP)).content == "r3"
    stats = installed.stats()
    assert (stats["hits"], stats["semantic_hits"]) == (2, 1)
    await installed.aclear()
    assert (await model.ainvoke(RESET_TYPO)).content == "r4"


# -- when the semantic layer stays out -------------------------------------------------------


def _tool_turn(result: str) -> list[BaseMessage]:
    return [
        HumanMessage("add 2 and 3"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"}]),
        ToolMessage(result, tool_call_id="call_1"),
    ]


def _image_turn(text: str) -> list[BaseMessage]:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    return [HumanMessage(content=[{"type": "text", "text": text}, image])]


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        (_tool_turn("5"), _tool_turn("5."), "not_user_turn"),
        (_image_turn(RESET), _image_turn(RESET_TYPO), "not_plain_text"),
        ([HumanMessage(RESET), AIMessage("Sure:")], [HumanMessage(RESET), AIMessage("Sure")],
         "not_user_turn"),
    ],
    ids=["tool-result", "multimodal", "ai-prefill"],
)  # fmt: skip
def test_semantic_layer_is_skipped(
    installed: SemanticLLMCache, first: Any, second: Any, reason: str
) -> None:
    model = _chat()
    assert _ask(model, first) == "r1"
    assert _ask(model, first) == "r1"  # the exact layer still serves it
    assert _ask(model, second) == "r2"
    stats = installed.stats()
    assert stats[f"semantic_skipped:{reason}"] == 2
    assert stats["semantic"].get("stores", 0) == 0
    assert stats["semantic"].get("lookups", 0) == 0


def test_multi_generation_requests_skip_the_semantic_layer(installed: SemanticLLMCache) -> None:
    model = _chat()
    assert _ask(model, RESET, n=2) == "r1"
    assert _ask(model, RESET, n=2) == "r1"
    assert _ask(model, RESET_TYPO, n=2) == "r2"
    stats = installed.stats()
    assert stats["semantic_skipped:multi_generation"] == 2
    assert stats["semantic"].get("stores", 0) == 0


def test_plain_text_block_is_plain_text(installed: SemanticLLMCache) -> None:
    model = _chat()
    assert _ask(model, [HumanMessage(content=[{"type": "text", "text": RESET}])]) == "r1"
    assert _ask(model, RESET_TYPO) == "r1"


def test_empty_and_error_results_are_stored_in_neither_layer(
    memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    cache = SemanticLLMCache(memory_cache, embeddings=local)
    model = FakeListChatModel(responses=["", "r2", "r3"], cache=cache)
    assert _ask(model, RESET) == ""
    assert _ask(model, RESET_TYPO) == "r2"
    assert cache.stats()["skipped_writes"] == 1

    class Flaky(FakeListChatModel):
        fail: bool = True

        def _call(self, *args: Any, **kwargs: Any) -> str:
            if self.fail:
                self.fail = False
                raise RuntimeError("provider down")
            return super()._call(*args, **kwargs)

    flaky = Flaky(responses=["ok"], cache=cache)
    with pytest.raises(RuntimeError):
        flaky.invoke(ORDER)
    assert _ask(flaky, ORDER) == "ok"
    assert cache.stats()["semantic"]["stores"] == 2  # RESET_TYPO's r2 and ORDER's ok only


# -- text-completion models (string prompts) -------------------------------------------------


def test_llm_string_prompts(installed: SemanticLLMCache) -> None:
    llm = FakeListLLM(responses=["r1", "r2", "r3", "r4"])
    assert llm.invoke(RESET) == "r1"
    assert llm.invoke(RESET) == "r1"
    assert llm.invoke(RESET_TYPO) == "r1"
    assert llm.invoke(ORDER) == "r2"
    assert llm.invoke(ORDER_TRAP) == "r3"
    stats = installed.stats()
    assert (stats["hits"], stats["semantic_hits"]) == (2, 1)


def test_llm_prompt_template_is_judged_on_the_whole_text(installed: SemanticLLMCache) -> None:
    chain = PromptTemplate.from_template("You are a support agent.\nQuestion: {q}") | FakeListLLM(
        responses=["r1", "r2", "r3"]
    )
    assert chain.invoke({"q": RESET}) == "r1"
    assert chain.invoke({"q": RESET_TYPO}) == "r1"
    assert chain.invoke({"q": ORDER}) == "r2"
    assert chain.invoke({"q": ORDER_TRAP}) == "r3"


# -- the LLMCache contract ---------------------------------------------------------------------


def test_it_is_an_llm_cache_sharing_exact_entries(
    memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    cache = SemanticLLMCache(memory_cache, embeddings=local)
    assert isinstance(cache, LLMCache) and bool(cache)
    model = FakeListChatModel(responses=["r1", "r2"], cache=cache)
    assert _ask(model, RESET) == "r1"
    model.cache = LLMCache(memory_cache)  # same tiers, same exact namespace
    assert _ask(model, RESET) == "r1"
    assert cache.cache.namespace == "lc-llm"
    assert cache.semantic.cache.namespace == "lc-sem"


def test_clear_clears_both_layers(memory_cache: sc.TieredCache, local: LocalEmbedder) -> None:
    cache = SemanticLLMCache(memory_cache, embeddings=local)
    other = LLMCache(memory_cache, namespace="other")
    model = FakeListChatModel(responses=["r1", "r2", "r3"], cache=cache)
    elsewhere = FakeListChatModel(responses=["o", "z"], cache=other)
    assert _ask(model, RESET) == "r1"
    assert _ask(elsewhere, RESET) == "o"
    cache.clear()
    assert _ask(model, RESET) == "r2"  # neither layer has r1 any more
    assert _ask(model, RESET_TYPO) == "r2"  # and the semantic layer refills
    assert _ask(elsewhere, RESET) == "o"  # another namespace is untouched


def test_namespaces(memory_cache: sc.TieredCache, local: LocalEmbedder) -> None:
    named = SemanticLLMCache(memory_cache.with_namespace("app"), embeddings=local)
    assert (named.cache.namespace, named.semantic.cache.namespace) == ("app.lc-llm", "app.lc-sem")
    own = SemanticLLMCache(memory_cache, embeddings=local, namespace="mine")
    assert (own.cache.namespace, own.semantic.cache.namespace) == ("mine", "mine.lc-sem")


def test_stats_merge_both_layers(installed: SemanticLLMCache) -> None:
    model = _chat()
    _ask(model, RESET)
    _ask(model, RESET)
    _ask(model, RESET_TYPO)
    _ask(model, ORDER)
    stats = installed.stats()
    assert (stats["hits"], stats["semantic_hits"], stats["misses"]) == (2, 1, 2)
    assert stats["semantic"]["hits"] == 1
    assert stats["semantic"]["hit:lexical"] == 1
    assert stats["cache"]["namespace"] == "lc-llm"


# -- configuration, verifier, failures -------------------------------------------------------


def test_verifier_sees_the_answer_text(memory_cache: sc.TieredCache, local: LocalEmbedder) -> None:
    seen: list[tuple[str, str, Any]] = []

    def verifier(new: str, cached: str, answer: Any) -> bool:
        seen.append((new, cached, answer))
        return True

    cache = SemanticLLMCache(memory_cache, embeddings=local, verifier=verifier)
    model = FakeListChatModel(responses=["r1", "r2"], cache=cache)
    assert _ask(model, RESET) == "r1"
    assert _ask(model, "How do I reset my username?") == "r1"  # the verifier said yes
    assert seen == [("How do I reset my username?", RESET, "r1")]


def test_bad_tenant_argument_is_a_configuration_error(memory_cache: sc.TieredCache) -> None:
    with pytest.raises(ConfigurationError):
        SemanticLLMCache(memory_cache, embeddings=DeterministicFakeEmbedding(size=8), tenant=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SemanticLLMCache(memory_cache, embeddings=DeterministicFakeEmbedding(size=8), threshold=2)


def test_a_failing_tenant_callable_bypasses_both_layers(
    memory_cache: sc.TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    def tenant() -> str:
        raise LookupError("no request context")

    cache = SemanticLLMCache(
        memory_cache, embeddings=DeterministicFakeEmbedding(size=16), tenant=tenant
    )
    model = FakeListChatModel(responses=["r1", "r2"], cache=cache)
    with caplog.at_level(logging.WARNING, "stratacache"):
        assert _ask(model, RESET) == "r1"
        assert _ask(model, RESET) == "r2"  # no tenant, no partition: neither read nor written
    assert cache.stats()["tenant_errors"] == 4  # lookup and store, twice
    assert cache.stats()["semantic"].get("stores", 0) == 0
    assert "no tenant for this call" in caplog.text


def test_a_failing_embedder_is_a_miss(memory_cache: sc.TieredCache) -> None:
    class Broken(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise OSError("embedding service down")

    cache = SemanticLLMCache(memory_cache, embeddings=Broken(size=16))
    model = FakeListChatModel(responses=["r1", "r2", "r3"], cache=cache)
    assert _ask(model, RESET) == "r1"
    assert _ask(model, RESET) == "r1"
    assert _ask(model, RESET_TYPO) == "r2"
