"""Rate limiter and micro-batcher figures against the enforcing loopback provider.

    python benchmarks/bench_ratelimit.py [--quick]

Utilization is requests sent / requests the limit allows in the elapsed time, where a bucket
of one second's burst allows ``burst + rate * elapsed``: 100% means exactly at the limit,
never more. Not a timed test: numbers vary with the machine, the limits do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stratacache.batching import MicroBatcher  # noqa: E402
from stratacache.ratelimit import RateLimiter  # noqa: E402
from stratacache.testing import OpenAICompatServer, prompt_tokens  # noqa: E402

RPM = 1200


def utilization(requests: int, elapsed: float, rpm: float = RPM) -> float:
    rate = rpm / 60
    return requests / (rate * 1.0 + rate * elapsed)


class ServerProcess:
    """The loopback provider in its own process, so its CPU time is not on our GIL."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stratacache.testing", *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, int]:
        url = self.base_url.removesuffix("/v1") + "/stratacache/stats"
        with urllib.request.urlopen(url, timeout=5) as reply:
            data: dict[str, int] = json.load(reply)
        return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_threads(server: ServerProcess, limiter: RateLimiter | None, threads: int,
                each: int) -> tuple[float, int]:  # fmt: skip
    """Returns elapsed seconds and 429 count."""
    refused = 0
    lock = threading.Lock()
    starts: list[float] = []  # measured from the first worker's start, not the main thread

    def worker(w: int) -> None:
        nonlocal refused
        with openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0) as client:
            client.models.list()  # warm up: connection, lazy imports (not rate limited)
            ready.wait()
            with lock:
                starts.append(time.monotonic())
            for k in range(each):
                messages = [{"role": "user", "content": f"bench {w} {k}"}]
                try:
                    if limiter is None:
                        client.chat.completions.create(model="m", messages=messages, max_tokens=16)  # type: ignore[arg-type]
                        continue
                    with limiter.acquire(tokens=prompt_tokens(messages) + 16) as lease:
                        raw = client.chat.completions.with_raw_response.create(
                            model="m", messages=messages, max_tokens=16,  # type: ignore[arg-type]
                        )  # fmt: skip
                        limiter.observe_headers(raw.headers, status=raw.status_code)
                        usage = raw.parse().usage
                        lease.settle(usage.total_tokens if usage else lease.tokens)
                except openai.RateLimitError:
                    with lock:
                        refused += 1

    ready = threading.Barrier(threads + 1)
    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    ready.wait()
    for t in pool:
        t.join()
    return time.monotonic() - min(starts), refused


_WORKER = """
import json, sys, time
from stratacache.ratelimit import RateLimiter
url, n, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
limiter = RateLimiter(rpm=RPM_VALUE, redis_url=url, name="bench-two-proc")
time.sleep(max(0.0, start_at - time.time()))
grants = []
for _ in range(n):
    limiter.acquire()
    grants.append(time.time())
print(json.dumps({"grants": grants, "degraded": limiter.degraded}))
""".replace("RPM_VALUE", str(RPM))


def two_processes(total: int) -> None:
    try:
        from tests.redis_procs import REDIS_SERVER, RedisProcess
    except ImportError:
        print("two processes / Redis: skipped (run from the repository root)")
        return
    if REDIS_SERVER is None:
        print("two processes / Redis: skipped (redis-server not on PATH)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp)).start()
        try:
            start_at = time.time() + 2.0
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER, server.url, str(total // 2), repr(start_at)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
        finally:
            server.stop()
    grants = sorted(g for o in outs for g in o["grants"])
    elapsed = grants[-1] - start_at
    busiest = max(
        sum(1 for g in grants if s <= g < s + 1.0) for s in grants
    )  # most grants in any 1 s window
    print(
        f"two processes, one Redis: {total} requests at {RPM} rpm in {elapsed:.2f}s "
        f"(floor {(total - RPM / 60) / (RPM / 60):.2f}s), utilization "
        f"{utilization(total, elapsed):.1%}, busiest 1s window {busiest} "
        f"(limit {int(RPM / 60 * 2)} = burst + 1s of rate), "
        f"degraded={any(o['degraded'] for o in outs)}"
    )


async def batching(n: int) -> None:
    async with OpenAICompatServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)

        async def embed_documents(texts: list[str]) -> list[list[float]]:
            reply = await client.embeddings.create(model="e", input=texts)
            return [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]

        batcher = MicroBatcher(embed_documents)
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(f"query {i}") for i in range(n)))
        elapsed = time.monotonic() - started
        await client.close()
    print(
        f"MicroBatcher: {n} concurrent embed_query calls -> "
        f"{server.stats.requests['embeddings']} embeddings request(s) in {elapsed * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args()
    threads, each = (8, 5) if args.quick else (8, 10)
    total = threads * each

    for label, limiter in (("local limiter", RateLimiter(rpm=RPM, tpm=200_000)),
                           ("no limiter   ", None)):  # fmt: skip
        server = ServerProcess("--rpm", str(RPM), "--tpm", "200000")
        try:
            elapsed, refused = run_threads(server, limiter, threads, each)
            counted = server.stats()["rate_limited"]
        finally:
            server.stop()
        floor = (total - RPM / 60) / (RPM / 60)
        extra = (
            f"(floor {floor:.2f}s), utilization {utilization(total, elapsed):.1%}, "
            if limiter is not None
            else ""
        )
        print(
            f"{label}: {total} requests from {threads} threads at {RPM} rpm in {elapsed:.2f}s "
            f"{extra}provider 429s {refused} of {total} (server counted {counted})"
        )
    two_processes(total)
    asyncio.run(batching(32))


if __name__ == "__main__":
    main()
