"""Nothing a failed or flawed answer looks like is ever stored (issue #13, item 8).

The real ``ChatOpenAI`` / ``OpenAIEmbeddings`` clients talk to the loopback provider, which is
told to fail (HTTP statuses, a dropped connection, a slow answer the client times out on) or
to answer badly (empty content, ``choices: []``, ``finish_reason="content_filter"``, no
finish reason at all (a stream that ends with ``[DONE]`` but never finished), a 200 carrying
an error, an error event mid-stream, NaN or wrong-length vectors). For every case:

* the caller sees exactly what it sees without stratacache: the same exception type, or the
  same (empty, filtered) answer, obtained from a ``cache=False`` twin of the model;
* the provider's request counter shows a second identical call asked it again;
* the memory tier holds no entry at all (a direct look at the tier);
* and, so that none of this passes vacuously, a good answer to the same call afterwards *is*
  stored and then served without a request.

Already covered elsewhere, not repeated here: fake-model errors and empty generations
(``test_cache.py``), a cut ``astream`` and a consumer that stops early (``test_openai_e2e.py``),
empty and failed generations in the semantic layer with a fake model (``test_semantic.py``).

``finish_reason="length"`` *is* cached, by decision: the truncated answer is the model's
deterministic answer for that ``max_tokens``, and ``max_tokens`` is part of the key, so the same
request gets the same truncation again; a request with a larger budget has another key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import SecretStr

import stratacache as sc
from stratacache.langchain import CachedEmbeddings, LLMCache, SemanticLLMCache, cache_streaming
from stratacache.semantic import LocalEmbedder
from stratacache.testing import OpenAICompatServer
from tests.provider_faults import CLIENT_TIMEOUT
from tests.provider_faults import entries as _entries
from tests.provider_faults import inject as _inject

#: One event loop for the module: langchain-openai shares one async httpx client per base URL
#: across model objects, and its pooled connections belong to the loop that opened them.
pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = "How do I reset my password?"
PARAPHRASE = "How do I reset my pasword?"
MODES = ["invoke", "ainvoke", "stream", "astream"]


def _chat(server: OpenAICompatServer, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("timeout", 30)
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key=SecretStr("test"),
        max_retries=0,
        **kwargs,
    )


async def _outcome(model: ChatOpenAI, mode: str, prompt: str = PROMPT) -> tuple[Any, ...]:
    """What the caller gets: ``("ok", text, finish_reason)`` or ``("raise", exception type)``."""
    try:
        if mode in ("invoke", "ainvoke"):
            msg = model.invoke(prompt) if mode == "invoke" else await model.ainvoke(prompt)
            return "ok", msg.content, msg.response_metadata.get("finish_reason")
        streamer = cache_streaming(model) if model.cache is not False else model
        if mode == "stream":
            chunks = list(streamer.stream(prompt))
        else:
            chunks = [c async for c in streamer.astream(prompt)]
        reasons = [c.response_metadata.get("finish_reason") for c in chunks]
        return (
            "ok",
            "".join(str(c.content) for c in chunks),
            next((r for r in reversed(reasons) if r), None),
        )
    except Exception as exc:
        return "raise", type(exc)


@pytest.fixture
def exact(memory_cache: sc.TieredCache) -> Iterator[LLMCache]:
    """The documented one-liner: ``set_llm_cache(LLMCache(...))``."""
    cache = LLMCache(memory_cache)
    set_llm_cache(cache)
    yield cache
    set_llm_cache(None)


async def _never_stored(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, fault: str | int, mode: str
) -> tuple[Any, ...]:
    """Run the fault once without and once with the cache; return what the caller saw."""
    short = {"timeout": CLIENT_TIMEOUT} if fault == "timeout" else {}
    _inject(server, fault)
    baseline = await _outcome(_chat(server, cache=False, **short), mode)
    before = server.stats.requests["chat"]
    _inject(server, fault)
    got = await _outcome(_chat(server, **short), mode)
    assert got == baseline
    assert server.stats.requests["chat"] == before + 1
    assert _entries(memory_cache) == 0
    # The same call, answered well, goes to the provider again and is stored this time ...
    assert (await _outcome(_chat(server), mode))[0] == "ok"
    assert server.stats.requests["chat"] == before + 2
    assert _entries(memory_cache) >= 1
    # ... under the failing call's own key: it is now served without a request.
    assert (await _outcome(_chat(server, **short), mode))[0] == "ok"
    assert server.stats.requests["chat"] == before + 2
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", [400, 401, 429, 500, 503, "drop", "timeout"])
async def test_provider_errors_raise_as_without_the_cache_and_are_never_stored(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, exact: LLMCache, fault: Any, mode: str
) -> None:
    got = await _never_stored(server, memory_cache, fault, mode)
    assert got[0] == "raise"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "defect", ["empty", "no_choices", "content_filter", "unfinished", "error_body", "stream_error"]
)
async def test_flawed_answers_reach_the_caller_unchanged_and_are_never_stored(
    server: OpenAICompatServer,
    memory_cache: sc.TieredCache,
    exact: LLMCache,
    defect: str,
    mode: str,
) -> None:
    got = await _never_stored(server, memory_cache, defect, mode)
    if defect == "content_filter":  # the words before the filter cut in, flagged as such
        assert got == ("ok", "Echo", "content_filter")
    elif defect == "unfinished":  # the whole text, but the provider never said it finished
        assert got[0] == "ok" and PROMPT in got[1] and got[2] is None
    elif got[0] == "ok":
        assert got[1] == ""


async def test_a_truncated_answer_is_a_real_answer_and_is_cached(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, exact: LLMCache
) -> None:
    """``finish_reason="length"``: cached, under a key that holds ``max_tokens``."""
    short = await _outcome(_chat(server, max_tokens=2), "invoke")
    assert short[2] == "length"
    assert await _outcome(_chat(server, max_tokens=2), "ainvoke") == short
    assert server.stats.requests["chat"] == 1
    full = await _outcome(_chat(server), "invoke")
    assert full[2] == "stop" and full[1] != short[1]
    assert server.stats.requests["chat"] == 2


async def test_a_cancelled_or_cut_stream_stores_nothing_and_a_full_one_is_stored(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, exact: LLMCache
) -> None:
    model = cache_streaming(_chat(server))
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in model.astream(PROMPT):
            first_chunk.set()
            await asyncio.Event().wait()  # a consumer that hangs until cancelled

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.interrupt_stream_after = 2  # the sync path, cut by the provider
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever httpx raises for the cut
        list(model.stream(PROMPT))
    server.interrupt_stream_after = None
    assert server.stats.requests["chat"] == 2
    assert _entries(memory_cache) == 0
    text = "".join(str(c.content) for c in model.stream(PROMPT))
    assert _entries(memory_cache) == 1
    assert "".join([str(c.content) async for c in model.astream(PROMPT)]) == text
    assert server.stats.requests["chat"] == 3


# -- the semantic layer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.mark.parametrize(
    "fault", [500, "timeout", "empty", "content_filter", "unfinished", "stream_error"]
)
async def test_semantic_layer_never_stores_a_failure_a_paraphrase_asks_again(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, local: LocalEmbedder, fault: Any
) -> None:
    cache = SemanticLLMCache(memory_cache, embeddings=local)
    set_llm_cache(cache)
    try:
        mode = "stream" if fault in ("stream_error", "unfinished") else "invoke"
        short = {"timeout": CLIENT_TIMEOUT} if fault == "timeout" else {}
        _inject(server, fault)
        baseline = await _outcome(_chat(server, cache=False, **short), mode)
        _inject(server, fault)
        assert await _outcome(_chat(server, **short), mode) == baseline
        assert cache.stats()["semantic"].get("stores", 0) == 0
        assert _entries(memory_cache) == 0
        # A paraphrase is not served the failure: the provider answers it.
        answer = await _outcome(_chat(server), mode, PARAPHRASE)
        assert answer[0] == "ok" and PARAPHRASE in answer[1]
        assert server.stats.requests["chat"] == 3
        # The good answer is stored in both layers, so the original wording now hits.
        assert (await _outcome(_chat(server), mode))[1] == answer[1]
        assert server.stats.requests["chat"] == 3
    finally:
        set_llm_cache(None)


# -- embeddings ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(server_module: OpenAICompatServer) -> dict[int | None, OpenAIEmbeddings]:
    """One client per ``dimensions`` setting for the module (each builds two SSL contexts)."""
    return {
        dims: OpenAIEmbeddings(
            model="text-embedding-3-small", base_url=server_module.base_url,
            api_key="test", max_retries=0, check_embedding_ctx_length=False,  # type: ignore[arg-type]
            dimensions=dims,
        )
        for dims in (64, None)
    }  # fmt: skip


async def _embed(emb: Any, texts: list[str], sync: bool) -> tuple[Any, ...]:
    try:
        vectors = emb.embed_documents(texts) if sync else await emb.aembed_documents(texts)
    except Exception as exc:
        return "raise", type(exc)
    return "ok", [len(v) for v in vectors], repr(vectors)  # repr: NaN == NaN


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("fault", "dims"),
    [(500, 64), ("drop", 64), ("no_choices", 64), ("empty", 64), ("nan", 64),
     ("wrong_dim", 64), ("wrong_dim", None)],
    ids=["500", "drop", "no-data", "empty", "nan", "wrong-dim-declared", "wrong-dim-batch"],
)  # fmt: skip
async def test_bad_vectors_are_returned_as_given_and_never_stored(
    server: OpenAICompatServer,
    memory_cache: sc.TieredCache,
    clients: dict[int | None, OpenAIEmbeddings],
    fault: Any,
    dims: int | None,
    sync: bool,
) -> None:
    """Vectors are judged one by one: the bad first one is not stored, its good neighbour
    is. A wrong length is told by ``dimensions=`` when the model declares it, else by the
    vectors of the same response disagreeing: then none of them is stored."""
    texts = ["alpha", "beta"]
    neighbour_kept = fault == "nan" or (fault == "wrong_dim" and dims is not None)
    _inject(server, fault)
    baseline = await _embed(clients[dims], texts, sync)
    _inject(server, fault)
    emb = CachedEmbeddings(clients[dims], memory_cache)
    assert await _embed(emb, texts, sync) == baseline
    assert _entries(memory_cache) == (1 if neighbour_kept else 0)
    assert server.stats.requests["embeddings"] == 2
    good = await _embed(emb, texts, sync)
    assert good[:2] == ("ok", [64, 64])
    assert server.stats.requests["embeddings"] == 3
    assert server.stats.bodies[-1]["input"] == (["alpha"] if neighbour_kept else texts)
    assert _entries(memory_cache) == 2
    assert await _embed(emb, texts, sync) == good
    assert server.stats.requests["embeddings"] == 3
