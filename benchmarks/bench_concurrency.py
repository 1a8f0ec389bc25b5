"""Concurrency benchmark (issue #14): many callers reading one TieredCache at once.

Usage::

    python benchmarks/bench_concurrency.py                      # full run, a few minutes
    python benchmarks/bench_concurrency.py --quick              # smoke run
    python benchmarks/bench_concurrency.py --json out.json      # also write every number
    python benchmarks/bench_concurrency.py --backends redis,cluster --modes async
    python benchmarks/bench_concurrency.py --pipeline off       # Redis rows without coalescing

For each backend (a TieredCache with that tier only: ``memory://``, ``disk://<tmp>``,
``redis://`` on a private redis-server, ``redis+cluster://`` on a private 3-node cluster) and
each number of concurrent callers (async: 1/50/200/2000 tasks awaiting ``cache.aget``;
threads: 1/50/200/256 threads calling ``cache.get``, and 2000 without ``--quick``), one row
gives throughput, per-call p50/p99 latency, **spurious misses** (every key was stored first
with a 1 h TTL, so every miss is the load's doing), and the tier's ``errors``/``busy``/
``skipped`` counters. A single ``aget_many``/``get_many`` of all 2000 keys is the baseline,
and the Redis and Cluster loads also run on redis-py used directly (GET / MGET, no timeout,
a pool of ``--redis-py-max-connections`` = 4096 so that it never runs out: redis-py's default
of 100 raises MaxConnectionsError beyond 100 concurrent callers), so the ``vs redis-py``
column is what the cache costs or saves over a bare client.

``--pipeline both|on|off`` runs the Redis rows with the tier's call coalescing on, off or
both; a RedisTier that predates the ``pipeline`` option runs once, labelled ``stratacache``.

The measuring code is ``stratacache._bench``, shared with ``stratacache bench`` (which runs
the same loads against the configured cache). redis-servers listen on free loopback ports
(never 6379) with no persistence; they and the temporary directory are removed at the end,
also on Ctrl-C or SIGTERM. See docs/benchmarks.md, section "Concurrency".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.redis_procs: the same launcher as the test fixtures

import stratacache as sc  # noqa: E402
from stratacache import _bench  # noqa: E402

BACKENDS = ("memory", "disk", "redis", "cluster")
MODES = (_bench.ASYNC, _bench.THREADS)
RAW_PREFIX = "stratacache-bench:raw:"

#: Undone at exit, last first: redis-servers, then the temporary directory.
_CLEANUP: list[Callable[[], object]] = []


def _cleanup() -> None:
    while _CLEANUP:
        action = _CLEANUP.pop()
        try:
            action()
        except Exception as exc:  # one failed step must not leave the others undone
            print(f"cleanup: {exc!r}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    _cleanup()
    os._exit(128 + signum)


# -- redis-py used directly ----------------------------------------------------------------------


class RedisPy:
    """The same loads on a bare redis-py client (GET / MGET), values stored as raw bytes."""

    def __init__(self, url: str, max_connections: int | None) -> None:
        self.cluster = url.startswith("redis+cluster://")
        self.url = url
        self.options = {} if max_connections is None else {"max_connections": max_connections}
        self._client: Any = None
        self._aclient: Any = None

    def _nodes(self) -> list[tuple[str, int]]:
        nodes = []
        for part in self.url.split("://", 1)[1].split(","):
            host, _, port = part.rpartition(":")
            nodes.append((host, int(port)))
        return nodes

    def _sync(self) -> Any:
        if self._client is None:
            if self.cluster:
                from redis.cluster import ClusterNode, RedisCluster

                nodes = [ClusterNode(h, p) for h, p in self._nodes()]
                self._client = RedisCluster(startup_nodes=nodes, **self.options)
            else:
                import redis

                self._client = redis.Redis.from_url(self.url, **self.options)
        return self._client

    def _async(self) -> Any:
        if self._aclient is None:
            if self.cluster:
                from redis.asyncio.cluster import ClusterNode, RedisCluster

                nodes = [ClusterNode(h, p) for h, p in self._nodes()]
                self._aclient = RedisCluster(startup_nodes=nodes, **self.options)
            else:
                import redis.asyncio

                self._aclient = redis.asyncio.Redis.from_url(self.url, **self.options)
        return self._aclient

    def populate(self, mapping: Mapping[str, str]) -> None:
        pipe = self._sync().pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(RAW_PREFIX + key, value.encode(), ex=int(_bench.TTL))
        pipe.execute()

    def get(self, key: str) -> str | None:
        data = self._sync().get(RAW_PREFIX + key)
        return None if data is None else bytes(data).decode()

    async def aget(self, key: str) -> str | None:
        data = await self._async().get(RAW_PREFIX + key)
        return None if data is None else bytes(data).decode()

    def _found(self, keys: Sequence[str], values: Sequence[Any]) -> dict[str, str]:
        return {k: bytes(v).decode() for k, v in zip(keys, values, strict=True) if v is not None}

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        raw = [RAW_PREFIX + k for k in keys]
        client = self._sync()
        return self._found(keys, client.mget_nonatomic(raw) if self.cluster else client.mget(raw))

    async def aget_many(self, keys: Sequence[str]) -> dict[str, str]:
        raw = [RAW_PREFIX + k for k in keys]
        client = self._async()
        values = await (client.mget_nonatomic(raw) if self.cluster else client.mget(raw))
        return self._found(keys, values)

    def counters(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None


# -- subjects --------------------------------------------------------------------------------


def pipeline_supported() -> bool:
    """Does this RedisTier take ``pipeline=`` (call coalescing, issue #14)?"""
    try:
        from stratacache.tiers.redis import RedisTier
    except ImportError:
        return False
    try:
        tier = RedisTier("redis://127.0.0.1:1/0", pipeline=False)  # type: ignore[call-arg]
    except TypeError:
        return False
    tier.close()
    return True


def redis_variants(url: str, pipeline: str, supported: bool) -> list[tuple[str, Callable[[], Any]]]:
    """(client label, cache factory) for the stratacache rows of a Redis backend."""
    if not supported:
        return [("stratacache", lambda: sc.TieredCache.from_urls(url))]
    from stratacache.tiers.redis import RedisTier

    flags = {"both": (True, False), "on": (True,), "off": (False,)}[pipeline]
    return [
        (
            f"stratacache pipeline={'on' if flag else 'off'}",
            lambda flag=flag: sc.TieredCache([RedisTier(url, pipeline=flag)]),  # type: ignore[call-arg]
        )
        for flag in flags
    ]


def _progress(row: _bench.Row) -> None:
    extra = f", {row.errors} errors" if row.errors else ""
    extra += f", {row.raised} raised" if row.raised else ""
    print(
        f"  {row.backend:<8} {row.client:<26} {row.mode:<9} N={row.callers:<5} "
        f"{row.throughput:>10.0f}/s  misses {row.misses}/{row.calls}{extra}",
        file=sys.stderr,
        flush=True,
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(redis_binary: str | None, supported: bool) -> dict[str, Any]:
    source = Path(sc.__file__).resolve().parent
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if source.is_relative_to(ROOT):
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        commit += " + uncommitted changes in src" if dirty else ""
    else:
        commit = f"imported from {source}"
    server = "not found"
    if redis_binary:
        out = subprocess.run([redis_binary, "--version"], capture_output=True, text=True)
        server = next((p[2:] for p in out.stdout.split() if p.startswith("v=")), "unknown")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "stratacache": sc.__version__,
        "commit": commit,
        "redis_py": _version("redis"),
        "redis_server": server,
        "pipeline_option": supported,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls per cell, no 2000 threads"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated subset of memory,disk,redis,cluster")  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES), help="async,threads or one of them")
    parser.add_argument("--pipeline", choices=("both", "on", "off"), default="both",
                        help="Redis tier call coalescing (when the tier supports it)")  # fmt: skip
    parser.add_argument("--redis-py-max-connections", type=int, default=4096, metavar="N",
                        help="pool size of the redis-py rows (per node on a cluster); 0 keeps "
                             "redis-py's default (100, and calls beyond it raise)")  # fmt: skip
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := (set(backends) - set(BACKENDS)) | (set(modes) - set(MODES)):
        parser.error(f"unknown backend or mode: {', '.join(sorted(unknown))}")
    sizes = _bench.Sizes.for_run(args.quick)
    supported = pipeline_supported()
    redis_binary = shutil.which("redis-server")
    env = environment(redis_binary, supported)

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(f"stratacache concurrency benchmark, {'quick' if args.quick else 'full'} run, "
          f"{env['date']}")  # fmt: skip
    print(f"Python {env['python']}, {env['platform']}, {env['cpus']} CPUs; stratacache "
          f"{env['stratacache']} ({env['commit']}), redis-py {env['redis_py']}, "
          f"redis-server {env['redis_server']}")  # fmt: skip
    print(f"cells: async callers {sizes.async_callers}, threads {sizes.thread_callers}; "
          f">= {sizes.total_calls} calls per cell, >= {sizes.min_per_caller} per caller; "
          f"{_bench.KEYS} keys of {len(_bench.bench_value(0))}-char values; a fresh cache "
          "per cell")  # fmt: skip
    if supported:
        print(f"RedisTier pipeline option: supported, rows with pipeline={args.pipeline}")
    else:
        print("RedisTier pipeline option: not supported by this tier (rows 'stratacache')")
    print(flush=True)

    rows: list[_bench.Row] = []
    skipped: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="stratacache-bench-concurrency-"))
    _CLEANUP.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    started = time.perf_counter()
    try:
        for backend in backends:
            if backend in ("memory", "disk"):
                url = "memory://" if backend == "memory" else f"disk://{tmp}/disk"
                rows += _bench.run_cache(
                    lambda url=url: sc.TieredCache.from_urls(url), backend=backend,
                    sizes=sizes, modes=modes, progress=_progress,
                )  # fmt: skip
                continue
            if redis_binary is None:
                skipped.append(f"{backend}: redis-server not on PATH")
                continue
            try:
                from tests.redis_procs import RedisClusterProcesses, RedisProcess
            except ImportError as exc:
                skipped.append(f"{backend}: cannot import tests.redis_procs ({exc})")
                continue
            server: Any = (
                RedisProcess(tmp / "redis")
                if backend == "redis"
                else RedisClusterProcesses(tmp / "cluster")
            )
            _CLEANUP.append(server.stop)
            try:
                server.start()
            except RuntimeError as exc:
                skipped.append(f"{backend}: redis-server did not start ({exc})"[:300])
                continue
            url = server.url
            for client, make_cache in redis_variants(url, args.pipeline, supported):
                rows += _bench.run_cache(
                    make_cache, backend=backend, client=client, sizes=sizes, modes=modes,
                    progress=_progress,
                )  # fmt: skip
            pool = args.redis_py_max_connections or None
            rows += _bench.run_subject(
                lambda url=url, pool=pool: RedisPy(url, pool), backend=backend, client="redis-py",
                sizes=sizes, modes=modes, progress=_progress,
            )  # fmt: skip
            server.stop()
    except KeyboardInterrupt:
        print("\ninterrupted: partial results below", file=sys.stderr)
    finally:
        _cleanup()
    elapsed = time.perf_counter() - started

    print(_bench.render(rows))
    for line in skipped:
        print(f"skipped: {line}")
    print(f"\n(run took {elapsed:.0f} s)")
    if args.json:
        report = {
            "environment": env,
            "sizes": {
                "async_callers": sizes.async_callers,
                "thread_callers": sizes.thread_callers,
                "total_calls": sizes.total_calls,
                "min_per_caller": sizes.min_per_caller,
                "batch_repeats": sizes.batch_repeats,
                "keys": _bench.KEYS,
            },
            "rows": [row.as_dict() for row in rows],
            "ratios": _bench.ratios(rows),
            "skipped": skipped,
        }
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
