"""MicroBatcher: one call for many callers, order, caps, errors, cancellation, grouping."""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest

from stratacache.batching import BatchSizeError, MicroBatcher
from stratacache.ratelimit import RateLimiter
from stratacache.testing import OpenAICompatServer, embedding_for


class Recorder:
    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], dict[str, object]]] = []
        self.fail_on = fail_on
        self.delay = delay

    async def __call__(self, items: list[str], **params: object) -> list[str]:
        self.calls.append((list(items), params))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad input {self.fail_on}")
        return [f"{params.get('model', '')}:{x}" for x in items]


async def test_32_concurrent_embed_query_calls_become_one_batch() -> None:
    async with OpenAICompatServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)

        async def embed_documents(texts: list[str]) -> list[list[float]]:
            reply = await client.embeddings.create(model="e", input=texts)
            return [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]

        batcher = MicroBatcher(embed_documents)
        texts = [f"query {i}" for i in range(32)]
        vectors = await asyncio.gather(*(batcher.submit(t) for t in texts))
        await client.close()
    assert server.stats.requests["embeddings"] == 1
    assert batcher.batches == 1
    assert vectors == [embedding_for(t) for t in texts]  # order kept


async def test_caps_by_count_and_tokens_and_groups_by_params() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_items=4, max_tokens=10, token_counter=len)
    words = ["aaaa", "bb", "cccccccccccccc", "d", "e", "f", "g", "h"]
    results = await asyncio.gather(
        *(batcher.submit(w, model="m1") for w in words),
        batcher.submit("x", model="m2"),
    )
    assert results == [f"m1:{w}" for w in words] + ["m2:x"]
    sizes = {tuple(items): params for items, params in fn.calls}
    assert ("cccccccccccccc",) in sizes  # larger than max_tokens: alone, not refused
    assert all(len(items) <= 4 for items, _ in fn.calls)
    assert all(sum(map(len, items)) <= 10 or len(items) == 1 for items, _ in fn.calls)
    assert {"model": "m2"} in [p for items, p in fn.calls if items == ["x"]]


async def test_bad_item_is_isolated_by_bisection() -> None:
    fn = Recorder(fail_on="bad")
    batcher = MicroBatcher(fn)
    items = ["a", "b", "bad", "c", "d"]
    results = await asyncio.gather(*(batcher.submit(x) for x in items), return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [":a", ":b", ":c", ":d"]
    assert isinstance(results[2], ValueError)


async def test_transient_error_fans_out_without_bisecting() -> None:
    calls = 0

    class RateLimited(Exception):
        status_code = 429

    async def fn(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        raise RateLimited("slow down")

    batcher = MicroBatcher(fn)
    results = await asyncio.gather(
        *(batcher.submit(str(i)) for i in range(6)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, RateLimited) for r in results)


async def test_wrong_result_count_is_an_error_for_everyone() -> None:
    async def fn(items: list[str]) -> list[str]:
        return items[:-1]

    batcher = MicroBatcher(fn, bisect=False)
    results = await asyncio.gather(
        *(batcher.submit(str(i)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, BatchSizeError) for r in results)


async def test_one_callers_cancellation_does_not_cancel_the_shared_call() -> None:
    fn = Recorder(delay=0.1)
    batcher = MicroBatcher(fn)
    tasks = [asyncio.ensure_future(batcher.submit(str(i))) for i in range(4)]
    await asyncio.sleep(0.05)  # the batch is in flight
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [":1", ":2", ":3"]
    assert len(fn.calls) == 1


async def test_caller_cancelled_before_dispatch_is_dropped() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_wait=0.05)
    tasks = [asyncio.ensure_future(batcher.submit(str(i))) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert fn.calls == [(["0", "2"], {})]


def test_threads_are_batched_too() -> None:
    seen: list[list[str]] = []

    def fn(items: list[str]) -> list[str]:
        seen.append(list(items))
        return [x.upper() for x in items]

    batcher = MicroBatcher(fn, max_wait=0.05)
    out: dict[int, str] = {}
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        barrier.wait()
        out[i] = batcher.call(f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {i: f"T{i}" for i in range(16)}
    assert sum(map(len, seen)) == 16 and len(seen) <= 3


async def test_batches_are_charged_to_a_limiter_as_one_request() -> None:
    limiter = RateLimiter(rpm=60, tpm=60_000)
    batcher = MicroBatcher(Recorder(), limiter=limiter)
    await asyncio.gather(*(batcher.submit("x" * 40) for _ in range(20)))
    lease = await limiter.aacquire(timeout=2)
    assert lease.waited > 0.5  # one request used the 1-request burst, 200 tokens charged
    await batcher.aclose()


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="max_items"):
        MicroBatcher(Recorder(), max_items=0)
