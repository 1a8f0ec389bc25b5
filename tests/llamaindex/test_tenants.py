"""Tenant isolation in the LlamaIndex adapters: no answer is ever served across tenants.

The real ``llama_index.llms.openai.OpenAI`` against the loopback provider (its request counter
says whether a call reached the model; its answers carry a digest of the conversation), the
real offline ``LocalEmbedder`` for the semantic layer, and tenants from a
``contextvars.ContextVar`` read per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.llms.openai import OpenAI

import stratacache as sc
import stratacache.llamaindex as scli
from stratacache.llamaindex import CachedLLM, CachedRetriever, patch_llm, unpatch_llm
from stratacache.semantic import LocalEmbedder, SemanticCache
from stratacache.testing import OpenAICompatServer
from tests.llamaindex.conftest import CountingEmbedding

VICTIM = "How do I reset my password?"
VICTIM_ASKS = [VICTIM, "How do I reset my pasword?", "hi, how do I reset my password please?"]
PLANTED = [
    VICTIM,
    "How do I reset my pasword?",
    "hi, how do I reset my password please?",
    "how do i reset my password",
    "How do I reset my password??",
    "Please, how do I reset my password?",
]

TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def sem(tiered: sc.TieredCache, embedder: LocalEmbedder) -> SemanticCache:
    return SemanticCache(embedder, tiered)


def openai(server: OpenAICompatServer) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def calls(server: OpenAICompatServer) -> int:
    return int(server.stats.requests["chat"])


def expected(server: OpenAICompatServer, question: str) -> str:
    return server.reply_for([{"role": "user", "content": question}], "gpt-4o-mini")


def as_tenant(tenant: str | None, call: Callable[[], Any]) -> Any:
    token = TENANT.set(tenant)
    try:
        return call()
    finally:
        TENANT.reset(token)


def chat_as(tenant: str | None, llm: Any, question: str) -> str:
    return str(as_tenant(tenant, lambda: llm.chat(user(question))).message.content)


@pytest.fixture(params=["exact", "semantic", "patch_llm", "install"])
def tenant_llm(
    request: pytest.FixtureRequest,
    server: OpenAICompatServer,
    tiered: sc.TieredCache,
    sem: SemanticCache,
) -> Iterator[Any]:
    """Every way an app gets a cached LLM, each with the tenant read per call."""
    if request.param == "exact":
        yield CachedLLM(openai(server), cache=tiered, tenant=TENANT.get)
    elif request.param == "semantic":
        yield CachedLLM(openai(server), cache=tiered, semantic=sem, tenant=TENANT.get)
    elif request.param == "patch_llm":
        model = patch_llm(openai(server), tiered, semantic=sem, tenant=TENANT.get)
        yield model
        unpatch_llm(model)
    else:
        Settings.llm = openai(server)
        scli.install(tiered, semantic=sem, tenant=TENANT.get, embed_model=False)
        yield Settings.llm


def test_identical_request_of_another_tenant_is_a_miss(
    tenant_llm: Any, server: OpenAICompatServer
) -> None:
    assert chat_as("acme", tenant_llm, VICTIM) == expected(server, VICTIM)
    assert chat_as("acme", tenant_llm, VICTIM) == expected(server, VICTIM)
    assert calls(server) == 1  # acme's repeat is a hit: the cache works within a tenant
    assert chat_as("globex", tenant_llm, VICTIM) == expected(server, VICTIM)
    assert calls(server) == 2  # globex's identical request went to the provider
    chat_as("globex", tenant_llm, VICTIM)
    chat_as("acme", tenant_llm, VICTIM)
    assert calls(server) == 2


def test_identical_completion_and_stream_of_another_tenant_are_misses(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    llm = CachedLLM(openai(server), cache=tiered, semantic=sem, tenant=TENANT.get)
    as_tenant("acme", lambda: llm.complete(VICTIM))
    as_tenant("globex", lambda: llm.complete(VICTIM))
    assert calls(server) == 2
    as_tenant("acme", lambda: "".join(r.delta or "" for r in llm.stream_chat(user(VICTIM))))
    as_tenant("globex", lambda: "".join(r.delta or "" for r in llm.stream_chat(user(VICTIM))))
    assert calls(server) == 4
    as_tenant("acme", lambda: llm.complete(VICTIM))
    as_tenant("globex", lambda: list(llm.stream_chat(user(VICTIM))))
    assert calls(server) == 4


def test_paraphrase_of_another_tenant_is_a_miss(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    llm = CachedLLM(openai(server), cache=tiered, semantic=sem, tenant=TENANT.get)
    chat_as("acme", llm, VICTIM)
    assert chat_as("acme", llm, VICTIM_ASKS[1]) == expected(server, VICTIM)
    assert calls(server) == 1
    assert chat_as("globex", llm, VICTIM_ASKS[1]) == expected(server, VICTIM_ASKS[1])
    assert calls(server) == 2


class Attacker(CustomLLM):
    """Answers whatever the attacker wants cached (what a prompt injection makes a model say)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini")

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=f"PLANTED {prompt}")

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        yield self.complete(prompt)


def test_cache_attack_planted_entries_never_reach_the_victim(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    """The attacker shares the victim's model identity (``model_id``) and tiers, and plants
    the victim's question and paraphrases with answers of its choosing."""
    attacker = CachedLLM(Attacker(), cache=tiered, semantic=sem, model_id="bot", tenant="attacker")
    for question in PLANTED:
        assert chat_as(None, attacker, question).startswith("PLANTED")
    victim = CachedLLM(
        openai(server), cache=tiered, semantic=sem, model_id="bot", tenant=TENANT.get
    )
    # One fresh victim per question: its partition is empty, so each question must be a miss.
    for n, question in enumerate(VICTIM_ASKS, 1):
        assert chat_as(f"victim-{n}", victim, question) == expected(server, question)
        assert calls(server) == n, f"{question!r} was served from the cache"
    # The plants work: they serve the attacker's reworded question without a model call.
    again = CachedLLM(openai(server), cache=tiered, semantic=sem, model_id="bot", tenant="attacker")
    assert chat_as(None, again, "Hello, how do I reset my password?").startswith("PLANTED")
    assert calls(server) == len(VICTIM_ASKS)


def test_without_tenants_the_same_plants_would_be_served(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    """The control: the same attack succeeds when everyone shares one partition."""
    attacker = CachedLLM(Attacker(), cache=tiered, semantic=sem, model_id="bot")
    for question in PLANTED[1:]:
        attacker.chat(user(question))
    victim = CachedLLM(openai(server), cache=tiered, semantic=sem, model_id="bot")
    assert str(victim.chat(user(VICTIM)).message.content).startswith("PLANTED")
    assert calls(server) == 0


@pytest.mark.parametrize("semantic", [False, True])
def test_no_tenant_and_a_tenant_never_share(
    semantic: bool, server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    llm = CachedLLM(openai(server), cache=tiered, semantic=sem if semantic else False,
                    tenant=TENANT.get)  # fmt: skip
    chat_as(None, llm, VICTIM)
    chat_as("acme", llm, VICTIM)
    assert calls(server) == 2
    chat_as("acme", llm, "What is the status of order 48213?")
    chat_as(None, llm, "What is the status of order 48213?")
    assert calls(server) == 4
    chat_as(None, llm, VICTIM)
    chat_as("acme", llm, VICTIM)
    assert calls(server) == 4


def test_namespaces_over_a_shared_redis_never_see_each_other(
    server: OpenAICompatServer,
    shared_redis_caches: tuple[sc.TieredCache, sc.TieredCache],
    embedder: LocalEmbedder,
) -> None:
    one, two = shared_redis_caches

    def llm(cache: sc.TieredCache, namespace: str) -> CachedLLM:
        sem = SemanticCache(embedder, cache, namespace=f"{namespace}.semantic")
        return CachedLLM(openai(server), cache=cache, namespace=namespace, semantic=sem)

    a, b, c, a_again = llm(one, "app-a"), llm(two, "app-b"), llm(two, "app-c"), llm(two, "app-a")
    a.chat(user(VICTIM))
    b.chat(user(VICTIM_ASKS[1]))  # would be a's semantic hit
    c.chat(user(VICTIM))  # would be a's exact hit
    assert calls(server) == 3
    a_again.chat(user(VICTIM_ASKS[2]))
    a_again.chat(user(VICTIM))
    assert calls(server) == 3  # the control: app-a's entries are in the shared Redis
    a.clear()
    assert a.semantic is not None
    a.semantic.clear()
    # Another process learns of a clear within its generation_refresh.
    deadline = time.monotonic() + 30
    while calls(server) == 3 and time.monotonic() < deadline:
        a_again.chat(user(VICTIM))
        time.sleep(0.05)
    assert calls(server) == 4  # app-a is gone for every process...
    b.chat(user(VICTIM_ASKS[1]))
    c.chat(user(VICTIM))
    assert calls(server) == 4  # ...and app-b and app-c are intact


def test_threads_and_tasks_interleaving_tenants_never_cross(
    server: OpenAICompatServer, tiered: sc.TieredCache, sem: SemanticCache
) -> None:
    """Tenants from a contextvar, set per thread and per asyncio task, asking at once."""
    llm = CachedLLM(openai(server), cache=tiered, semantic=sem, tenant=TENANT.get)
    chat_as("seed", llm, VICTIM)  # every later request would hit this entry if tenants leaked
    threads = [f"thread-{i}" for i in range(4)]
    tasks = [f"task-{i}" for i in range(4)]
    answers: dict[str, list[str]] = {t: [] for t in threads + tasks}
    go = threading.Barrier(len(threads) + 1, timeout=60)

    def in_thread(tenant: str, question: str) -> None:
        go.wait()
        answers[tenant].append(chat_as(tenant, llm, question))

    async def in_task(tenant: str, question: str) -> None:
        TENANT.set(tenant)  # a task runs in a copy of the context: this stays in the task
        await asyncio.sleep(0)
        answers[tenant].append(str((await llm.achat(user(question))).message.content))

    async def round_of(question: str) -> None:
        workers = [threading.Thread(target=in_thread, args=(t, question)) for t in threads]
        for worker in workers:
            worker.start()
        go.wait()
        await asyncio.gather(*(in_task(t, question) for t in tasks))
        for worker in workers:
            worker.join(60)

    asyncio.run(round_of(VICTIM))
    assert calls(server) == 1 + len(threads) + len(tasks)  # not one cross-tenant hit
    asyncio.run(round_of(VICTIM_ASKS[1]))  # a paraphrase, served from each tenant's own entry
    assert calls(server) == 1 + len(threads) + len(tasks)
    assert all(a == [expected(server, VICTIM)] * 2 for a in answers.values()), answers


def test_query_engine_answers_stay_within_a_tenant(
    server: OpenAICompatServer, tiered: sc.TieredCache, emb: CountingEmbedding
) -> None:
    """Through install(): the LLM's answers are partitioned, the embeddings shared (a vector
    depends on the model and the text only)."""
    Settings.llm = openai(server)
    Settings.embed_model = emb
    scli.install(tiered, tenant=TENANT.get)
    engine = VectorStoreIndex.from_documents(
        [Document(text=f"Topic {i}: the answer is {i * 7}.") for i in range(4)]
    ).as_query_engine()
    first = str(as_tenant("acme", lambda: engine.query("What is topic 1?")))
    queries = emb.queries
    assert str(as_tenant("acme", lambda: engine.query("What is topic 1?"))) == first
    assert calls(server) == 1
    assert str(as_tenant("globex", lambda: engine.query("What is topic 1?"))) == first
    assert calls(server) == 2  # globex's query was answered by the model
    assert emb.queries == queries  # its query embedding came from acme's cached one


class TenantNodes(BaseRetriever):
    """A retriever that filters per user, as a real one does (row-level security)."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        text = f"{TENANT.get()}'s private notes on {query_bundle.query_str}"
        return [NodeWithScore(node=TextNode(text=text), score=1.0)]


def test_retriever_results_are_never_served_across_tenants(memory_cache: sc.TieredCache) -> None:
    retriever = CachedRetriever(
        TenantNodes(), cache=memory_cache, retriever_id="kb", tenant=TENANT.get
    )
    for tenant in ("acme", "globex", None, "acme", "globex", None):
        nodes = as_tenant(tenant, lambda: retriever.retrieve("payroll"))
        assert [n.node.get_content() for n in nodes] == [f"{tenant}'s private notes on payroll"]
    assert (retriever.stats()["misses"], retriever.stats()["hits"]) == (3, 3)
    # The control: without tenant= the second user would read the first one's nodes.
    shared = CachedRetriever(
        TenantNodes(), cache=memory_cache, retriever_id="kb", namespace="shared"
    )
    as_tenant("acme", lambda: shared.retrieve("payroll"))
    nodes = as_tenant("globex", lambda: shared.retrieve("payroll"))
    assert nodes[0].node.get_content() == "acme's private notes on payroll"


def test_a_tenant_that_is_not_a_string_is_an_error(
    server: OpenAICompatServer, tiered: sc.TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(sc.ConfigurationError):
        CachedLLM(openai(server), cache=tiered, tenant=7)  # type: ignore[arg-type]
    with pytest.raises(sc.ConfigurationError):
        CachedRetriever(TenantNodes(), cache=tiered, retriever_id="kb", tenant=7)  # type: ignore[arg-type]
    llm = CachedLLM(openai(server), cache=tiered, tenant=lambda: object())
    with caplog.at_level(logging.WARNING, "stratacache"):
        llm.chat(user(VICTIM))
        llm.chat(user(VICTIM))
    assert calls(server) == 2  # no partition to use: neither read nor written
    assert llm.stats()["tenant_errors"] == 2
    assert "tenant() returned object" in caplog.text
