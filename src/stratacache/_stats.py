"""Counters and latency reservoirs. Cheap to update on the hot path, summarised on demand."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["FRAMEWORK_FIELDS", "GLOBAL_SAVINGS", "Savings", "TierStats", "percentile"]

_RESERVOIR = 2048


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class TierStats:
    """Per-tier counters. Plain ints updated without a lock: under the GIL a lost increment
    is possible but rare, and a lock on every cache hit would cost more than it is worth."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.corrupt = 0
        self.skipped = 0
        self.busy = 0
        self.writes = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.read_latency: deque[float] = deque(maxlen=_RESERVOIR)
        self.write_latency: deque[float] = deque(maxlen=_RESERVOIR)

    def summary(self) -> dict[str, Any]:
        reads, writes = list(self.read_latency), list(self.write_latency)

        def us(value: float | None) -> float | None:
            return None if value is None else round(value * 1e6, 1)

        return {
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "corrupt": self.corrupt,
            "skipped": self.skipped,
            "busy": self.busy,
            "writes": self.writes,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "read_p50_us": us(percentile(reads, 0.5)),
            "read_p99_us": us(percentile(reads, 0.99)),
            "write_p50_us": us(percentile(writes, 0.5)),
            "write_p99_us": us(percentile(writes, 0.99)),
        }


class Savings:
    """Process-wide totals of what cache hits saved, fed by the integrations, in total and per
    framework (``stratacache run`` reports the latter: one line per framework at exit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: called (without the lock) after every change; ``stratacache run`` uses it to keep
        #: its report file current
        self.on_change: Callable[[], None] | None = None
        self.reset()

    def _changed(self) -> None:
        listener = self.on_change
        if listener is not None:
            listener()

    def reset(self) -> None:
        with self._lock:
            self.hits = 0
            self.misses = 0
            self.tokens_saved = 0
            self.cost_saved = 0.0
            self.latency_saved = 0.0
            self.frameworks: dict[str, dict[str, float]] = {}

    def _bucket(self, framework: str) -> dict[str, float]:
        bucket = self.frameworks.get(framework)
        if bucket is None:
            bucket = self.frameworks[framework] = dict.fromkeys(FRAMEWORK_FIELDS, 0)
            bucket["cost_saved_usd"] = 0.0
        return bucket

    def record_hit(
        self, tokens: int = 0, cost: float = 0.0, latency: float = 0.0, framework: str = ""
    ) -> None:
        """An LLM call answered from the cache: one provider call avoided."""
        with self._lock:
            self.hits += 1
            self.tokens_saved += tokens
            self.cost_saved += cost
            self.latency_saved += latency
            if framework:
                bucket = self._bucket(framework)
                bucket["hits"] += 1
                bucket["calls_avoided"] += 1
                bucket["tokens_saved"] += tokens
                bucket["cost_saved_usd"] += cost
        self._changed()

    def record_miss(self, framework: str = "") -> None:
        with self._lock:
            self.misses += 1
            if framework:
                self._bucket(framework)["misses"] += 1
        self._changed()

    def record_embeddings(self, framework: str, hits: int, misses: int) -> None:
        """One embedding request of ``hits + misses`` texts; with no miss, the provider call
        it would have made was avoided."""
        if hits + misses == 0:
            return
        with self._lock:
            bucket = self._bucket(framework)
            bucket["embedding_hits"] += hits
            bucket["embedding_misses"] += misses
            if not misses:
                bucket["calls_avoided"] += 1
        self._changed()

    def by_framework(self) -> dict[str, dict[str, float]]:
        """``{framework: {hits, misses, calls_avoided, tokens_saved, cost_saved_usd,
        embedding_hits, embedding_misses}}`` (LLM hits/misses; embeddings counted in texts)."""
        with self._lock:
            return {name: dict(bucket) for name, bucket in self.frameworks.items()}

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "llm_hits": self.hits,
                "llm_misses": self.misses,
                "tokens_saved": self.tokens_saved,
                "cost_saved_usd": round(self.cost_saved, 6),
                "latency_saved_s": round(self.latency_saved, 3),
            }


#: The per-framework counters of :meth:`Savings.by_framework`, in display order.
FRAMEWORK_FIELDS = (
    "hits",
    "misses",
    "calls_avoided",
    "tokens_saved",
    "cost_saved_usd",
    "embedding_hits",
    "embedding_misses",
)

GLOBAL_SAVINGS = Savings()
