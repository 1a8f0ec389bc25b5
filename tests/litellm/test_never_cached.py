"""Nothing a failed or flawed answer looks like is ever stored (issue #13, item 8).

Real ``litellm.completion`` / ``acompletion`` / ``embedding`` / ``aembedding`` calls go to the
loopback provider, which fails (HTTP statuses, a dropped connection, a slow answer the client
times out on) or answers badly (empty content, ``choices: []``, ``content_filter``, a 200
carrying an error, an error event mid-stream, a stream without a finish, NaN or wrong-length
vectors). Each case runs first without stratacache (the baseline), then with
``stratacache.litellm.install(...)``, and asserts:

* the caller sees what the baseline saw: the same exception type, or the same answer with the
  same ``choices[0].finish_reason``;
* a 200 answer reached litellm's write path and was refused there (the backend counts it;
  waiting for that count also waits out litellm's background writes), and the memory tier holds
  no entry;
* a second identical call asks the provider again, and that good answer *is* stored and then
  served without a request, so none of this passes vacuously.

Already covered elsewhere, not repeated: the backend refusing hand-made empty/unfinished/error
dicts (``test_completion.py``), a provider-cut stream (``test_e2e.py``), a cut stream and a
400 in the semantic layer (``test_semantic.py``).

A non-stream answer with ``finish_reason: null`` is not in the list: litellm itself reports
it to the caller as ``"stop"``, a finished answer. ``finish_reason="length"`` is cached by
decision (see ``stratacache.integrations._cacheable``): ``max_tokens`` is in the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import litellm
import pytest

import stratacache as sc
import stratacache.litellm as scl
from stratacache.semantic import LocalEmbedder
from stratacache.testing import OpenAICompatServer
from tests.litellm.conftest import via
from tests.provider_faults import CLIENT_TIMEOUT
from tests.provider_faults import entries as _entries
from tests.provider_faults import inject as _inject

MODEL = "openai/gpt-4o-mini"
EMB = "openai/text-embedding-3-small"
QUESTION = "How do I reset my password?"
TYPO = "How do I reset my pasword?"
MODES = ["sync", "async", "stream", "astream"]


async def _ask(server: OpenAICompatServer, mode: str, text: str, **kw: Any) -> tuple[Any, ...]:
    """What the caller gets: ``("ok", text, finish_reason, cache_hit)`` or ``("raise", type)``."""
    kwargs = via(server, model=MODEL, messages=[{"role": "user", "content": text}],
                 max_retries=0, num_retries=0, **kw)  # fmt: skip
    try:
        if mode in ("sync", "async"):
            r = (
                litellm.completion(**kwargs)
                if mode == "sync"
                else await litellm.acompletion(**kwargs)
            )
            choice = r.choices[0] if r.choices else None
            return ("ok", choice and choice.message.content, choice and choice.finish_reason,
                    r._hidden_params.get("cache_hit"))  # fmt: skip
        if mode == "stream":
            chunks = list(litellm.completion(stream=True, **kwargs))
        else:
            chunks = [c async for c in await litellm.acompletion(stream=True, **kwargs)]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
        return "ok", content, next((r for r in reversed(reasons) if r), None), None
    except Exception as exc:
        return "raise", type(exc)


async def _until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """litellm writes async results from background tasks: wait (bounded) until it has."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "litellm never got to its cache write"
        await asyncio.sleep(0.01)


async def _settle() -> None:
    """Wait for the cache writes litellm has in flight (a bad one would land here)."""
    from litellm.caching.caching_handler import _PENDING_CACHE_WRITES

    await asyncio.sleep(0)
    while _PENDING_CACHE_WRITES:
        await asyncio.gather(*list(_PENDING_CACHE_WRITES), return_exceptions=True)


def _refusals(inst: scl.Installation) -> int:
    """Writes the backend refused, and chat answers the semantic layer refused."""
    counts = [inst.cache.backend.stats(), inst.cache.stats()]
    return sum(
        v for c in counts for k, v in c.items()
        if isinstance(v, int) and (k == "skipped_writes" or k.startswith("semantic_skipped: the"))
    )  # fmt: skip


async def _never_stored(
    server: OpenAICompatServer, inst: scl.Installation, memory_cache: sc.TieredCache, fault: Any,
    mode: str, text: str = QUESTION,
) -> tuple[Any, ...]:  # fmt: skip
    short = {"timeout": CLIENT_TIMEOUT} if fault == "timeout" else {}
    before = server.stats.requests["chat"]
    refused = _refusals(inst)
    _inject(server, fault)
    got = await _ask(server, mode, text, **short)
    assert server.stats.requests["chat"] > before
    if got[0] == "ok" and got[1] and fault != "unfinished":
        # an answer with output: litellm tried to store it, and we refused
        await _until(lambda: _refusals(inst) > refused + (inst.semantic is not None))
    else:
        # litellm keeps exceptions and answers without output from its write path itself, and
        # some releases (1.106) also a stream that never sent a finish reason; newer ones try
        # to store it and we refuse. Either way: wait for the writes in flight, then check.
        await _settle()
    assert _entries(memory_cache) == 0
    return got


async def _then_stored(
    server: OpenAICompatServer,
    memory_cache: sc.TieredCache,
    mode: str,
    fault: Any,
    text: str = QUESTION,
) -> None:
    """The same call answered well reaches the provider, is stored, then hits."""
    before = server.stats.requests["chat"]
    good = await _ask(server, mode, text)
    assert good[0] == "ok" and good[2] == "stop"
    assert server.stats.requests["chat"] == before + 1
    await _until(lambda: _entries(memory_cache) >= 1)
    short = {"timeout": CLIENT_TIMEOUT} if fault == "timeout" else {}
    again = await _ask(server, mode, text, **short)  # the failing call's own key
    assert again[:3] == good[:3]
    assert server.stats.requests["chat"] == before + 1


FLAWED = [(d, m) for d in ("empty", "no_choices", "content_filter", "error_body", "stream_error")
          for m in MODES] + [("unfinished", "stream"), ("unfinished", "astream")]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", [400, 401, 429, 500, 503, "drop", "timeout"])
async def test_provider_errors_raise_as_without_the_cache_and_are_never_stored(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, fault: Any, mode: str
) -> None:
    short = {"timeout": CLIENT_TIMEOUT} if fault == "timeout" else {}
    _inject(server, fault)
    baseline = await _ask(server, mode, QUESTION, **short)
    assert baseline[0] == "raise"
    inst = scl.install(memory_cache)
    assert await _never_stored(server, inst, memory_cache, fault, mode) == baseline
    await _then_stored(server, memory_cache, mode, fault)


@pytest.mark.parametrize(("defect", "mode"), FLAWED)
async def test_flawed_answers_reach_the_caller_unchanged_and_are_never_stored(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, defect: str, mode: str
) -> None:
    _inject(server, defect)
    baseline = await _ask(server, mode, QUESTION)
    inst = scl.install(memory_cache)
    got = await _never_stored(server, inst, memory_cache, defect, mode)
    assert got == baseline
    if defect == "content_filter":  # the words before the filter cut in, flagged as such
        assert got[1:3] == ("Echo", "content_filter")
    await _then_stored(server, memory_cache, mode, defect)


async def test_a_truncated_answer_is_a_real_answer_and_is_cached(
    server: OpenAICompatServer, memory_cache: sc.TieredCache
) -> None:
    scl.install(memory_cache)
    short = await _ask(server, "sync", QUESTION, max_tokens=2)
    assert short[2] == "length"
    assert (await _ask(server, "sync", QUESTION, max_tokens=2))[:3] == short[:3]
    assert server.stats.requests["chat"] == 1
    assert (await _ask(server, "sync", QUESTION))[2] == "stop"  # another budget, another key
    assert server.stats.requests["chat"] == 2


async def test_a_stream_stopped_early_or_cancelled_stores_nothing(
    server: OpenAICompatServer, memory_cache: sc.TieredCache
) -> None:
    inst = scl.install(memory_cache)
    kwargs = via(server, model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                 max_retries=0, num_retries=0, stream=True)  # fmt: skip
    for _ in litellm.completion(**kwargs):
        break  # the consumer stops reading after the first chunk
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in await litellm.acompletion(**kwargs):
            first_chunk.set()
            await asyncio.Event().wait()  # a consumer that hangs until cancelled

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.stats.requests["chat"] == 2
    assert _entries(memory_cache) == 0
    assert inst.cache.backend.stats().get("skipped_writes", 0) == 0  # never even attempted
    await _then_stored(server, memory_cache, "astream", None)


# -- the semantic layer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.mark.parametrize(
    ("fault", "mode"),
    [(500, "sync"), ("timeout", "async"), ("empty", "sync"), ("content_filter", "async"),
     ("stream_error", "stream"), ("content_filter", "astream")],
)  # fmt: skip
async def test_semantic_layer_never_stores_a_failure_a_paraphrase_asks_again(
    server: OpenAICompatServer, memory_cache: sc.TieredCache, embedder: LocalEmbedder, fault: Any,
    mode: str,
) -> None:  # fmt: skip
    inst = scl.install(memory_cache, semantic=True, embedder=embedder)
    assert inst.semantic is not None
    await _never_stored(server, inst, memory_cache, fault, mode)
    assert inst.semantic.stats().get("stores", 0) == 0
    # A paraphrase is not served the failure: the provider answers it ...
    answer = await _ask(server, mode, TYPO)
    assert answer[0] == "ok" and TYPO in answer[1]
    assert server.stats.requests["chat"] == 2
    # ... and that good answer, stored in both layers, now serves the original wording.
    await _until(lambda: inst.semantic is not None and inst.semantic.stats().get("stores") == 1)
    assert (await _ask(server, mode, QUESTION))[1] == answer[1]
    assert server.stats.requests["chat"] == 2


# -- embeddings ------------------------------------------------------------------------------


async def _embed(server: OpenAICompatServer, sync: bool, **kw: Any) -> tuple[Any, ...]:
    kwargs = via(server, model=EMB, input=["alpha", "beta"], max_retries=0, **kw)
    try:
        r = litellm.embedding(**kwargs) if sync else await litellm.aembedding(**kwargs)
    except Exception as exc:
        return "raise", type(exc)
    vectors = [d["embedding"] for d in r.data]
    return "ok", [len(v) for v in vectors], repr(vectors), r._hidden_params.get("cache_hit")


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("fault", "dims"),
    [("error_body", 64), ("no_choices", 64), ("empty", 64), ("nan", 64), ("wrong_dim", 64),
     ("wrong_dim", None)],
    ids=["error", "no-data", "empty", "nan", "wrong-dim-declared", "wrong-dim-batch"],
)  # fmt: skip
async def test_bad_vectors_are_returned_as_given_and_never_stored(
    server: OpenAICompatServer,
    memory_cache: sc.TieredCache,
    fault: Any,
    dims: int | None,
    sync: bool,
) -> None:
    """One bad vector keeps the whole response out of the cache (litellm writes a response's
    items together). A wrong length is told by ``dimensions=`` when the call sets it, else by
    the vectors of the response disagreeing. The error is a 200 carrying ``{"error": ...}``:
    litellm's embedding path retries a 5xx itself (the SDK's own retries, whatever
    ``max_retries`` says), so a 500 reaches the caller as a good answer."""
    kw = {"dimensions": dims} if dims else {}
    _inject(server, fault)
    baseline = await _embed(server, sync, **kw)
    inst = scl.install(memory_cache)
    refused = _refusals(inst)
    before = server.stats.requests["embeddings"]
    _inject(server, fault)
    assert await _embed(server, sync, **kw) == baseline
    assert server.stats.requests["embeddings"] > before
    if baseline[0] == "ok" and baseline[1] != []:  # vectors reached the write path: refused
        await _until(lambda: _refusals(inst) > refused)
    else:
        await _settle()
    assert _entries(memory_cache) == 0
    before = server.stats.requests["embeddings"]
    good = await _embed(server, sync, **kw)
    assert good[:2] == ("ok", [64, 64])
    assert server.stats.requests["embeddings"] == before + 1
    await _until(lambda: _entries(memory_cache) == 2)
    assert (await _embed(server, sync, **kw))[:3] == good[:3]
    assert server.stats.requests["embeddings"] == before + 1
