"""How slow is a memory hit while the Redis behind it is slow?

Usage::

    python benchmarks/bench_slow_redis.py              # ~40 s
    python benchmarks/bench_slow_redis.py --seconds 2  # shorter windows
    python benchmarks/bench_slow_redis.py --json out.json

A ``memory://`` tier in front of a real redis-server (started here on a free loopback port,
never 6379) with the default settings (Redis ``timeout=0.5s``, ``generation_refresh=1s``,
breaker cap 2 s). For each condition of Redis:

* ``healthy``: answering normally;
* ``paused``: frozen with SIGSTOP (connections are accepted, nothing is answered);
* ``delayed``: behind a loopback proxy that holds every reply for 2 x the timeout;

it reports p50/p99/max latency of memory-tier hits (1 thread, then 4 threads) and of misses
(which must go to Redis), for ``--seconds`` of wall time each. A hit pays Redis only when the
namespace generation is due for a refresh; these figures show what that costs in the tail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stratacache as sc
from stratacache.tiers import MISS
from tests.delay_proxy import DelayProxy
from tests.redis_procs import RedisProcess

TIMEOUT = 0.5  # RedisTier's default


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(cache: sc.TieredCache, kind: str, threads: int, seconds: float) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def work(n: int) -> None:
        out = latencies[n]
        i = 0
        try:
            while time.monotonic() < deadline:
                key = f"hot{i % 100}" if kind == "hit" else f"miss-{n}-{i}"
                t0 = time.perf_counter()
                value = cache.get(key, MISS)
                out.append(time.perf_counter() - t0)
                if (value is MISS) != (kind == "miss"):
                    raise AssertionError(f"{kind}: {key} -> {value!r}")
                i += 1
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    flat = [x for part in latencies for x in part]
    return {
        "kind": kind,
        "threads": threads,
        "calls": len(flat),
        "p50_us": round(percentile(flat, 0.50) * 1e6, 1),
        "p99_us": round(percentile(flat, 0.99) * 1e6, 1),
        "max_ms": round(max(flat) * 1e3, 1),
        "over_timeout": sum(1 for x in flat if x > TIMEOUT),
    }


def run(seconds: float) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(Path(tmp) / "redis").start()
        proxy = DelayProxy(server.port)
        try:
            for condition in ("healthy", "paused", "delayed"):
                url = proxy.url() if condition == "delayed" else server.url
                cache = sc.TieredCache.from_urls("memory://", url, namespace="bench")
                for i in range(100):
                    cache.set(f"hot{i}", {"text": "x" * 1500, "i": i})
                assert server.proc is not None
                if condition == "paused":
                    os.kill(server.proc.pid, signal.SIGSTOP)
                elif condition == "delayed":
                    proxy.delay = 2 * TIMEOUT
                try:
                    for kind, threads in (("hit", 1), ("hit", 4), ("miss", 1)):
                        row = measure(cache, kind, threads, seconds)
                        row["redis"] = condition
                        rows.append(row)
                        print(
                            f"{condition:8} {kind:4} threads={threads}  calls={row['calls']:>8}"
                            f"  p50={row['p50_us']:>9.1f} us  p99={row['p99_us']:>9.1f} us"
                            f"  max={row['max_ms']:>7.1f} ms  >timeout={row['over_timeout']}",
                            flush=True,
                        )
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
                    proxy.delay = 0.0
                tier = cache.stats()["tiers"][1]
                print(
                    f"{condition:8} redis tier: errors={tier['errors']} skipped={tier['skipped']}"
                    f" busy={tier['busy']} breaker={tier['breaker']}",
                    flush=True,
                )
                cache.close()
        finally:
            proxy.close()
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per measurement")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.getLogger("stratacache").setLevel(logging.ERROR)  # one warning per outage is noise
    rows = run(args.seconds)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
