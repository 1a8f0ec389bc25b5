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

The measuring code is ``stratacache._peers``, which ``stratacache bench`` runs too.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")

from litellm.caching.caching import Cache  # noqa: E402
from litellm.types.caching import LiteLLMCacheType  # noqa: E402

import stratacache as sc  # noqa: E402
from stratacache._peers import LITELLM_ANSWER, Variant, litellm_hits, litellm_state  # noqa: E402
from stratacache.integrations.litellm._compat import litellm_version  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer hits (CI smoke run)")
    args = parser.parse_args()
    ops, rounds = (200, 3) if args.quick else (500, 9)
    # litellm 1.106-1.110 crash on every hit without fastapi (litellm#42195), its own caches
    # included: the same workaround serves every variant, so the comparison stays fair.
    with (
        litellm_state() as patched,
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp)) as port,
    ):
        root = Path(tmp)
        variants = [Variant("litellm memory (reference)", Cache(), None)]
        try:  # litellm 1.110 dropped its disk cache type
            options: dict[str, Any] = {"type": "disk", "disk_cache_dir": str(root / "ld")}
            variants.append(Variant("litellm disk", Cache(**options), None))
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
                    "litellm redis",
                    Cache(type=LiteLLMCacheType.REDIS, host="127.0.0.1", port=str(port)),
                    None,
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
        measured = litellm_hits(variants, ops, rounds)
    results = {name: m.seconds * 1e6 for name, m in measured.items()}
    wrong = {name: m.answer for name, m in measured.items() if m.answer != LITELLM_ANSWER}
    reference = results["litellm memory (reference)"]
    repair = "applied" if patched else "not needed"
    print(f"litellm {litellm_version()}, #42195 workaround {repair}")
    print(f"{'cache hit through litellm.completion':40} {'µs/hit':>9} {'vs litellm memory':>18}")
    for name, value in results.items():
        print(f"{name:40} {value:9.0f} {value - reference:+17.0f}")
    for name, answer in wrong.items():
        print(f"!! {name} answered {answer[:60]!r}")
    if "stratacache redis" not in results:
        print("(redis-server not found: redis variants skipped)")


if __name__ == "__main__":
    main()
