"""Nothing a failed or flawed answer looks like is ever stored (issue #13, item 8).

The real ``llama-index-llms-openai`` / ``-embeddings-openai`` clients talk to the loopback
provider, which fails (HTTP statuses, a dropped connection, a slow answer the client times out
on) or answers badly (empty content, ``choices: []``, ``finish_reason="content_filter"``, no
finish reason at all, a 200 carrying an error, an error event mid-stream, NaN or wrong-length
vectors). The cache is installed the documented way: ``stratacache.llamaindex.install(...)``
over ``Settings.llm`` / ``Settings.embed_model``. For every case:

* the caller sees exactly what the bare model gives: the same exception type, or the same
  answer with the same finish reason in ``raw`` (LlamaIndex's record of the provider answer);
* the provider's request counter shows a second identical call asked it again, and the memory
  tier holds no entry;
* a good answer to the same call afterwards *is* stored and then served without a request, so
  none of this passes vacuously.

Already covered elsewhere, not repeated: a mock LLM's errors and empty answers and a partially
read mock stream (``test_llm.py``), a provider-cut ``astream_chat`` (``test_openai_e2e.py``).

``finish_reason="length"`` is cached by decision (see ``stratacache.integrations._cacheable``):
``max_tokens`` is part of the model's identity, hence of the key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import stratacache as sc
import stratacache.llamaindex as scli
from stratacache.semantic import LocalEmbedder, SemanticCache
from stratacache.testing import OpenAICompatServer
from tests.provider_faults import CLIENT_TIMEOUT
from tests.provider_faults import entries as _entries
from tests.provider_faults import inject as _inject

#: One event loop for the module: the OpenAI clients below live for the module, and their
#: pooled async connections belong to the loop that opened them.
pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "How do I reset my password?"
TYPO = "How do I reset my pasword?"
MODES = ["chat", "achat", "stream_chat", "astream_chat"]


@pytest.fixture(scope="module")
def llms(server_module: OpenAICompatServer) -> dict[str, OpenAI]:
    """Module-wide clients (each builds its own SSL contexts): a normal and a short timeout."""

    def make(timeout: float) -> OpenAI:
        return OpenAI(model="gpt-4o-mini", api_base=server_module.base_url, api_key="test",
                      max_retries=0, timeout=timeout)  # fmt: skip

    return {"normal": make(30), "short": make(CLIENT_TIMEOUT)}


def _finish(resp: Any) -> Any:
    choices = getattr(resp.raw, "choices", None) or [None]
    return getattr(choices[0], "finish_reason", None)


async def _ask(llm: Any, mode: str, text: str = QUESTION) -> tuple[Any, ...]:
    """What the caller gets: ``("ok", text, finish_reason)`` or ``("raise", exception type)``."""
    msgs = [ChatMessage(role="user", content=text)]
    try:
        if mode in ("chat", "achat"):
            resp = llm.chat(msgs) if mode == "chat" else await llm.achat(msgs)
            return "ok", resp.message.content, _finish(resp)
        if mode == "stream_chat":
            chunks = list(llm.stream_chat(msgs))
        else:
            chunks = [c async for c in await llm.astream_chat(msgs)]
    except Exception as exc:
        return "raise", type(exc)
    reasons = [_finish(c) for c in chunks if c.raw is not None]
    last = chunks[-1].message.content if chunks else None
    return "ok", last, next((r for r in reversed(reasons) if r), None)


def _installed(llm: OpenAI, memory_cache: sc.TieredCache, **kwargs: Any) -> Any:
    """The documented one-liner over ``Settings.llm``; returns the cached ``Settings.llm``."""
    Settings.llm = llm
    scli.install(memory_cache, embed_model=False, **kwargs)
    assert isinstance(Settings.llm, scli.CachedLLM)
    return Settings.llm


async def _never_stored(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache, fault: Any,
    mode: str, **install: Any,
) -> tuple[Any, ...]:  # fmt: skip
    """Run the fault on the bare model, then through the cache; return what the caller saw."""
    client = llms["short" if fault == "timeout" else "normal"]
    _inject(server, fault)
    baseline = await _ask(client, mode)
    cached = _installed(client, memory_cache, **install)
    before = server.stats.requests["chat"]
    _inject(server, fault)
    got = await _ask(cached, mode)
    assert got == baseline
    assert server.stats.requests["chat"] == before + 1
    assert _entries(memory_cache) == 0
    return got


async def _then_stored(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache, fault: Any,
    mode: str,
) -> None:  # fmt: skip
    """The same call answered well reaches the provider, is stored, then hits (also for the
    failing client's own key)."""
    before = server.stats.requests["chat"]
    good = await _ask(scli.CachedLLM(llms["normal"], cache=memory_cache), mode)
    assert good[0] == "ok" and good[2] == "stop"
    assert server.stats.requests["chat"] == before + 1
    assert _entries(memory_cache) == 1
    assert (await _ask(Settings.llm, mode))[:2] == good[:2]  # a hit carries no ``raw``
    assert server.stats.requests["chat"] == before + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", [400, 401, 429, 500, 503, "drop", "timeout"])
async def test_provider_errors_raise_as_without_the_cache_and_are_never_stored(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache, fault: Any,
    mode: str,
) -> None:  # fmt: skip
    got = await _never_stored(server, llms, memory_cache, fault, mode)
    assert got[0] == "raise"
    await _then_stored(server, llms, memory_cache, fault, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "defect", ["empty", "no_choices", "content_filter", "unfinished", "error_body", "stream_error"]
)
async def test_flawed_answers_reach_the_caller_unchanged_and_are_never_stored(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache, defect: str,
    mode: str,
) -> None:  # fmt: skip
    got = await _never_stored(server, llms, memory_cache, defect, mode)
    if defect == "content_filter":  # the words before the filter cut in, flagged as such
        assert got == ("ok", "Echo", "content_filter")
    await _then_stored(server, llms, memory_cache, defect, mode)


async def test_a_truncated_answer_is_a_real_answer_and_is_cached(
    server: OpenAICompatServer, memory_cache: sc.TieredCache
) -> None:
    short = OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0,
                   max_tokens=2)  # fmt: skip
    cached = _installed(short, memory_cache)
    first = await _ask(cached, "chat")
    assert first[2] == "length"
    assert (await _ask(cached, "achat"))[:2] == first[:2]
    assert server.stats.requests["chat"] == 1


async def test_a_stream_stopped_early_or_cancelled_stores_nothing(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache
) -> None:
    cached = _installed(llms["normal"], memory_cache)
    msgs = [ChatMessage(role="user", content=QUESTION)]
    for _ in cached.stream_chat(msgs):
        break  # the consumer stops reading after the first chunk
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in await cached.astream_chat(msgs):
            first_chunk.set()
            await asyncio.Event().wait()  # a consumer that hangs until cancelled

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.stats.requests["chat"] == 2
    assert _entries(memory_cache) == 0
    await _then_stored(server, llms, memory_cache, None, "astream_chat")


# -- the semantic layer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.mark.parametrize(
    ("fault", "mode"),
    [(500, "chat"), ("timeout", "achat"), ("empty", "chat"), ("content_filter", "achat"),
     ("stream_error", "stream_chat"), ("unfinished", "astream_chat")],
)  # fmt: skip
async def test_semantic_layer_never_stores_a_failure_a_paraphrase_asks_again(
    server: OpenAICompatServer, llms: dict[str, OpenAI], memory_cache: sc.TieredCache,
    embedder: LocalEmbedder, fault: Any, mode: str,
) -> None:  # fmt: skip
    semantic = SemanticCache(embedder, memory_cache)
    await _never_stored(server, llms, memory_cache, fault, mode, semantic=semantic)
    assert semantic.stats().get("stores", 0) == 0
    # A paraphrase is not served the failure: the provider answers it ...
    answer = await _ask(Settings.llm, mode, TYPO)
    assert answer[0] == "ok" and TYPO in answer[1]
    assert server.stats.requests["chat"] == 3
    # ... and that good answer, stored in both layers, now serves the original wording.
    assert semantic.stats().get("stores") == 1
    assert (await _ask(Settings.llm, mode))[1] == answer[1]
    assert server.stats.requests["chat"] == 3


# -- embeddings ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedders(server_module: OpenAICompatServer) -> dict[int | None, OpenAIEmbedding]:
    """One client per ``dimensions`` setting for the module."""
    return {
        dims: OpenAIEmbedding(model="text-embedding-3-small", api_base=server_module.base_url,
                              api_key="test", max_retries=0, dimensions=dims)
        for dims in (64, None)
    }  # fmt: skip


async def _embed(model: Any, sync: bool) -> tuple[Any, ...]:
    texts = ["alpha", "beta"]
    try:
        vectors = (
            model.get_text_embedding_batch(texts)
            if sync
            else await model.aget_text_embedding_batch(texts)
        )
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
    server: OpenAICompatServer, embedders: dict[int | None, OpenAIEmbedding],
    memory_cache: sc.TieredCache, fault: Any, dims: int | None, sync: bool,
) -> None:  # fmt: skip
    """Vectors are judged one by one: the bad first one is not stored, its good neighbour
    is. A wrong length is told by ``dimensions=`` when the model declares it, else by the
    vectors of the same response disagreeing: then none of them is stored."""
    neighbour_kept = fault == "nan" or (fault == "wrong_dim" and dims is not None)
    _inject(server, fault)
    baseline = await _embed(embedders[dims], sync)
    Settings.embed_model = embedders[dims]
    scli.install(memory_cache, llm=False)
    cached = Settings.embed_model
    assert isinstance(cached, scli.CachedEmbedding)
    _inject(server, fault)
    assert await _embed(cached, sync) == baseline
    assert server.stats.requests["embeddings"] == 2
    assert _entries(memory_cache) == (1 if neighbour_kept else 0)
    good = await _embed(cached, sync)
    assert good[:2] == ("ok", [64, 64])
    assert server.stats.requests["embeddings"] == 3
    assert server.stats.bodies[-1]["input"] == (["alpha"] if neighbour_kept else ["alpha", "beta"])
    assert _entries(memory_cache) == 2
    assert await _embed(cached, sync) == good
    assert server.stats.requests["embeddings"] == 3
