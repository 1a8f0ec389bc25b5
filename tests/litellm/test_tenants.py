"""Tenant isolation through litellm: no answer is ever served across tenants.

Real ``litellm.completion`` / ``acompletion`` calls against the loopback provider (its request
counter says whether a call reached the model). A tenant is ``install(tenant=...)`` (a string
or a callable read per call), the request's ``user``, or the proxy's key/team ids in
``metadata``: each partitions both the exact and the semantic layer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import litellm
import pytest

import stratacache as sc
import stratacache.litellm as scl
from stratacache.semantic import LocalEmbedder
from stratacache.testing import OpenAICompatServer
from tests.litellm.conftest import via

MODEL = "openai/gpt-4o-mini"
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
def exact(tiered: sc.TieredCache) -> Iterator[scl.Installation]:
    yield scl.install(tiered, tenant=TENANT.get)
    scl.uninstall()


@pytest.fixture
def semantic(tiered: sc.TieredCache, embedder: LocalEmbedder) -> Iterator[scl.Installation]:
    yield scl.install(tiered, semantic=True, embedder=embedder, tenant=TENANT.get)
    scl.uninstall()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ask_as(
    tenant: str | None, server: OpenAICompatServer, question: str, **kwargs: Any
) -> tuple[str, bool]:
    """``(answer, served from the cache?)``."""
    token = TENANT.set(tenant)
    try:
        response = litellm.completion(**via(server, model=MODEL, messages=user(question), **kwargs))
    finally:
        TENANT.reset(token)
    return str(response.choices[0].message.content), response._hidden_params.get(
        "cache_hit"
    ) is True


def calls(server: OpenAICompatServer) -> int:
    return int(server.stats.requests["chat"])


def expected(server: OpenAICompatServer, question: str) -> str:
    return server.reply_for(user(question), "gpt-4o-mini")


@pytest.mark.parametrize("layer", ["exact", "semantic"])
def test_identical_request_of_another_tenant_is_a_miss(
    layer: str, request: pytest.FixtureRequest, server: OpenAICompatServer
) -> None:
    request.getfixturevalue(layer)
    assert ask_as("acme", server, VICTIM) == (expected(server, VICTIM), False)
    assert ask_as("acme", server, VICTIM) == (expected(server, VICTIM), True)
    assert ask_as("globex", server, VICTIM) == (expected(server, VICTIM), False)
    assert ask_as("globex", server, VICTIM)[1] is True
    assert ask_as("acme", server, VICTIM)[1] is True
    assert calls(server) == 2


def test_paraphrase_of_another_tenant_is_a_miss(
    semantic: scl.Installation, server: OpenAICompatServer
) -> None:
    ask_as("acme", server, VICTIM)
    assert ask_as("acme", server, VICTIM_ASKS[1]) == (expected(server, VICTIM), True)
    assert ask_as("globex", server, VICTIM_ASKS[1]) == (expected(server, VICTIM_ASKS[1]), False)
    assert calls(server) == 2


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"user": "alice"}, {"user": "bob"}),
        ({"metadata": {"user_api_key_hash": "k1"}}, {"metadata": {"user_api_key_hash": "k2"}}),
        (
            {"metadata": {"user_api_key_team_id": "t1"}},
            {"metadata": {"user_api_key_team_id": "t2"}},
        ),
        (
            {"metadata": {"user_api_key_end_user_id": "u1"}},
            {"metadata": {"user_api_key_end_user_id": "u2"}},
        ),
    ],
    ids=["user", "proxy-key", "proxy-team", "proxy-end-user"],
)
@pytest.mark.parametrize("layer", ["exact", "semantic"])
def test_litellm_user_and_proxy_ids_are_tenants(
    layer: str,
    request: pytest.FixtureRequest,
    server: OpenAICompatServer,
    one: dict[str, Any],
    two: dict[str, Any],
) -> None:
    """The key policy: ``user`` is a request parameter (in the key); of ``metadata`` only the
    proxy's identities count, and they count in both layers."""
    request.getfixturevalue(layer)
    question = VICTIM if layer == "exact" else VICTIM_ASKS[1]
    ask_as(None, server, VICTIM, **one)
    assert ask_as(None, server, question, **one)[1] is True
    assert ask_as(None, server, question, **two)[1] is False
    assert ask_as(None, server, VICTIM)[1] is False  # nor is the no-tenant partition theirs
    assert calls(server) == 3


def test_other_metadata_does_not_split_the_cache(
    exact: scl.Installation, server: OpenAICompatServer
) -> None:
    ask_as("acme", server, VICTIM, metadata={"trace": "run-1"})
    assert ask_as("acme", server, VICTIM, metadata={"trace": "run-2"})[1] is True
    assert calls(server) == 1


def test_cache_attack_planted_entries_never_reach_the_victim(
    tiered: sc.TieredCache, embedder: LocalEmbedder, server: OpenAICompatServer
) -> None:
    """The attacker (its own proxy key) stores the victim's question and paraphrases, with
    answers of its choosing (litellm's ``mock_response``: what a prompt injection makes a
    model say); the victims (other keys) are never served one of them."""
    scl.install(tiered, semantic=True, embedder=embedder)
    try:
        attacker = {"metadata": {"user_api_key_hash": "attacker"}}
        for question in PLANTED:
            ask_as(None, server, question, mock_response=f"PLANTED {question}", **attacker)
        # The plants work: reworded questions of the attacker are served from them.
        answer, hit = ask_as(None, server, "Hello, how do I reset my password?", **attacker)
        assert hit and answer.startswith("PLANTED")
        for n, question in enumerate(VICTIM_ASKS, 1):
            victim = {"metadata": {"user_api_key_hash": f"victim-{n}"}}
            answer, hit = ask_as(None, server, question, **victim)
            assert (answer, hit) == (expected(server, question), False), question
            assert calls(server) == n
    finally:
        scl.uninstall()


def test_without_tenants_the_same_plants_would_be_served(
    tiered: sc.TieredCache, embedder: LocalEmbedder, server: OpenAICompatServer
) -> None:
    """The control: the same attack succeeds when everyone shares one partition."""
    scl.install(tiered, semantic=True, embedder=embedder)
    try:
        for question in PLANTED[1:]:
            ask_as(None, server, question, mock_response=f"PLANTED {question}")
        answer, hit = ask_as(None, server, VICTIM)
        assert hit and answer.startswith("PLANTED")
    finally:
        scl.uninstall()


@pytest.mark.parametrize("layer", ["exact", "semantic"])
def test_no_tenant_and_a_tenant_never_share(
    layer: str, request: pytest.FixtureRequest, server: OpenAICompatServer
) -> None:
    request.getfixturevalue(layer)
    ask_as(None, server, VICTIM)
    assert ask_as("acme", server, VICTIM)[1] is False
    ask_as("acme", server, "What is the status of order 48213?")
    assert ask_as(None, server, "What is the status of order 48213?")[1] is False
    assert ask_as(None, server, VICTIM)[1] is True
    assert calls(server) == 4


def test_namespaces_over_a_shared_redis_never_see_each_other(
    shared_redis_caches: tuple[sc.TieredCache, sc.TieredCache],
    embedder: LocalEmbedder,
    server: OpenAICompatServer,
) -> None:
    one, two = shared_redis_caches

    def use(cache: sc.TieredCache, namespace: str) -> scl.Installation:
        return scl.install(cache, namespace=namespace, semantic=True, embedder=embedder)

    try:
        a = use(one, "app-a")
        ask_as(None, server, VICTIM)
        use(two, "app-b")
        assert ask_as(None, server, VICTIM_ASKS[1])[1] is False  # not a's semantic entry
        use(two, "app-c")
        assert ask_as(None, server, VICTIM)[1] is False  # nor its exact entry
        use(two, "app-a")
        assert ask_as(None, server, VICTIM)[1] is True  # the control: a's entries are shared
        a.cache.backend.flush_cache()
        assert a.semantic is not None
        a.semantic.clear()
        # Another process learns of a clear within its generation_refresh.
        deadline = time.monotonic() + 30
        while ask_as(None, server, VICTIM)[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls(server) == 4  # app-a is gone for every process...
        use(two, "app-b")
        assert ask_as(None, server, VICTIM_ASKS[1])[1] is True
        use(two, "app-c")
        assert ask_as(None, server, VICTIM)[1] is True
        assert calls(server) == 4  # ...and app-b and app-c are intact
    finally:
        scl.uninstall()


def test_threads_and_tasks_interleaving_tenants_never_cross(
    semantic: scl.Installation, server: OpenAICompatServer
) -> None:
    """Tenants from a contextvar, set per thread and per asyncio task, asking at once."""
    ask_as("seed", server, VICTIM)  # every later request would hit this entry if tenants leaked
    threads = [f"thread-{i}" for i in range(4)]
    tasks = [f"task-{i}" for i in range(4)]
    answers: dict[str, list[tuple[str, bool]]] = {t: [] for t in threads + tasks}
    go = threading.Barrier(len(threads) + 1, timeout=60)

    def in_thread(tenant: str, question: str) -> None:
        go.wait()
        answers[tenant].append(ask_as(tenant, server, question))

    async def in_task(tenant: str, question: str) -> None:
        TENANT.set(tenant)  # a task runs in a copy of the context: this stays in the task
        await asyncio.sleep(0)
        response = await litellm.acompletion(**via(server, model=MODEL, messages=user(question)))
        hit = response._hidden_params.get("cache_hit") is True
        answers[tenant].append((str(response.choices[0].message.content), hit))

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
    want = [(expected(server, VICTIM), False), (expected(server, VICTIM), True)]
    assert all(a == want for a in answers.values()), answers


def test_embeddings_are_shared_by_tenants(
    exact: scl.Installation, server: OpenAICompatServer
) -> None:
    """Documented: a vector depends on the model and the text only, so tenants share them."""

    def embed_as(tenant: str) -> list[float]:
        token = TENANT.set(tenant)
        try:
            response = litellm.embedding(
                **via(server, model="openai/text-embedding-3-small", input=["payroll"])
            )
        finally:
            TENANT.reset(token)
        return list(response.data[0]["embedding"])

    assert embed_as("acme") == embed_as("globex")
    assert server.stats.requests["embeddings"] == 1


def test_a_tenant_that_is_not_a_string_is_an_error(
    tiered: sc.TieredCache, server: OpenAICompatServer, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(sc.ConfigurationError):
        scl.install(tiered, tenant=7)  # type: ignore[arg-type]
    assert scl.current() is None
    installed = scl.install(tiered, tenant=lambda: object())
    try:
        with caplog.at_level(logging.WARNING, "stratacache"):
            assert ask_as(None, server, VICTIM)[1] is False
            assert ask_as(None, server, VICTIM)[1] is False  # never read nor written
        assert calls(server) == 2
        assert installed.cache._stats.snapshot()["tenant_errors"] >= 2
        assert "tenant() returned object" in caplog.text
    finally:
        scl.uninstall()
