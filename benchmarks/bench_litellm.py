"""A cache hit through ``litellm.completion``: litellm's own caches vs stratacache, side by side.

Every variant runs in this one process, through the real ``litellm.completion`` with
``mock_response=`` (so no provider is involved and only the hit path is measured):

* litellm's in-memory cache (``Cache()``), the reference; its disk cache (``type="disk"``);
* stratacache through :func:`stratacache.litellm.install`: memory + disk, disk only;
* with a private redis-server this script starts on a free loopback port (never 6379) and
  stops at the end: litellm's redis cache vs stratacache with a redis tier, alone and with a
  memory tier in front (the recommended production set-up).

Prints the median µs per hit and the delta against litellm's in-memory hit. The targets are a
delta of at most 200 µs for stratacache's disk and redis hits, and for memory+redis.

    python benchmarks/bench_litellm.py [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import contextlib
import gc
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
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


def call() -> Any:
    return litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, temperature=0
    )


class Variant:
    """One cache set-up that can be switched on and off, so rounds can interleave variants:
    on a shared 2-core VM, timings drift by hundreds of µs from minute to minute, and
    measuring each variant in its own time window would mostly measure the drift."""

    def __init__(self, name: str, litellm_cache: Cache | None, ours: sc.TieredCache | None):
        self.name, self.litellm_cache, self.ours = name, litellm_cache, ours
        self.samples: list[float] = []

    def __enter__(self) -> Variant:
        if self.ours is not None:
            scl.install(self.ours)
        else:
            # What `litellm.cache = Cache(...)` does on construction, and what
            # `disable_cache()` undid on the previous exit: the "cache" callback markers.
            litellm.cache = self.litellm_cache
            for name in ("input_callback", "success_callback", "_async_success_callback"):
                if "cache" not in getattr(litellm, name):
                    getattr(litellm, name).append("cache")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ours is not None:
            scl.uninstall()
        else:
            litellm.disable_cache()

    def warm(self) -> None:
        with self:
            call()
            time.sleep(0.05)
            assert call()._hidden_params.get("cache_hit") is True, f"{self.name}: not a hit"
            for _ in range(50):
                call()

    def measure(self, ops: int) -> None:
        with self:
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(ops):
                    call()
                self.samples.append((time.perf_counter() - start) / ops * 1e6)
            finally:
                gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer hits (CI smoke run)")
    args = parser.parse_args()
    ops, rounds = (200, 3) if args.quick else (500, 9)
    # litellm 1.106-1.110 crash on every hit without fastapi (litellm#42195), its own caches
    # included: the same workaround serves every variant, so the comparison stays fair.
    patched = apply_hit_patch()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as port:
        root = Path(tmp)
        variants = [Variant("litellm memory (reference)", Cache(), None)]
        try:  # litellm 1.110 dropped its disk cache type
            disk = Cache(type="disk", disk_cache_dir=str(root / "ld"))
            variants.append(Variant("litellm disk", disk, None))
        except Exception as exc:  # the peer is optional here
            print(f"litellm disk: not available in this litellm ({exc})")
        variants += [
            Variant(
                "stratacache memory+disk",
                None,
                sc.TieredCache.from_urls("memory://", f"disk://{root / 'sc-md'}"),
            ),
            Variant("stratacache disk", None, sc.TieredCache.from_urls(f"disk://{root / 'sc-d'}")),
        ]
        if port is not None:
            variants += [
                Variant(
                    "litellm redis", Cache(type="redis", host="127.0.0.1", port=str(port)), None
                ),
                Variant(
                    "stratacache redis",
                    None,
                    sc.TieredCache.from_urls(f"redis://127.0.0.1:{port}/0"),
                ),
                Variant(
                    "stratacache memory+redis",
                    None,
                    sc.TieredCache.from_urls("memory://", f"redis://127.0.0.1:{port}/0"),
                ),
            ]
        for variant in variants:
            variant.warm()
        for _ in range(rounds):
            for variant in variants:
                variant.measure(ops)
        for variant in variants:
            if variant.ours is not None:
                variant.ours.close()
    results = {v.name: statistics.median(v.samples) for v in variants}
    if patched:
        revert_hit_patch()
    reference = results["litellm memory (reference)"]
    repair = "applied" if patched else "not needed"
    print(f"litellm {litellm_version()}, #42195 workaround {repair}")
    print(f"{'cache hit through litellm.completion':40} {'µs/hit':>9} {'vs litellm memory':>18}")
    for name, value in results.items():
        print(f"{name:40} {value:9.0f} {value - reference:+17.0f}")
    if "stratacache redis" not in results:
        print("(redis-server not found: redis variants skipped)")


if __name__ == "__main__":
    main()
