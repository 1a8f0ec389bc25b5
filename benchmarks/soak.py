"""Soak (issue #13, item 9): mixed traffic through the three integrations while Redis restarts.

Usage::

    python benchmarks/soak.py                        # 60 s (CI runs 40 s, tests/soak)
    python benchmarks/soak.py --seconds 1800         # longer on demand
    python benchmarks/soak.py --json soak.json       # also write every sample

Why a separate process: the figures that matter here are the process's own resident memory,
open file descriptors and threads, and the connections it holds on Redis. Measured inside a
test runner, they would include the runner's own growth.

One process, one ``TieredCache`` (memory, 16 MB, in front of a private ``redis-server`` on a
free loopback port; never 6379), with the documented one-liners installed on it:
``set_llm_cache(LLMCache(cache))`` for LangChain ``ChatOpenAI``,
``stratacache.litellm.install(cache)`` for ``litellm.completion``/``acompletion``/``embedding``,
and ``CachedLLM``/``CachedEmbedding`` for LlamaIndex's OpenAI clients. They all talk to the loopback
OpenAI-compatible provider. Worker threads (sync) and one event loop (async) ask questions drawn
from a pool of 300 (a few popular, a long tail), so there are hits, misses and evictions the
whole time. Every ``--restart-every`` seconds Redis is SIGKILLed and restarted one second later.

Each answer is checked: the loopback provider echoes the question, so an answer without its
own question in it is a **wrong value**. Exceptions raised to a caller are counted, not
swallowed. Every second a sample records RSS, open descriptors, threads, Redis' client
connections, calls, and the Redis tier's hits and errors. The summary gives the least-squares
slope of each series over the second half of the run (after warm-up) and their ranges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.redis_procs: the same launcher as the test fixtures

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

import stratacache as sc  # noqa: E402
from stratacache.testing import OpenAICompatServer  # noqa: E402

MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
QUESTIONS = tuple(f"soak question {i}: what does setting {i % 17} do?" for i in range(300))
RESULT_PREFIX = "STRATACACHE-SOAK "


def _pick(rng: random.Random) -> str:
    """A few popular questions, a long tail: 60% from the first 20."""
    return QUESTIONS[rng.randrange(20)] if rng.random() < 0.6 else rng.choice(QUESTIONS)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (per unit of x); 0 for fewer than two points."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


class Soak:
    """The traffic, the faults and the samples of one run."""

    def __init__(self, base_url: str, redis_url: str) -> None:
        self.cache = sc.TieredCache.from_urls(
            "memory://?max_bytes=16MB", redis_url, namespace="soak"
        )
        self.base_url = base_url
        self.calls = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._install()

    def _install(self) -> None:
        from langchain_core.globals import set_llm_cache
        from langchain_openai import ChatOpenAI
        from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]
        from llama_index.llms.openai import OpenAI

        import stratacache.litellm as scl
        from stratacache.langchain import LLMCache
        from stratacache.llamaindex import CachedEmbedding, CachedLLM

        set_llm_cache(LLMCache(self.cache))
        scl.install(self.cache)
        key = "soak"
        self.chat = ChatOpenAI(model=MODEL, base_url=self.base_url, api_key=key, temperature=0)  # type: ignore[arg-type]
        self.llm = CachedLLM(
            OpenAI(model=MODEL, api_base=self.base_url, api_key=key, temperature=0),
            cache=self.cache,
        )
        self.embed = CachedEmbedding(
            OpenAIEmbedding(model=EMBEDDING_MODEL, api_base=self.base_url, api_key=key),
            cache=self.cache,
        )

    # -- the traffic ---------------------------------------------------------------------------

    def _litellm_kwargs(self, question: str) -> dict[str, Any]:
        return {
            "model": f"openai/{MODEL}",
            "messages": [{"role": "user", "content": question}],
            "api_base": self.base_url,
            "api_key": "soak",
            "temperature": 0,
        }

    def _sync_call(self, rng: random.Random) -> tuple[str, str | None]:
        """One request through one integration: ``(question, answer or None if no text)``."""
        import litellm
        from llama_index.core.llms import ChatMessage

        question = _pick(rng)
        kind = rng.randrange(5)
        if kind == 0:
            return question, str(self.chat.invoke(question).content)
        if kind == 1:
            response: Any = litellm.completion(**self._litellm_kwargs(question))
            return question, str(response.choices[0].message.content)
        if kind == 2:
            reply = self.llm.chat([ChatMessage(role="user", content=question)])
            return question, str(reply.message.content)
        if kind == 3:
            vector = self.embed.get_text_embedding(question)
            if len(vector) == 0:
                return question, ""
            return question, None
        litellm.embedding(
            model=f"openai/{EMBEDDING_MODEL}",
            input=[question],
            api_base=self.base_url,
            api_key="soak",
        )
        return question, None

    async def _async_call(self, rng: random.Random) -> tuple[str, str | None]:
        import litellm

        question = _pick(rng)
        if rng.random() < 0.5:
            message = await self.chat.ainvoke(question)
            return question, str(message.content)
        response: Any = await litellm.acompletion(**self._litellm_kwargs(question))
        return question, str(response.choices[0].message.content)

    def _record(self, question: str, answer: str | None) -> None:
        with self._lock:
            self.calls += 1
            # The provider echoes the question: an answer without it belongs to another one.
            if answer is not None and question not in answer:
                self.wrong.append(f"{question!r} -> {answer[:80]!r}")

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            try:
                self._record(*self._sync_call(rng))
            except Exception as exc:
                self._failed(exc)

    def async_load(self, tasks: int) -> None:
        async def task(seed: int) -> None:
            rng = random.Random(seed)
            while not self.stop.is_set():
                try:
                    self._record(*await self._async_call(rng))
                except Exception as exc:
                    self._failed(exc)

        async def main() -> None:
            await asyncio.gather(*(task(1000 + i) for i in range(tasks)))

        asyncio.run(main())


def _redis_clients(url: str) -> int | None:
    """Connections on the server, not counting the one asking; None while it is down."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    except redis.RedisError:
        return None
    finally:
        client.close()


def run(seconds: float, restart_every: float, threads: int, tasks: int) -> dict[str, Any]:
    from tests.redis_procs import RedisProcess

    workdir = Path(tempfile.mkdtemp(prefix="stratacache-soak-"))
    redis_proc = RedisProcess(workdir / "redis").start()
    samples: list[dict[str, Any]] = []
    restarts: list[float] = []
    try:
        with OpenAICompatServer(latency=0.002) as server:
            soak = Soak(server.base_url, redis_proc.url)
            runners = [
                threading.Thread(target=soak.worker, args=(i,), daemon=True) for i in range(threads)
            ]
            runners.append(threading.Thread(target=soak.async_load, args=(tasks,), daemon=True))
            start = time.monotonic()
            for runner in runners:
                runner.start()
            next_restart = start + restart_every
            while (now := time.monotonic()) - start < seconds:
                if now >= next_restart and now - start < seconds - restart_every / 2:
                    redis_proc.kill()
                    time.sleep(1.0)
                    redis_proc.start()
                    restarts.append(round(time.monotonic() - start, 2))
                    next_restart = time.monotonic() + restart_every
                tier = soak.cache.stats()["tiers"][1]
                samples.append(
                    {
                        "t": round(time.monotonic() - start, 2),
                        "rss_mb": round(_rss_bytes() / 2**20, 2),
                        "fds": _fds(),
                        "threads": threading.active_count(),
                        # litellm's logging pool is litellm's own, bounded by
                        # LOGGING_EXECUTOR_MAX_THREADS (100): counted apart
                        "threads_ours": sum(
                            not t.name.startswith("litellm-logging") for t in threading.enumerate()
                        ),
                        "redis_clients": _redis_clients(redis_proc.url),
                        "calls": soak.calls,
                        "redis_hits": tier["hits"],
                        "redis_errors": tier["errors"],
                        "breaker": tier["breaker"],
                    }
                )
                time.sleep(1.0)
            # Which threads are alive at the end of the load, by name without its number: a
            # thread count that grows names the pool that grows.
            names = Counter(
                re.sub(r"[-_ ]?\d+", "", t.name) or t.name for t in threading.enumerate()
            )
            soak.stop.set()
            for runner in runners:
                runner.join(30)
            provider_requests = server.stats.total
            # After the last restart the shared tier must be in use again: a fresh client
            # sees what this process writes now.
            soak.cache.set("soak-final", {"ok": True})
            fresh = sc.TieredCache.from_urls(redis_proc.url, namespace="soak")
            redis_serving = fresh.get("soak-final") == {"ok": True}
            fresh.close()
            soak.cache.close()
    finally:
        redis_proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return summarize(
        samples,
        restarts=restarts,
        calls=soak.calls,
        wrong=soak.wrong,
        errors=soak.errors,
        provider_requests=provider_requests,
        redis_serving=redis_serving,
        seconds=seconds,
        threads_at_end=dict(names.most_common()),
    )


def summarize(samples: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """Slopes (per minute) and ranges of each series over the second half of the run."""
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2] if samples else []
    series: dict[str, dict[str, float | None]] = {}
    for name in ("rss_mb", "fds", "threads", "threads_ours", "redis_clients"):
        points = [(s["t"], s[name]) for s in half if s[name] is not None]
        values = [s[name] for s in samples if s[name] is not None]
        series[name] = {
            "slope_per_min": round(slope([t for t, _ in points], [v for _, v in points]) * 60, 3),
            "first_half_max": max(
                (s[name] for s in samples if s not in half and s[name] is not None), default=None
            ),
            "second_half_max": max((v for _, v in points), default=None),
            "min": min(values, default=None),
            "max": max(values, default=None),
            "last": values[-1] if values else None,
        }
    calls = facts["calls"]
    return {
        **{k: v for k, v in facts.items() if k not in ("wrong", "errors")},
        "wrong_values": len(facts["wrong"]),
        "wrong_examples": facts["wrong"][:5],
        "exceptions": len(facts["errors"]),
        "exception_examples": facts["errors"][:5],
        "calls_per_second": round(calls / facts["seconds"], 1),
        "cache_hit_share": round(1 - facts["provider_requests"] / calls, 4) if calls else 0.0,
        "series": series,
        "samples": samples,
    }


def render(summary: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out(
        f"soak: {summary['seconds']:.0f} s, {summary['calls']} calls "
        f"({summary['calls_per_second']}/s), {summary['provider_requests']} sent to the provider, "
        f"Redis restarted at {summary['restarts']} s"
    )
    out(
        f"  exceptions to callers {summary['exceptions']}, wrong values "
        f"{summary['wrong_values']}, Redis serving after the last restart: "
        f"{summary['redis_serving']}"
    )
    out(f"  {'series':<14} {'slope/min':>10} {'min':>8} {'max':>8} {'last':>8}  (2nd half slope)")
    for name, s in summary["series"].items():
        low, high, last = (str(s[k]) for k in ("min", "max", "last"))
        out(f"  {name:<14} {s['slope_per_min']:>10} {low:>8} {high:>8} {last:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--restart-every", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=8, help="asyncio tasks on one loop")
    parser.add_argument("--json", metavar="PATH", help="write the summary with every sample")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("stratacache").setLevel(logging.CRITICAL)  # outages are expected here
    summary = run(args.seconds, args.restart_every, args.threads, args.tasks)
    render(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(RESULT_PREFIX + json.dumps({k: v for k, v in summary.items() if k != "samples"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
