"""The limiter against the enforcing loopback provider, through the real ``openai`` client."""

from __future__ import annotations

import asyncio
import threading
import time

import openai
import pytest

from stratacache.ratelimit import RateLimiter
from stratacache.testing import OpenAICompatServer, prompt_tokens


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question number {i} about rate limits"}]


def _call(client: openai.OpenAI, limiter: RateLimiter | None, i: int) -> int:
    """One request; returns its status (429s are counted, not retried)."""
    messages = _messages(i)
    estimate = prompt_tokens(messages) + 20
    try:
        if limiter is None:
            client.chat.completions.create(model="m", messages=messages, max_tokens=20)  # type: ignore[arg-type]
            return 200
        with limiter.acquire(tokens=estimate) as lease:
            raw = client.chat.completions.with_raw_response.create(
                model="m",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=20,
            )
            limiter.observe_headers(raw.headers, status=raw.status_code)
            usage = raw.parse().usage
            assert usage is not None
            lease.settle(usage.total_tokens)
            return 200
    except openai.RateLimitError as exc:
        if limiter is not None:
            limiter.observe_headers(exc.response.headers, status=429)
        return 429


def _run_threads(server: OpenAICompatServer, limiter: RateLimiter | None, threads: int,
                 each: int) -> list[int]:  # fmt: skip
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as client:
            for k in range(each):
                status = _call(client, limiter, w * each + k)
                with lock:
                    statuses.append(status)

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return statuses


def test_limits_just_under_the_server_give_zero_429s() -> None:
    # 5% under the provider's limits, as docs/ratelimit.md advises: a limit that matches the
    # provider's exactly has no room for the jitter between our grant and the provider's
    # clock (on busy cores 3 of 80 requests arrived bunched and were refused).
    with OpenAICompatServer(rpm=1200, tpm=60_000) as server:
        limiter = RateLimiter(rpm=1140, tpm=57_000)
        per_second = 1140 / 60
        started = time.monotonic()
        statuses = _run_threads(server, limiter, threads=8, each=10)
        elapsed = time.monotonic() - started
        assert statuses.count(200) == 80
        assert server.stats.rate_limited == 0
        assert elapsed >= (80 - per_second) / per_second - 0.05


def test_token_bound_workload_gives_zero_429s() -> None:
    with OpenAICompatServer(tpm=30_000) as server:  # 500 tokens/s, the binding limit
        limiter = RateLimiter(tpm=30_000)
        statuses = _run_threads(server, limiter, threads=4, each=10)
        assert statuses.count(200) == 40
        assert server.stats.rate_limited == 0
        assert server.stats.prompt_tokens + server.stats.completion_tokens > 500


def test_without_a_limiter_the_server_does_refuse() -> None:
    with OpenAICompatServer(rpm=600) as server:
        statuses = _run_threads(server, None, threads=4, each=8)
        assert statuses.count(429) > 0
        assert server.stats.rate_limited == statuses.count(429)


@pytest.mark.slow
def test_too_generous_limiter_adapts_from_429s_and_headers() -> None:
    with OpenAICompatServer(rpm=600) as server:
        limiter = RateLimiter(rpm=1800)  # 3x what the provider allows
        done = 0
        with openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0) as client:
            lock = threading.Lock()

            def worker(w: int) -> None:
                nonlocal done
                for k in range(8):
                    while _call(client, limiter, w * 8 + k) == 429:
                        pass
                    with lock:
                        done += 1

            pool = [threading.Thread(target=worker, args=(w,)) for w in range(5)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        assert done == 40
        # Clamping to `remaining` and one shared pause per 429 keep refusals rare.
        assert server.stats.rate_limited <= 12


async def test_async_clients_with_zero_429s() -> None:
    async with OpenAICompatServer(rpm=1200, tpm=60_000) as server:
        limiter = RateLimiter(rpm=1200, tpm=60_000)
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)

        async def one(i: int) -> None:
            messages = _messages(i)
            async with limiter.aacquire(tokens=prompt_tokens(messages) + 20) as lease:
                raw = await client.chat.completions.with_raw_response.create(
                    model="m",
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=20,
                )
                await limiter.aobserve_headers(raw.headers, status=raw.status_code)
                usage = raw.parse().usage
                assert usage is not None
                lease.settle(usage.total_tokens)

        await asyncio.gather(*(one(i) for i in range(40)))
        await client.close()
        assert server.stats.requests["chat"] == 40
        assert server.stats.rate_limited == 0
