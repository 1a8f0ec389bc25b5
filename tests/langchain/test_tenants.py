"""Tenant isolation in the LangChain adapters: no answer is ever served across tenants.

A real ``ChatOpenAI`` against the loopback provider, whose request counter says whether a call
reached the model (a miss) or was served by the cache, and whose answers carry a digest of the
whole request. Tenants come from a ``contextvars.ContextVar`` read per call, as a web app does.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.retrievers import BaseRetriever
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

import stratacache as sc
from stratacache.errors import ConfigurationError
from stratacache.integrations.langchain._limited import ModelLimits, rate_limited
from stratacache.langchain import CachedRetriever, LLMCache, SemanticLLMCache, cache_streaming
from stratacache.semantic import LocalEmbedder
from stratacache.testing import OpenAICompatServer

VICTIM = "How do I reset my password?"
#: What the victim asks later: the question itself and two ways a lookup could match semantically.
VICTIM_ASKS = [VICTIM, "How do I reset my pasword?", "Hi, how do I reset my password please?"]
#: What an attacker plants to catch the victim's future questions: an exact copy and paraphrases.
PLANTED = [
    VICTIM,
    "How do I reset my pasword?",
    "Hi, how do I reset my password please?",
    "how do i reset my password",
    "How do I reset my password??",
    "Please, how do I reset my password?",
    "How do I reset my password, please?",
]

TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


def _model(server: OpenAICompatServer, cache: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key=SecretStr("test"), max_retries=0,
        model="gpt-4o-mini", temperature=0, cache=cache,
    )  # fmt: skip


def _calls(server: OpenAICompatServer) -> int:
    return int(server.stats.requests["chat"])


def _expected(server: OpenAICompatServer, question: str) -> str:
    return server.reply_for([{"role": "user", "content": question}], "gpt-4o-mini")


def _ask_as(tenant: str | None, model: ChatOpenAI, question: str) -> str:
    token = TENANT.set(tenant)
    try:
        content = model.invoke(question).content
    finally:
        TENANT.reset(token)
    assert isinstance(content, str)
    return content


def _llm_cache(cache: sc.TieredCache, local: LocalEmbedder, kind: str) -> LLMCache:
    if kind == "exact":
        return LLMCache(cache, tenant=TENANT.get)
    if kind == "semantic":
        return SemanticLLMCache(cache, embeddings=local, tenant=TENANT.get)
    limits = ModelLimits({"*": {"rpm": 100_000}})
    return rate_limited(LLMCache, limits, cache, tenant=TENANT.get)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["exact", "semantic", "rate_limited"])
def test_identical_request_of_another_tenant_is_a_miss(
    kind: str, server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    model = _model(server, _llm_cache(memory_cache, local, kind))
    assert _ask_as("acme", model, VICTIM) == _expected(server, VICTIM)
    assert _ask_as("acme", model, VICTIM) == _expected(server, VICTIM)
    assert _calls(server) == 1  # acme's repeat is a hit: the cache works within a tenant
    assert _ask_as("globex", model, VICTIM) == _expected(server, VICTIM)
    assert _calls(server) == 2  # globex's identical request went to the provider
    _ask_as("globex", model, VICTIM)
    _ask_as("acme", model, VICTIM)
    assert _calls(server) == 2  # each tenant keeps its own entry


def test_paraphrase_of_another_tenant_is_a_miss(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    model = _model(server, SemanticLLMCache(memory_cache, embeddings=local, tenant=TENANT.get))
    _ask_as("acme", model, VICTIM)
    assert _ask_as("acme", model, VICTIM_ASKS[1]) == _expected(server, VICTIM)
    assert _calls(server) == 1  # the paraphrase is served within acme
    assert _ask_as("globex", model, VICTIM_ASKS[1]) == _expected(server, VICTIM_ASKS[1])
    assert _calls(server) == 2


def _plant(tenant: str | None, cache: LLMCache, model: ChatOpenAI, question: str) -> None:
    """Store an answer of the attacker's choosing for ``question``, through the very
    ``BaseCache.update`` call LangChain makes after a model call (same prompt and llm_string)."""
    token = TENANT.set(tenant)
    try:
        prompt, llm_string = dumps([HumanMessage(question)]), model._get_llm_string()
        cache.update(prompt, llm_string, [ChatGeneration(message=AIMessage(f"PLANTED {question}"))])
    finally:
        TENANT.reset(token)


def test_cache_attack_planted_entries_never_reach_the_victim(
    server: OpenAICompatServer, tiered: sc.TieredCache, local: LocalEmbedder
) -> None:
    """The attacker fills its partition with the victim's question and paraphrases of it;
    every one of the victim's questions still goes to the provider and gets its own answer."""
    cache = SemanticLLMCache(tiered, embeddings=local, tenant=TENANT.get)
    model = _model(server, cache)
    for question in PLANTED:
        _plant("attacker", cache, model, question)
    # The plants work: they serve the attacker's own questions, also reworded, with no request.
    assert _ask_as("attacker", model, VICTIM).startswith("PLANTED")
    assert _ask_as("attacker", model, "Hello, how do I reset my password?").startswith("PLANTED")
    assert _calls(server) == 0
    # One fresh victim per question: its partition is empty, so each question must be a miss.
    for n, question in enumerate(VICTIM_ASKS, 1):
        answer = _ask_as(f"victim-{n}", model, question)
        assert _calls(server) == n, f"{question!r} was served from the cache"
        assert answer == _expected(server, question)
    # The same through a second adapter over the same tiers (another worker of the same app).
    other = SemanticLLMCache(tiered, embeddings=local, tenant=TENANT.get)
    for question in VICTIM_ASKS:
        assert _ask_as(question, _model(server, other), question) == _expected(server, question)
    assert _calls(server) == 2 * len(VICTIM_ASKS)


def test_without_tenants_the_same_plants_would_be_served(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    """The control: the attack above succeeds when everyone shares one partition."""
    cache = SemanticLLMCache(memory_cache, embeddings=local)
    model = _model(server, cache)
    for question in PLANTED[1:]:  # not even the exact copy
        _plant(None, cache, model, question)
    assert str(model.invoke(VICTIM).content).startswith("PLANTED")
    assert _calls(server) == 0


@pytest.mark.parametrize("kind", ["exact", "semantic"])
def test_no_tenant_and_a_tenant_never_share(
    kind: str, server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    model = _model(server, _llm_cache(memory_cache, local, kind))
    _ask_as(None, model, VICTIM)
    _ask_as("acme", model, VICTIM)
    assert _calls(server) == 2
    _ask_as("acme", model, "What is the status of order 48213?")
    _ask_as(None, model, "What is the status of order 48213?")
    assert _calls(server) == 4
    _ask_as(None, model, VICTIM)
    _ask_as("acme", model, VICTIM)
    assert _calls(server) == 4


def test_namespaces_over_a_shared_redis_never_see_each_other(
    server: OpenAICompatServer,
    shared_redis_caches: tuple[sc.TieredCache, sc.TieredCache],
    local: LocalEmbedder,
) -> None:
    one, two = shared_redis_caches
    a = SemanticLLMCache(one, embeddings=local, namespace="app-a")
    b = SemanticLLMCache(two, embeddings=local, namespace="app-b")
    c = LLMCache(two, namespace="app-c")
    a_again = SemanticLLMCache(two, embeddings=local, namespace="app-a")
    _model(server, a).invoke(VICTIM)
    _model(server, b).invoke(VICTIM_ASKS[1])  # would be a's semantic hit
    _model(server, c).invoke(VICTIM)  # would be a's exact hit
    assert _calls(server) == 3
    _model(server, a_again).invoke(VICTIM_ASKS[2])
    _model(server, a_again).invoke(VICTIM)
    assert _calls(server) == 3  # the control: app-a's entries are in the shared Redis
    a.clear()
    # Another process learns of a clear within its generation_refresh.
    deadline = time.monotonic() + 30
    while _calls(server) == 3 and time.monotonic() < deadline:
        _model(server, a_again).invoke(VICTIM)
        time.sleep(0.05)
    assert _calls(server) == 4  # app-a is gone for every process...
    _model(server, b).invoke(VICTIM_ASKS[1])
    _model(server, c).invoke(VICTIM)
    assert _calls(server) == 4  # ...and app-b and app-c are intact


def test_threads_and_tasks_interleaving_tenants_never_cross(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder
) -> None:
    """Tenants from a contextvar, set per thread and per asyncio task, asking at once."""
    cache = SemanticLLMCache(memory_cache, embeddings=local, tenant=TENANT.get)
    model = _model(server, cache)
    _ask_as("seed", model, VICTIM)  # every later request would hit this entry if tenants leaked
    threads = [f"thread-{i}" for i in range(4)]
    tasks = [f"task-{i}" for i in range(4)]
    answers: dict[str, list[str]] = {t: [] for t in threads + tasks}
    go = threading.Barrier(len(threads) + 1, timeout=60)

    def in_thread(tenant: str, question: str) -> None:
        go.wait()
        answers[tenant].append(_ask_as(tenant, model, question))

    async def in_task(tenant: str, question: str) -> None:
        TENANT.set(tenant)  # a task runs in a copy of the context: this stays in the task
        await asyncio.sleep(0)
        content = (await model.ainvoke(question)).content
        assert isinstance(content, str)
        answers[tenant].append(content)

    async def round_of(question: str) -> None:
        workers = [threading.Thread(target=in_thread, args=(t, question)) for t in threads]
        for worker in workers:
            worker.start()
        go.wait()
        await asyncio.gather(*(in_task(t, question) for t in tasks))
        for worker in workers:
            worker.join(60)

    asyncio.run(round_of(VICTIM))
    assert _calls(server) == 1 + len(threads) + len(tasks)  # not one cross-tenant hit
    asyncio.run(round_of(VICTIM_ASKS[1]))  # a paraphrase, served from each tenant's own entry
    assert _calls(server) == 1 + len(threads) + len(tasks)
    assert all(a == [_expected(server, VICTIM)] * 2 for a in answers.values()), answers


def test_streaming_keeps_tenants_apart(
    server: OpenAICompatServer, memory_cache: sc.TieredCache
) -> None:
    model = cache_streaming(_model(server, LLMCache(memory_cache, tenant=TENANT.get)))

    def stream_as(tenant: str) -> str:
        token = TENANT.set(tenant)
        try:
            return "".join(str(chunk.content) for chunk in model.stream(VICTIM))
        finally:
            TENANT.reset(token)

    assert stream_as("acme") == _expected(server, VICTIM)
    assert stream_as("acme") == _expected(server, VICTIM)
    assert _calls(server) == 1
    assert stream_as("globex") == _expected(server, VICTIM)
    assert _calls(server) == 2


class TenantDocs(BaseRetriever):
    """A retriever that filters per user, as a real one does (row-level security)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        who = TENANT.get()
        return [Document(page_content=f"{who}'s private notes on {query}")]


def test_retriever_results_are_never_served_across_tenants(memory_cache: sc.TieredCache) -> None:
    retriever = CachedRetriever(TenantDocs(), cache=memory_cache, tenant=TENANT.get)
    for tenant in ("acme", "globex", None, "acme", "globex", None):
        token = TENANT.set(tenant)
        try:
            docs = retriever.invoke("payroll")
        finally:
            TENANT.reset(token)
        assert [d.page_content for d in docs] == [f"{tenant}'s private notes on payroll"]
    assert (retriever.stats()["misses"], retriever.stats()["hits"]) == (3, 3)
    # The control: without tenant= the second user would read the first one's documents.
    shared = CachedRetriever(TenantDocs(), cache=memory_cache, namespace="shared")
    for tenant in ("acme", "globex"):
        token = TENANT.set(tenant)
        try:
            docs = shared.invoke("payroll")
        finally:
            TENANT.reset(token)
    assert docs[0].page_content == "acme's private notes on payroll"


def test_a_tenant_that_is_not_a_string_is_an_error(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError):
        LLMCache(memory_cache, tenant=7)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CachedRetriever(TenantDocs(), cache=memory_cache, tenant=b"acme")
    # A callable is asked per call: what it returns is checked then, and the call bypasses the
    # cache rather than guessing a partition (a user object's str() may hold its address).
    cache = LLMCache(memory_cache, tenant=lambda: object())
    model = _model(server, cache)
    with caplog.at_level(logging.WARNING, "stratacache"):
        model.invoke(VICTIM)
        model.invoke(VICTIM)
    assert _calls(server) == 2
    assert cache.stats()["tenant_errors"] == 4  # lookup and store, twice
    assert "tenant() returned object" in caplog.text
