"""Core benchmark: stratacache's tiers side by side with LangChain's and LiteLLM's caches.

Usage::

    python benchmarks/bench_core.py            # full run, a few minutes
    python benchmarks/bench_core.py --quick    # smoke run, under a minute
    python benchmarks/bench_core.py --json results.json

Everything runs in one process against the same payload (an LLM response of ~1.5 KB):

1. hit and write latency (median and p99, microseconds) for stratacache's TieredCache in
   five configurations, its raw tiers, and six peer caches; then headline ratios;
2. ``import stratacache`` time, measured in fresh interpreters, and a check that the import
   pulls in none of LangChain, LlamaIndex, LiteLLM, redis or numpy;
3. Redis-down resilience: 600 mixed calls against a TieredCache whose Redis was killed
   (and, as a harder case, frozen with SIGSTOP so that sockets time out instead of failing).

The script starts its own redis-server on a free loopback port (never the machine's 6379),
keeps every file in a temporary directory, and removes both at the end. A peer whose package
is missing is reported as skipped; the rest of the run goes on. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# LiteLLM downloads its model price map at import time unless told otherwise; a benchmark
# must not depend on the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# ---------------------------------------------------------------------------------------------
# Run sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs. A row stops at ``*_iters`` samples or ``row_seconds``
    (whichever comes first, but never below ``min_samples``)."""

    hit_iters: int
    write_iters: int
    hit_warmup: int
    write_warmup: int
    row_seconds: float
    min_samples: int
    import_runs: int
    rounds: int
    resilience_ops: int = 600
    hot_keys: int = 256


FULL = Budget(
    hit_iters=5000,
    write_iters=1000,
    hit_warmup=300,
    write_warmup=30,
    row_seconds=8.0,
    min_samples=100,
    import_runs=9,
    rounds=5,
)
QUICK = Budget(
    hit_iters=600,
    write_iters=120,
    hit_warmup=60,
    write_warmup=10,
    row_seconds=1.0,
    min_samples=30,
    import_runs=5,
    rounds=2,
)

#: Wall-clock guard for the resilience loop: if the breaker never opened, 600 calls at a
#: socket timeout each would take minutes; the run reports "aborted" instead of hanging.
RESILIENCE_ABORT_SECONDS = 60.0
#: LiteLLM's caches expire entries by default (RedisCache after 60 s); a full run outlasts that.
LITELLM_TTL_S = 3600

# ---------------------------------------------------------------------------------------------
# The payload: one realistic chat request and its answer
# ---------------------------------------------------------------------------------------------

MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You are a careful assistant for an internal engineering wiki. Answer in plain English, "
    "cite the page you used, and say so when the wiki does not cover the question."
)
ANSWER = (
    "Short answer: put the cache in front of the model call, not behind the retriever. "
    "A response cache keyed on the full request (model, every sampling parameter, the system "
    "prompt and the whole conversation) returns the same completion whenever the same request "
    "comes back, which in an evaluation loop or a CI run is most of the time. Three things "
    "matter in practice. First, the key: anything that changes the answer must be part of it, "
    "and anything that only changes transport (timeouts, request ids, stream flags) must not, "
    "or the hit rate collapses. Second, the storage: an in-process LRU serves repeated calls "
    "in microseconds, a local disk store survives restarts and is shared by worker processes "
    "on one machine, and Redis shares answers across machines at the price of one network "
    "round trip. Third, failure: when Redis is down the cache has to degrade to a miss, "
    "quickly and quietly, instead of turning an outage of an optimisation into an outage of "
    "the product. See the page 'LLM response caching' (section 2.3) for the configuration "
    "we use in staging, and 'Cache invalidation' for how a namespace is cleared after a "
    "prompt change without flushing the whole database. If you need per-tenant isolation, "
    "give each tenant its own namespace rather than its own Redis database."
)
LLM_STRING = (
    '{"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "openai", '
    '"ChatOpenAI"], "kwargs": {"model_name": "gpt-4o-mini", "temperature": 0.0, '
    '"max_tokens": 512, "openai_api_key": {"lc": 1, "type": "secret", "id": '
    '["OPENAI_API_KEY"]}}, "name": "ChatOpenAI"}---[(\'stop\', None)]'
)


class Workload:
    """Requests ``0..size-1``: the first ``hot`` are pre-stored and read back by the hit
    benchmarks; the rest are fresh keys for the write benchmarks (each write is an insert)."""

    def __init__(self, size: int, hot: int) -> None:
        self.hot = hot
        self.messages = [
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": f"Question {i}: how should we cache LLM calls in the "
                    "ingestion pipeline, and what happens when the shared cache is down?",
                },
            ]
            for i in range(size)
        ]
        # LangChain passes chat prompts to its caches as the serialized message list.
        self.prompts = [json.dumps(m) for m in self.messages]
        self.litellm_keys = [hashlib.sha256((MODEL + p).encode()).hexdigest() for p in self.prompts]
        self.generation: dict[str, Any] = {
            "text": ANSWER,
            "generation_info": {"finish_reason": "stop", "logprobs": None},
            "type": "Generation",
        }
        self.model_response: dict[str, Any] = {
            "id": "chatcmpl-9b1f2c3d4e5f60718293a4b5c6d7e8f9",
            "object": "chat.completion",
            "created": 1_732_000_000,
            "model": MODEL,
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "tool_calls": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 74, "completion_tokens": 262, "total_tokens": 336},
        }
        self._sc_keys: list[str] | None = None

    def sc_keys(self) -> list[str]:
        if self._sc_keys is None:
            import stratacache as sc

            self._sc_keys = [
                sc.make_key(model=MODEL, messages=m, temperature=0, max_tokens=512)
                for m in self.messages
            ]
        return self._sc_keys


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    n: int
    p50_us: float
    p99_us: float
    mean_us: float
    misses: int = 0

    @classmethod
    def of(cls, samples_ns: list[int], misses: int = 0) -> Timing:
        ordered = sorted(samples_ns)
        n = len(ordered)
        mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        p99 = ordered[min(n - 1, math.ceil(0.99 * n) - 1)]
        return cls(n, mid / 1000, p99 / 1000, sum(ordered) / n / 1000, misses)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the cyclic GC out of the timed loop (as pytest-benchmark does)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Samples:
    ns: list[int] = field(default_factory=list)
    misses: int = 0

    def timing(self) -> Timing | None:
        return Timing.of(self.ns, self.misses) if self.ns else None


def measure(
    call: Callable[[int], Any],
    warmup: Iterable[int],
    timed: Iterable[int],
    into: Samples,
    *,
    seconds: float,
    min_samples: int,
    expect_value: bool = False,
    before: Callable[[], Any] | None = None,
) -> None:
    """Call ``call(i)`` for each ``warmup`` index, then time it for each ``timed`` index,
    stopping early once ``seconds`` have passed and ``min_samples`` were taken.

    ``before`` runs untimed before every call (e.g. emptying the memory tier). With
    ``expect_value``, a ``None`` result is counted as a miss: a hit benchmark that misses
    measures the wrong thing, and the table says so.
    """
    for i in warmup:
        if before is not None:
            before()
        call(i)
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    taken = 0
    with gc_paused():
        for i in timed:
            if before is not None:
                before()
            start = clock()
            result = call(i)
            end = clock()
            into.ns.append(end - start)
            taken += 1
            if expect_value and result is None:
                into.misses += 1
            if end > deadline and taken >= min_samples:
                break


# ---------------------------------------------------------------------------------------------
# Subjects: one cache each, with a uniform hit/write interface
# ---------------------------------------------------------------------------------------------


@dataclass
class Subject:
    key: str  # stable id, used for ratios and JSON
    library: str
    backend: str
    lookup: Callable[[int], Any]  # read request i (a hit after populate)
    store: Callable[[int], Any]  # write request i
    note: str = ""
    before_lookup: Callable[[], Any] | None = None
    hit_only: bool = False
    stats: Callable[[], dict[str, Any]] | None = None


@dataclass
class Row:
    key: str
    library: str
    backend: str
    note: str
    hit: Timing | None = None
    write: Timing | None = None
    skipped: str | None = None
    tier_problems: list[str] = field(default_factory=list)


def tiered_subject(
    key: str, backend: str, urls: list[str], wl: Workload, closers: contextlib.ExitStack, note: str
) -> Subject:
    import stratacache as sc

    cache = closers.enter_context(sc.TieredCache.from_urls(*urls, namespace="bench"))
    keys = wl.sc_keys()
    value = wl.generation
    return Subject(
        key,
        "stratacache",
        backend,
        lookup=lambda i: cache.get(keys[i]),
        store=lambda i: cache.set(keys[i], value),
        note=note,
        stats=cache.stats,
    )


def stratacache_subjects(
    wl: Workload, tmp: Path, redis_url: str | None, closers: contextlib.ExitStack
) -> list[Subject | Row]:
    import stratacache as sc

    mem = "memory://?max_bytes=256MB"
    subjects: list[Subject | Row] = [
        tiered_subject("sc_memory", "memory", [mem], wl, closers, "TieredCache"),
        tiered_subject(
            "sc_disk", "disk", [f"disk://{tmp / 'sc-disk'}"], wl, closers, "TieredCache"
        ),
        tiered_subject(
            "sc_memory_disk",
            "memory+disk",
            [mem, f"disk://{tmp / 'sc-md'}"],
            wl,
            closers,
            "hit served by memory; write goes to both",
        ),
    ]
    # memory+disk with the memory tier emptied before every read: a disk hit plus promotion.
    cold = sc.TieredCache.from_urls(mem, f"disk://{tmp / 'sc-md-cold'}", namespace="bench")
    closers.enter_context(cold)
    keys = wl.sc_keys()
    subjects.append(
        Subject(
            "sc_memory_disk_cold",
            "stratacache",
            "memory+disk, cold memory",
            lookup=lambda i: cold.get(keys[i]),
            store=lambda i: cold.set(keys[i], wl.generation),
            note="memory emptied before each get: disk hit + promote",
            before_lookup=cold.tiers[0].clear,
            hit_only=True,
            stats=cold.stats,
        )
    )
    if redis_url is None:
        subjects += [
            skipped("sc_redis", "stratacache", "redis", "redis-server not on PATH"),
            skipped("sc_memory_disk_redis", "stratacache", "memory+disk+redis", "no redis-server"),
        ]
    else:
        subjects += [
            tiered_subject("sc_redis", "redis", [redis_url], wl, closers, "TieredCache"),
            tiered_subject(
                "sc_memory_disk_redis",
                "memory+disk+redis",
                [mem, f"disk://{tmp / 'sc-mdr'}", redis_url],
                wl,
                closers,
                "hit served by memory; write goes to all three",
            ),
        ]
    return subjects


def raw_tier_subjects(
    wl: Workload, tmp: Path, redis_url: str | None, closers: contextlib.ExitStack
) -> list[Subject]:
    """The byte-level tiers alone: what TieredCache (codec, policy, stats) adds on top."""
    from stratacache.codec import encode
    from stratacache.tiers import DiskTier, MemoryTier, RedisTier

    data = encode(wl.generation)
    pkeys = ["sc:bench:0:k:" + k for k in wl.sc_keys()]
    tiers: list[tuple[str, Any]] = [
        ("memory", MemoryTier()),
        ("disk", DiskTier(tmp / "raw-disk")),
    ]
    if redis_url is not None:
        tiers.append(("redis", RedisTier(redis_url.rsplit("/", 1)[0] + "/3")))
    subjects = []
    for backend, tier in tiers:
        closers.callback(tier.close)
        subjects.append(
            Subject(
                f"raw_{backend}",
                "stratacache tier",
                backend,
                # bind the tier now, not when the lambda runs
                lookup=lambda i, t=tier: t.get(pkeys[i]) or None,
                store=lambda i, t=tier: t.set(pkeys[i], data, None),
                note=f"{type(tier).__name__}.get/set, envelope bytes",
            )
        )
    if redis_url is not None:
        # The floor for every Redis-backed cache: one GET/SET through redis-py, nothing else.
        import redis

        client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4")
        closers.callback(client.close)
        subjects.append(
            Subject(
                "redis_py",
                "redis-py",
                "redis",
                lookup=lambda i: client.get(pkeys[i]),
                store=lambda i: client.set(pkeys[i], data),
                note="bare Redis.get/set: one loopback round trip",
            )
        )
    return subjects


def langchain_subjects(
    wl: Workload, tmp: Path, redis_port: int | None, closers: contextlib.ExitStack
) -> list[Subject | Row]:
    out: list[Subject | Row] = []
    try:
        from langchain_core.caches import InMemoryCache
        from langchain_core.outputs import Generation
    except ImportError as exc:
        return [skipped("lc_memory", "LangChain", "InMemoryCache", exc)]
    gens = [Generation(text=ANSWER, generation_info=wl.generation["generation_info"])]
    prompts = wl.prompts

    def subject(key: str, backend: str, cache: Any, note: str) -> Subject:
        return Subject(
            key,
            "LangChain",
            backend,
            lookup=lambda i: cache.lookup(prompts[i], LLM_STRING),
            store=lambda i: cache.update(prompts[i], LLM_STRING, gens),
            note=note,
        )

    out.append(subject("lc_memory", "InMemoryCache", InMemoryCache(), "langchain_core.caches"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain-community announces its sunset
            from langchain_community.cache import RedisCache, SQLiteCache
        # langchain-core installs its own warning filters on import, so this comes after it:
        # every SQLiteCache/RedisCache lookup warns about `allowed_objects`; noise here.
        warnings.filterwarnings("ignore", message=".*allowed_objects")
    except ImportError as exc:
        out.append(skipped("lc_sqlite", "LangChain", "SQLiteCache", exc))
        out.append(skipped("lc_redis", "LangChain", "RedisCache", exc))
        return out
    sqlite = SQLiteCache(database_path=str(tmp / "langchain.sqlite"))
    closers.callback(sqlite.engine.dispose)
    out.append(subject("lc_sqlite", "SQLiteCache", sqlite, "langchain_community, SQLAlchemy"))
    if redis_port is None:
        out.append(skipped("lc_redis", "LangChain", "RedisCache", "no redis-server"))
    else:
        import redis

        client = redis.Redis(host="127.0.0.1", port=redis_port, db=1)
        closers.callback(client.close)
        out.append(subject("lc_redis", "RedisCache", RedisCache(redis_=client), "HSET/HGETALL"))
    return out


def litellm_subjects(
    wl: Workload, tmp: Path, redis_port: int | None, closers: contextlib.ExitStack
) -> list[Subject | Row]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import litellm.caching as litellm_caching
            from litellm.caching import InMemoryCache, RedisCache
    except ImportError as exc:
        return [
            skipped(k, "LiteLLM", b, exc)
            for k, b in (("ll_memory", "InMemoryCache"), ("ll_disk", "DiskCache"),
                         ("ll_redis", "RedisCache"))
        ]  # fmt: skip
    keys = wl.litellm_keys
    value = wl.model_response

    def subject(key: str, backend: str, cache: Any, note: str) -> Subject:
        return Subject(
            key,
            "LiteLLM",
            backend,
            lookup=lambda i: cache.get_cache(keys[i]),
            # An explicit TTL: LiteLLM's RedisCache otherwise expires entries after 60 s,
            # which a full run outlasts (the hits would turn into misses).
            store=lambda i: cache.set_cache(keys[i], value, ttl=LITELLM_TTL_S),
            note=note,
        )

    # The default holds 200 items; hits must not be evicted by the benchmark's own writes.
    memory = InMemoryCache(max_size_in_memory=1_000_000, default_ttl=LITELLM_TTL_S)
    out: list[Subject | Row] = [subject("ll_memory", "InMemoryCache", memory, "dict + TTL heap")]
    try:  # litellm 1.110 removed its DiskCache
        disk = litellm_caching.DiskCache(disk_cache_dir=str(tmp / "litellm-disk"))
    except Exception as exc:
        out.append(skipped("ll_disk", "LiteLLM", "DiskCache", exc))
    else:
        closers.callback(disk.disk_cache.close)
        out.append(subject("ll_disk", "DiskCache", disk, "diskcache, pickled dict"))
    if redis_port is None:
        out.append(skipped("ll_redis", "LiteLLM", "RedisCache", "no redis-server"))
        return out
    redis_cache = RedisCache(host="127.0.0.1", port=redis_port, db=2)
    # LiteLLM also reads REDIS_HOST/REDIS_URL from the environment: make sure it is ours.
    port = redis_cache.redis_client.connection_pool.connection_kwargs.get("port")
    if port != redis_port:
        out.append(skipped("ll_redis", "LiteLLM", "RedisCache", f"client points at port {port}"))
        return out
    closers.callback(redis_cache.redis_client.close)
    out.append(subject("ll_redis", "RedisCache", redis_cache, "SET str(dict) / GET + json"))
    return out


def skipped(key: str, library: str, backend: str, reason: object) -> Row:
    return Row(key, library, backend, "", skipped=f"skipped: {reason}")


def run_subjects(subjects: list[Subject], wl: Workload, budget: Budget) -> list[Row]:
    """Measure every subject in ``budget.rounds`` interleaved rounds.

    On a small shared machine, latency drifts over minutes (other processes, CPU frequency,
    the Redis server competing for the same cores). Interleaving spreads that drift over all
    rows instead of penalising whichever row ran at a bad moment.
    """
    hot, rounds = wl.hot, budget.rounds
    hit_n, write_n = budget.hit_iters // rounds, budget.write_iters // rounds
    per_write_round = budget.write_warmup + write_n
    rows = {s.key: Row(s.key, s.library, s.backend, s.note) for s in subjects}
    hits = {s.key: Samples() for s in subjects}
    writes = {s.key: Samples() for s in subjects}
    for s in subjects:
        try:
            for i in range(hot):
                s.store(i)
        except Exception as exc:  # a broken peer must not sink the whole comparison
            rows[s.key].skipped = f"failed: {type(exc).__name__}: {exc}"
    for r in range(rounds):
        # A full warm-up once, then a short one per round: other rows ran in between.
        hit_warmup = budget.hit_warmup if r == 0 else max(1, budget.hit_warmup // 10)
        write_base = hot + r * per_write_round
        for s in subjects:
            row = rows[s.key]
            if row.skipped:
                continue
            try:
                measure(
                    s.lookup,
                    (i % hot for i in range(hit_warmup)),
                    ((r * hit_n + i) % hot for i in range(hit_n)),
                    hits[s.key],
                    seconds=budget.row_seconds / rounds,
                    min_samples=budget.min_samples // rounds,
                    expect_value=True,
                    before=s.before_lookup,
                )
                if not s.hit_only:
                    measure(
                        s.store,
                        range(write_base, write_base + budget.write_warmup),
                        range(write_base + budget.write_warmup, write_base + per_write_round),
                        writes[s.key],
                        seconds=budget.row_seconds / rounds,
                        min_samples=budget.min_samples // rounds,
                    )
            except Exception as exc:
                row.skipped = f"failed: {type(exc).__name__}: {exc}"
    for s in subjects:
        row = rows[s.key]
        row.hit, row.write = hits[s.key].timing(), writes[s.key].timing()
        if s.stats is not None:
            for tier in s.stats()["tiers"]:
                for counter in ("errors", "corrupt", "skipped"):
                    if tier[counter]:
                        row.tier_problems.append(f"{tier['name']} {counter}={tier[counter]}")
    return list(rows.values())


# ---------------------------------------------------------------------------------------------
# A private redis-server
# ---------------------------------------------------------------------------------------------


#: What a SIGTERM must undo: redis-servers to stop, then the temporary directory to remove.
_ON_SIGTERM: list[Callable[[], object]] = []


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return int(port)


class RedisServer:
    """One redis-server on 127.0.0.1, no persistence, files in ``directory``."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            "--protected-mode", "no", "--loglevel", "warning",
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _ON_SIGTERM.append(self.stop)
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log_text = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server did not start:\n{log_text[-2000:]}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def redis_server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return next((p[2:] for p in out.stdout.split() if p.startswith("v=")), "unknown")


# ---------------------------------------------------------------------------------------------
# Section 2: import time and import hygiene
# ---------------------------------------------------------------------------------------------

FORBIDDEN_IMPORTS = ("langchain", "llama_index", "litellm", "redis", "numpy")
IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import stratacache
ms = (time.perf_counter() - t0) * 1000
tops = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"ms": ms, "tops": sorted(tops)}))
"""


def measure_import(runs: int) -> dict[str, Any]:
    def probe() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        )
        return dict(json.loads(out.stdout))

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return (time.perf_counter() - start) * 1000

    probe()  # the first run may compile .pyc files
    probes = [probe() for _ in range(runs)]
    in_process = sorted(p["ms"] for p in probes)
    bare = sorted(wall("pass") for _ in range(runs))
    with_import = sorted(wall("import stratacache") for _ in range(runs))
    tops = set(probes[-1]["tops"])
    forbidden = sorted(t for t in tops if t.startswith(FORBIDDEN_IMPORTS))
    # The slowest modules of one run, from CPython's own import profiler.
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import stratacache"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    slowest = []
    for line in trace.splitlines()[1:]:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            slowest.append((int(parts[1]) / 1000, parts[2]))
    slowest.sort(reverse=True)
    return {
        "median_ms": in_process[len(in_process) // 2],
        "min_ms": in_process[0],
        "max_ms": in_process[-1],
        "runs": runs,
        "interpreter_bare_ms": bare[len(bare) // 2],
        "interpreter_with_import_ms": with_import[len(with_import) // 2],
        "forbidden_loaded": forbidden,
        "notable_loaded": sorted(t for t in tops if t in {"asyncio", "sqlite3", "diskcache"}),
        "slowest_cumulative": [{"ms": ms, "module": m} for ms, m in slowest[:6]],
    }


# ---------------------------------------------------------------------------------------------
# Section 3: Redis down
# ---------------------------------------------------------------------------------------------


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def redis_down(binary: str, directory: Path, mode: str, ops: int, wl: Workload) -> dict[str, Any]:
    """``mode`` is "killed" (SIGKILL: connections refused) or "frozen" (SIGSTOP: the port
    accepts connections but never answers, so every call waits for the socket timeout)."""
    import stratacache as sc

    server = RedisServer(binary, directory).start()
    logger = logging.getLogger("stratacache")
    handler = _CountingHandler()
    try:
        cache = sc.TieredCache.from_urls("memory://", server.url, namespace="resilience")
        keys = [f"resilience:{i}" for i in range(50)]
        value = wl.generation
        for key in keys[:10]:  # the client is connected and the redis tier has data
            cache.set(key, value)
        assert cache.get(keys[0]) == value
        redis_before = cache.stats()["tiers"][1]
        if mode == "killed":
            server.kill()
        else:
            server.freeze()
        logger.addHandler(handler)
        calls = {"get": 0, "set": 0, "get_many": 0, "set_many": 0}
        raised: dict[str, int] = {}
        hits = 0
        aborted = False
        slowest = 0.0
        start = time.perf_counter()
        for i in range(ops):
            call_start = time.perf_counter()
            key = keys[i % len(keys)]
            op = ("get", "set", "get", "get_many", "get", "set_many")[i % 6]
            calls[op] += 1
            try:
                if op == "get":
                    hits += cache.get(key) is not None
                elif op == "set":
                    cache.set(key, value)
                elif op == "get_many":
                    cache.get_many(keys[i % 45 : i % 45 + 5])
                else:
                    cache.set_many({k: value for k in keys[i % 45 : i % 45 + 3]})
            except Exception as exc:
                name = f"{op}: {type(exc).__name__}"
                raised[name] = raised.get(name, 0) + 1
            slowest = max(slowest, time.perf_counter() - call_start)
            if time.perf_counter() - start > RESILIENCE_ABORT_SECONDS:
                aborted = True
                break
        wall = time.perf_counter() - start
        tier = cache.stats()["tiers"][1]
        cache.close()
    finally:
        logger.removeHandler(handler)
        server.stop()
    warnings_logged = [r for r in handler.records if r.levelno >= logging.WARNING]
    return {
        "mode": mode,
        "ops": sum(calls.values()),
        "calls": calls,
        "aborted": aborted,
        "wall_s": wall,
        "slowest_call_ms": slowest * 1000,
        "exceptions": sum(raised.values()),
        "exceptions_by_op": raised,
        "gets_served": hits,
        "redis_errors": tier["errors"] - redis_before["errors"],
        "redis_skipped": tier["skipped"] - redis_before["skipped"],
        "redis_breaker": tier["breaker"],
        "log_warnings": len(warnings_logged),
        "first_warning": warnings_logged[0].getMessage() if warnings_logged else None,
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def latency_table(rows: list[Row]) -> str:
    body = []
    for r in rows:
        if r.skipped:
            body.append([r.library, r.backend, "-", "-", "-", "-", "-", r.skipped])
            continue
        notes = [r.note]
        if r.hit and r.hit.misses:
            notes.append(f"!! {r.hit.misses} hit-path misses")
        if r.tier_problems:
            notes.append("!! " + ", ".join(r.tier_problems))
        n = f"{r.hit.n if r.hit else 0}/{r.write.n if r.write else 0}"
        body.append(
            [
                r.library,
                r.backend,
                fmt_us(r.hit.p50_us if r.hit else None),
                fmt_us(r.hit.p99_us if r.hit else None),
                fmt_us(r.write.p50_us if r.write else None),
                fmt_us(r.write.p99_us if r.write else None),
                n,
                "; ".join(x for x in notes if x),
            ]
        )
    headers = [
        "library",
        "backend",
        "hit p50",
        "hit p99",
        "write p50",
        "write p99",
        "n hit/wr",
        "notes",
    ]
    return table(headers, body, right={2, 3, 4, 5, 6})


@dataclass
class Ratio:
    label: str
    measured: str
    ratio: str
    target: str
    status: str  # PASS, FAIL, or "" when there is no target


#: (label, ours, theirs, minimum speed-up): "ours" and "theirs" are (row key, "hit"|"write").
COMPARISONS: list[tuple[str, tuple[str, str], tuple[str, str], float | None]] = [
    ("disk hit vs LangChain SQLiteCache lookup", ("sc_disk", "hit"), ("lc_sqlite", "hit"), 10),
    (
        "disk write vs LangChain SQLiteCache update",
        ("sc_disk", "write"),
        ("lc_sqlite", "write"),
        None,
    ),
    ("Redis hit vs LangChain RedisCache lookup", ("sc_redis", "hit"), ("lc_redis", "hit"), None),
    (
        "Redis write vs LangChain RedisCache update",
        ("sc_redis", "write"),
        ("lc_redis", "write"),
        None,
    ),
    ("Redis hit vs LiteLLM RedisCache get", ("sc_redis", "hit"), ("ll_redis", "hit"), None),
    ("Redis write vs LiteLLM RedisCache set", ("sc_redis", "write"), ("ll_redis", "write"), None),
    ("disk hit vs LiteLLM DiskCache get", ("sc_disk", "hit"), ("ll_disk", "hit"), None),
    ("disk write vs LiteLLM DiskCache set", ("sc_disk", "write"), ("ll_disk", "write"), None),
    ("memory hit vs LangChain InMemoryCache", ("sc_memory", "hit"), ("lc_memory", "hit"), None),
    ("memory hit vs LiteLLM InMemoryCache", ("sc_memory", "hit"), ("ll_memory", "hit"), None),
    (
        "memory+disk hit vs LangChain InMemoryCache",
        ("sc_memory_disk", "hit"),
        ("lc_memory", "hit"),
        None,
    ),
    ("memory hit vs raw MemoryTier.get", ("sc_memory", "hit"), ("raw_memory", "hit"), None),
    ("disk hit vs raw DiskTier.get", ("sc_disk", "hit"), ("raw_disk", "hit"), None),
    ("disk write vs raw DiskTier.set", ("sc_disk", "write"), ("raw_disk", "write"), None),
    ("Redis hit vs bare redis-py GET", ("sc_redis", "hit"), ("redis_py", "hit"), None),
    ("Redis write vs bare redis-py SET", ("sc_redis", "write"), ("redis_py", "write"), None),
]
#: (label, ours, maximum median in microseconds).
LIMITS: list[tuple[str, tuple[str, str], float]] = [
    ("disk write", ("sc_disk", "write"), 1000),
    ("Redis hit (one loopback round trip)", ("sc_redis", "hit"), 150),
]


def p50(rows: dict[str, Row], key: str, op: str) -> float | None:
    row = rows.get(key)
    timing = None if row is None else row.hit if op == "hit" else row.write
    return None if timing is None else timing.p50_us


def ratios(rows: dict[str, Row]) -> list[Ratio]:
    out = []
    for label, limit_key, limit in LIMITS:
        ours = p50(rows, *limit_key)
        if ours is None:
            out.append(Ratio(label, "not measured", "", "", ""))
            continue
        status = "PASS" if ours <= limit else "FAIL"
        out.append(Ratio(label, f"{fmt_us(ours)} us", "", f"<= {limit:g} us", status))
    for label, ours_key, theirs_key, min_factor in COMPARISONS:
        ours, theirs = p50(rows, *ours_key), p50(rows, *theirs_key)
        if ours is None or theirs is None:
            out.append(Ratio(label, "not measured", "", "", ""))
            continue
        factor = theirs / ours
        shown = f"{factor:.1f}x faster" if factor >= 1 else f"{1 / factor:.1f}x slower"
        target = status = ""
        if min_factor is not None:
            target = f">= {min_factor:g}x faster"
            status = "PASS" if factor >= min_factor else "FAIL"
        out.append(Ratio(label, f"{fmt_us(ours)} vs {fmt_us(theirs)} us", shown, target, status))
    return out


def ratio_table(items: list[Ratio]) -> str:
    body = [["stratacache " + r.label, r.measured, r.ratio, r.target, r.status] for r in items]
    headers = ["median vs median", "us", "ratio", "target", ""]
    return table(headers, body, right={1, 2})


def environment(redis_binary: str | None) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = (
        "stratacache",
        "langchain-core",
        "langchain-community",
        "litellm",
        "redis",
        "diskcache",
        "SQLAlchemy",
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "packages": {p: version(p) for p in packages},
        "redis_server": redis_server_version(redis_binary) if redis_binary else "not found",
    }


def print_latency(rows: list[Row], raw_rows: list[Row], key_time: Timing, budget: Budget) -> None:
    print("1. Hit and write latency in microseconds (lower is better)")
    print(f"   {budget.hot_keys} pre-stored requests read round-robin; every write is a new key;")
    print("   GC paused while timing; n = samples (hit/write)")
    print()
    print(latency_table(rows))
    print()
    print("   Tier primitives alone (no TieredCache: no codec, policy or stats):")
    print(latency_table(raw_rows))
    print()
    print(
        f"   sc.make_key(...) for the same request: p50 {fmt_us(key_time.p50_us)} us, "
        f"p99 {fmt_us(key_time.p99_us)} us (once per request; not in the rows above)"
    )


def print_imports(imports: dict[str, Any]) -> None:
    print("2. import stratacache (fresh interpreter each time)")
    status = "PASS" if imports["median_ms"] <= 100 else "FAIL"
    print(
        f"   import time: median {imports['median_ms']:.1f} ms over {imports['runs']} runs "
        f"(min {imports['min_ms']:.1f}, max {imports['max_ms']:.1f})   target <= 100 ms   {status}"
    )
    print(
        f"   whole `python -c 'import stratacache'`: {imports['interpreter_with_import_ms']:.0f} ms"
        f" (bare interpreter: {imports['interpreter_bare_ms']:.0f} ms)"
    )
    forbidden = imports["forbidden_loaded"]
    verdict = "PASS" if not forbidden else "FAIL, loaded: " + ", ".join(forbidden)
    print(f"   imports none of {', '.join(FORBIDDEN_IMPORTS)}: {verdict}")
    notable = ", ".join(imports["notable_loaded"]) or "none"
    print(f"   of asyncio, sqlite3, diskcache it loads: {notable}")
    slowest = ", ".join(f"{s['module']} {s['ms']:.1f}" for s in imports["slowest_cumulative"])
    print(f"   slowest imports, cumulative ms (-X importtime): {slowest}")


def print_redis_down(down: list[dict[str, Any]]) -> None:
    print("3. Redis down: TieredCache('memory://', 'redis://<private server>'), mixed calls")
    if not down:
        print("   skipped: redis-server not on PATH")
    for d in down:
        ok = d["wall_s"] <= 5 and d["exceptions"] == 0 and not d["aborted"]
        how = "SIGKILL, connection refused" if d["mode"] == "killed" else "SIGSTOP, no answer"
        print(
            f"   {d['mode']} ({how}): {d['ops']} calls in {d['wall_s']:.2f} s, "
            f"{d['exceptions']} exceptions to the caller{' (ABORTED)' if d['aborted'] else ''}"
            f"   target <= 5 s and 0   {'PASS' if ok else 'FAIL'}"
        )
        calls = ", ".join(f"{k} {v}" for k, v in d["calls"].items())
        print(
            f"      calls: {calls}; gets answered (from memory): {d['gets_served']}; "
            f"slowest call {d['slowest_call_ms']:.0f} ms"
        )
        print(
            f"      redis tier stats: errors {d['redis_errors']}, skipped by breaker "
            f"{d['redis_skipped']}, breaker {d['redis_breaker']}; "
            f"warnings logged {d['log_warnings']}"
        )
        if d["exceptions_by_op"]:
            print(f"      exceptions: {d['exceptions_by_op']}")
        if d["first_warning"]:
            print(f"      first warning: {d['first_warning']}")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Clean up and exit at once. Raising SystemExit instead is not enough: a SIGTERM that
    lands while a peer library is importing can be swallowed there, and the run would go on
    against a half-torn-down setup."""
    for undo in reversed(_ON_SIGTERM):
        with contextlib.suppress(Exception):
            undo()
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (< 60 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    # Ctrl-C unwinds through the ExitStack below; SIGTERM cleans up in its handler.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()

    redis_binary = shutil.which("redis-server")
    env = environment(redis_binary)
    print(f"stratacache core benchmark, {mode} run, {env['date']}")
    print(f"Python {env['python']}, {env['platform']}, {env['cpus']} CPUs ({env['cpu']})")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()))
    print(f"redis-server {env['redis_server']}: private instance on a free loopback port")

    # Measured first, while this process has imported nothing heavy (the probes are
    # subprocesses, but a loaded machine would still skew them).
    imports = measure_import(budget.import_runs)

    tmp = Path(tempfile.mkdtemp(prefix="stratacache-bench-"))
    with contextlib.ExitStack() as closers:
        closers.callback(shutil.rmtree, tmp, ignore_errors=True)
        _ON_SIGTERM.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        server = None
        if redis_binary is not None:
            server = RedisServer(redis_binary, tmp / "redis").start()
            closers.callback(server.stop)
        redis_url = server.url if server else None
        redis_port = server.port if server else None

        write_keys = budget.rounds * (budget.write_warmup + budget.write_iters // budget.rounds)
        wl = Workload(budget.hot_keys + write_keys, budget.hot_keys)
        sizes = {
            "stratacache value (JSON)": len(json.dumps(wl.generation)),
            "LiteLLM value (JSON)": len(json.dumps(wl.model_response)),
            "LangChain prompt": len(wl.prompts[0]),
        }
        print("payload bytes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        print("measuring ...", flush=True)

        import stratacache as sc

        key_samples = Samples()
        measure(
            lambda i: sc.make_key(
                model=MODEL, messages=wl.messages[i], temperature=0, max_tokens=512
            ),
            (i % wl.hot for i in range(budget.hit_warmup)),
            (i % wl.hot for i in range(budget.hit_iters)),
            key_samples,
            seconds=budget.row_seconds,
            min_samples=budget.min_samples,
        )
        key_time = Timing.of(key_samples.ns)
        # Every cache is built before any timing, so heavy imports never land inside a row.
        candidates = [
            *stratacache_subjects(wl, tmp, redis_url, closers),
            *langchain_subjects(wl, tmp, redis_port, closers),
            *litellm_subjects(wl, tmp, redis_port, closers),
        ]
        raw = raw_tier_subjects(wl, tmp, redis_url, closers)
        subjects = [c for c in [*candidates, *raw] if isinstance(c, Subject)]
        measured = {r.key: r for r in run_subjects(subjects, wl, budget)}
        rows = [c if isinstance(c, Row) else measured[c.key] for c in candidates]
        raw_rows = [measured[s.key] for s in raw]
        ratio_list = ratios(measured)

        down = []
        if redis_binary is not None:
            for kind in ("killed", "frozen"):
                directory = tmp / f"redis-{kind}"
                down.append(redis_down(redis_binary, directory, kind, budget.resilience_ops, wl))

    print_latency(rows, raw_rows, key_time, budget)
    print()
    print("   Headline ratios")
    print(ratio_table(ratio_list))
    floor = measured.get("redis_py")
    if floor is not None and floor.hit is not None:
        print(
            f"   (bare redis-py GET here: p50 {fmt_us(floor.hit.p50_us)} us; no Redis-backed"
            " cache can beat one round trip on this machine)"
        )
    print()
    print_imports(imports)
    print()
    print_redis_down(down)
    elapsed = time.perf_counter() - started
    print()
    print(f"total benchmark time {elapsed:.0f} s")
    if args.json:
        results = {
            "environment": env,
            "mode": mode,
            "elapsed_s": elapsed,
            "payload_bytes": sizes,
            "make_key": asdict(key_time),
            "latency": [asdict(r) for r in rows],
            "tier_primitives": [asdict(r) for r in raw_rows],
            "ratios": [asdict(r) for r in ratio_list],
            "import": imports,
            "redis_down": down,
        }
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
