"""A cache hit through ``litellm.completion``: litellm's own caches vs stratacache, side by side.

Every variant runs in this one process, through the real ``litellm.completion`` with
``mock_response=`` (so no provider is involved and only the hit path is measured):

* litellm's in-memory cache (``Cache()``), the reference; its disk cache (``type="disk"``);
* stratacache through :func:`stratacache.litellm.install`: memory + disk, disk only;
* with a private redis-server this script starts on a free loopback port (never 6379) and
  stops at the end: litellm's redis cache vs stratacache with a redis tier.

Prints the median µs per hit and the delta against litellm's in-memory hit. The target is a
delta of at most 200 µs for stratacache's disk and redis hits.

    python benchmarks/bench_litellm.py [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")

import litellm  # noqa: E402
from litellm.caching.caching import Cache  # noqa: E402

import stratacache as sc  # noqa: E402
import stratacache.litellm as scl  # noqa: E402
from stratacache.integrations.litellm._compat import (  # noqa: E402
    apply_hit_patch,
    litellm_version,
    revert_hit_patch,
)

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Explain multi-level caching for LLM pipelines. " * 8},
]
ANSWER = "A multi-level cache checks fast local tiers before slower shared ones. " * 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[int | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def hit_us(ops: int, rounds: int) -> float:
    """Median µs per hit over ``rounds`` of ``ops`` hits (the entry is stored first)."""

    def call() -> Any:
        return litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, temperature=0
        )

    call()
    time.sleep(0.05)
    assert call()._hidden_params.get("cache_hit") is True, "not a hit"
    for _ in range(min(ops, 50)):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(ops):
            call()
        samples.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(samples)


def with_litellm_cache(make: Callable[[], Cache], ops: int, rounds: int) -> float:
    litellm.cache = make()
    try:
        return hit_us(ops, rounds)
    finally:
        litellm.disable_cache()


def with_stratacache(cache: sc.TieredCache, ops: int, rounds: int) -> float:
    scl.install(cache)
    try:
        return hit_us(ops, rounds)
    finally:
        scl.uninstall()
        cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer hits (CI smoke run)")
    args = parser.parse_args()
    ops, rounds = (200, 3) if args.quick else (1000, 7)
    # litellm 1.106.x crashes on every hit without fastapi (litellm#42195), its own caches
    # included: the same workaround serves every variant, so the comparison stays fair.
    patched = apply_hit_patch()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["litellm memory (reference)"] = with_litellm_cache(Cache, ops, rounds)
        results["litellm disk"] = with_litellm_cache(
            lambda: Cache(type="disk", disk_cache_dir=str(root / "litellm-disk")), ops, rounds
        )
        results["stratacache memory+disk"] = with_stratacache(
            sc.TieredCache.from_urls("memory://", f"disk://{root / 'sc-md'}"), ops, rounds
        )
        results["stratacache disk"] = with_stratacache(
            sc.TieredCache.from_urls(f"disk://{root / 'sc-d'}"), ops, rounds
        )
        with redis_server(root) as port:
            if port is not None:
                results["litellm redis"] = with_litellm_cache(
                    lambda: Cache(type="redis", host="127.0.0.1", port=str(port)), ops, rounds
                )
                results["stratacache redis"] = with_stratacache(
                    sc.TieredCache.from_urls(f"redis://127.0.0.1:{port}/0"), ops, rounds
                )
    if patched:
        revert_hit_patch()
    reference = results["litellm memory (reference)"]
    version = ".".join(map(str, litellm_version()))
    print(f"litellm {version}, #42195 workaround {'applied' if patched else 'not needed'}")
    print(f"{'cache hit through litellm.completion':40} {'µs/hit':>9} {'vs litellm memory':>18}")
    for name, value in results.items():
        print(f"{name:40} {value:9.0f} {value - reference:+17.0f}")
    if "stratacache redis" not in results:
        print("(redis-server not found: redis variants skipped)")


if __name__ == "__main__":
    main()
