"""Prometheus metrics for stratacache, read at scrape time from the counters it already keeps.

::

    import stratacache.metrics

    stratacache.metrics.serve(port=9464)          # http://127.0.0.1:9464/metrics
    # or, with your own registry / web app:
    stratacache.metrics.register(registry)        # adds a StrataCacheCollector (idempotent)

Nothing here runs on the cache's hot path. :class:`StrataCacheCollector` is a custom collector:
on every scrape it reads :func:`stratacache.tiered.live_caches` (per-tier hits, misses, errors,
writes, bytes, latency reservoirs, namespace generations), the process-wide savings of the
framework integrations (``GLOBAL_SAVINGS``), the active LiteLLM installation (only if
``stratacache.integrations.litellm`` was already imported: the collector never imports a
framework), and the objects handed to :func:`track` (adapters, rate limiters, micro-batchers,
semantic caches), which it holds by weak reference.

Counters of a cache or adapter that is garbage-collected are kept (as of the last scrape) so
that the exported totals never go down. See ``docs/metrics.md`` for every exported series.

Requires the ``metrics`` extra: ``pip install 'stratacache[metrics]'``.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from stratacache._stats import GLOBAL_SAVINGS, percentile
from stratacache.errors import missing_extra
from stratacache.tiered import TieredCache, live_caches

try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        SummaryMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("prometheus-client", "metrics") from exc

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

__all__ = [
    "METRICS",
    "MetricsServer",
    "StrataCacheCollector",
    "register",
    "serve",
    "track",
    "untrack",
]

logger = logging.getLogger("stratacache.metrics")
T = TypeVar("T")

_NS: Final = ("namespace",)
_TIER: Final = ("namespace", "tier", "kind")
_LAYER: Final = ("framework", "layer", "adapter")
_LIMITER: Final = ("limiter",)

#: Every exported family: ``name -> (type, labels, help)``. Counter names omit ``_total``
#: (prometheus-client appends it); ``summary`` families expose ``_count`` and ``_sum``.
METRICS: Final[dict[str, tuple[str, tuple[str, ...], str]]] = {
    # -- TieredCache, per namespace ----------------------------------------------------------
    "stratacache_caches": ("gauge", (), "TieredCache objects alive in this process."),
    "stratacache_cache_hits": (
        "counter", _NS,
        "Cache lookups (get/get_many/get_or_set keys) answered by any tier, by the namespace "
        "of the TieredCache (views made by adapters count in their parent's namespace).",
    ),
    "stratacache_cache_misses": (
        "counter", _NS, "Cache lookups that no tier could answer, by the cache's namespace.",
    ),
    "stratacache_cache_generation": (
        "gauge", ("namespace",),
        "Generation of each namespace as last seen by this process; every clear() (in any "
        "process) adds one, so increase() over a window counts invalidations.",
    ),
    "stratacache_cache_clears": (
        "counter", ("namespace",), "clear() calls made by this process, by cleared namespace.",
    ),
    # -- tiers, per cache namespace ----------------------------------------------------------
    "stratacache_tier_hits": ("counter", _TIER, "Reads this tier answered."),
    "stratacache_tier_misses": ("counter", _TIER, "Reads this tier did not have."),
    "stratacache_tier_errors": (
        "counter", _TIER,
        "Calls that raised or timed out (served as a miss, fed to the circuit breaker).",
    ),
    "stratacache_tier_corrupt": (
        "counter", _TIER, "Entries found corrupt or unreadable (deleted, served as a miss).",
    ),
    "stratacache_tier_skipped": (
        "counter", _TIER, "Calls skipped because the tier's circuit breaker was open.",
    ),
    "stratacache_tier_busy": (
        "counter", _TIER,
        "Calls that found the tier's capacity taken past its timeout (a miss, not an error).",
    ),
    "stratacache_tier_writes": ("counter", _TIER, "Entries written to this tier."),
    "stratacache_tier_read_bytes": ("counter", _TIER, "Bytes read from this tier on hits."),
    "stratacache_tier_written_bytes": ("counter", _TIER, "Bytes written to this tier."),
    "stratacache_tier_read_latency_seconds": (
        "gauge", (*_TIER, "quantile"),
        "Read latency quantiles over the last 2048 reads per cache (a sliding reservoir, not a "
        "cumulative histogram).",
    ),
    "stratacache_tier_write_latency_seconds": (
        "gauge", (*_TIER, "quantile"),
        "Write latency quantiles over the last 2048 writes per cache (sliding reservoir).",
    ),
    "stratacache_tier_breaker_open": (
        "gauge", _TIER, "1 while the tier's circuit breaker is open (the tier is skipped).",
    ),
    "stratacache_tier_size_bytes": (
        "gauge", ("tier", "kind"), "Bytes stored in the tier, where it can tell cheaply.",
    ),
    "stratacache_tier_load_events": (
        "counter", ("tier", "kind", "event"),
        "The tier's own contention counters (e.g. Redis pipeline waits), shared by the caches "
        "that use the tier.",
    ),
    # -- what hits saved (framework integrations) --------------------------------------------
    "stratacache_llm_hits": ("counter", (), "LLM calls answered from the cache, all frameworks."),
    "stratacache_llm_misses": ("counter", (), "LLM calls that missed the cache, all frameworks."),
    "stratacache_tokens_saved": ("counter", (), "Tokens the cached answers would have cost."),
    "stratacache_cost_saved_usd": (
        "counter", (), "Provider cost the cached answers saved, in USD (where prices are known).",
    ),
    "stratacache_latency_saved_seconds": (
        "counter", (), "Provider latency the cached answers saved (where it was measured).",
    ),
    "stratacache_framework_llm_hits": ("counter", ("framework",), "LLM cache hits by framework."),
    "stratacache_framework_llm_misses": (
        "counter", ("framework",), "LLM cache misses by framework.",
    ),
    "stratacache_framework_calls_avoided": (
        "counter", ("framework",),
        "Provider calls avoided: LLM hits plus embedding requests answered entirely from cache.",
    ),
    "stratacache_framework_tokens_saved": ("counter", ("framework",), "Tokens saved by framework."),
    "stratacache_framework_cost_saved_usd": (
        "counter", ("framework",), "Cost saved by framework, in USD.",
    ),
    "stratacache_framework_embedding_hits": (
        "counter", ("framework",), "Texts whose embedding came from the cache.",
    ),
    "stratacache_framework_embedding_misses": (
        "counter", ("framework",), "Texts whose embedding had to be computed.",
    ),
    # -- adapters: per layer (exact LLM cache, semantic, embeddings, retriever, kv store) -----
    "stratacache_layer_hits": (
        "counter", _LAYER,
        "Hits by layer of tracked adapters (layer=semantic: answers the semantic layer gave "
        "after an exact miss).",
    ),
    "stratacache_layer_misses": (
        "counter", _LAYER, "Lookups a tracked adapter could not answer from any layer.",
    ),
    "stratacache_layer_events": (
        "counter", (*_LAYER, "event"),
        "Every other adapter counter: bad_entries, skipped_writes, uncacheable, "
        "semantic_skipped reasons, errors...",
    ),
    "stratacache_litellm_model_hits": (
        "counter", ("model",), "LiteLLM cache hits by model (active install()).",
    ),
    "stratacache_litellm_model_misses": ("counter", ("model",), "LiteLLM cache misses by model."),
    "stratacache_litellm_model_tokens_saved": ("counter", ("model",), "Tokens saved by model."),
    "stratacache_litellm_model_cost_saved_usd": (
        "counter", ("model",), "Cost saved by model, in USD.",
    ),
    "stratacache_litellm_model_latency_saved_seconds": (
        "counter", ("model",), "Latency saved by model.",
    ),
    # -- semantic layer ----------------------------------------------------------------------
    "stratacache_semantic_lookups": ("counter", _NS, "Semantic-layer lookups."),
    "stratacache_semantic_hits": ("counter", _NS, "Semantic-layer hits (a guard accepted)."),
    "stratacache_semantic_misses": ("counter", _NS, "Semantic-layer misses (or refusals)."),
    "stratacache_semantic_events": (
        "counter", (*_NS, "event"),
        "Other semantic-layer counters: per-guard decisions, stores, embedding calls, errors.",
    ),
    "stratacache_semantic_entries": ("gauge", _NS, "Entries in the semantic index."),
    "stratacache_semantic_threshold": (
        "gauge", _NS, "Similarity threshold currently in force (learned or configured).",
    ),
    "stratacache_semantic_similarity": (
        "gauge", (*_NS, "quantile"), "Similarity of the best candidate, recent lookups.",
    ),
    # -- rate limiting -----------------------------------------------------------------------
    "stratacache_ratelimit_limit": (
        "gauge", (*_LIMITER, "budget"), "Configured budget per minute (budget=rpm or tpm).",
    ),
    "stratacache_ratelimit_rate_factor": (
        "gauge", _LIMITER, "AIMD multiplier on the configured rates (below 1 after 429s).",
    ),
    "stratacache_ratelimit_degraded": (
        "gauge", _LIMITER, "1 while a Redis-shared limiter limits locally (Redis failed).",
    ),
    "stratacache_ratelimit_paused_seconds": (
        "counter", _LIMITER,
        "Seconds every waiter's schedule was pushed back by 429s and provider pauses.",
    ),
    "stratacache_ratelimit_throttles": (
        "counter", _LIMITER, "429s / throttles recorded by the limiter.",
    ),
    "stratacache_ratelimit_waits": (
        "counter", _LIMITER, "Acquisitions that had to wait for budget.",
    ),
    "stratacache_ratelimit_wait_seconds": (
        "counter", _LIMITER, "Total seconds acquisitions waited for budget.",
    ),
    "stratacache_ratelimit_acquired": (
        "counter", _LIMITER, "Requests let through by a framework rate-limiter wrapper.",
    ),
    "stratacache_ratelimit_tokens_charged": (
        "counter", _LIMITER, "Tokens charged by a framework rate-limiter wrapper.",
    ),
    # -- batching ----------------------------------------------------------------------------
    "stratacache_batch_size": (
        "summary", ("batcher",),
        "Items per call of a tracked MicroBatcher: _count is calls made, _sum items sent.",
    ),
    # -- the collector itself ----------------------------------------------------------------
    "stratacache_metrics_source_errors": (
        "counter", (), "Sources whose stats could not be read during a scrape (logged at DEBUG).",
    ),
}  # fmt: skip

_TIER_COUNTERS: Final = (
    ("hits", "stratacache_tier_hits"),
    ("misses", "stratacache_tier_misses"),
    ("errors", "stratacache_tier_errors"),
    ("corrupt", "stratacache_tier_corrupt"),
    ("skipped", "stratacache_tier_skipped"),
    ("busy", "stratacache_tier_busy"),
    ("writes", "stratacache_tier_writes"),
    ("bytes_read", "stratacache_tier_read_bytes"),
    ("bytes_written", "stratacache_tier_written_bytes"),
)
_FRAMEWORK_COUNTERS: Final = (
    ("hits", "stratacache_framework_llm_hits"),
    ("misses", "stratacache_framework_llm_misses"),
    ("calls_avoided", "stratacache_framework_calls_avoided"),
    ("tokens_saved", "stratacache_framework_tokens_saved"),
    ("cost_saved_usd", "stratacache_framework_cost_saved_usd"),
    ("embedding_hits", "stratacache_framework_embedding_hits"),
    ("embedding_misses", "stratacache_framework_embedding_misses"),
)
_LITELLM_COUNTERS: Final = (
    ("hits", "stratacache_litellm_model_hits"),
    ("misses", "stratacache_litellm_model_misses"),
    ("tokens_saved", "stratacache_litellm_model_tokens_saved"),
    ("cost_saved", "stratacache_litellm_model_cost_saved_usd"),
    ("latency_saved", "stratacache_litellm_model_latency_saved_seconds"),
)
_SEMANTIC_GAUGES: Final = frozenset(
    {"entries", "partitions", "similarity_p50", "similarity_p90", "learned_threshold",
     "verdicts", "error_budget"}
)  # fmt: skip
#: Adapter class (or a base class) -> the layer it caches.
_LAYERS: Final = {
    "LLMCache": "llm",
    "CacheBackend": "llm",
    "LiteLLMCache": "llm",
    "CachedLLM": "llm",
    "LLMCacher": "llm",
    "CachedEmbeddings": "embeddings",
    "CachedEmbedding": "embeddings",
    "EmbeddingCacher": "embeddings",
    "CachedRetriever": "retriever",
    "KVStore": "kvstore",
    "ByteStore": "store",
    "RateLimitCallback": "ratelimit",
}
_QUANTILES: Final = (0.5, 0.9, 0.99)

_Labels = tuple[str, ...]
_Key = tuple[str, _Labels]


# -- tracking -----------------------------------------------------------------------------------

_tracked_lock = threading.Lock()
#: id(obj) -> (weak reference, label name or None)
_TRACKED: dict[int, tuple[weakref.ref[Any], str | None]] = {}


def track(obj: T, name: str | None = None) -> T:
    """Export what ``obj`` counts, for as long as it lives (held by weak reference).

    ``obj`` is a framework adapter (``LLMCache``, ``SemanticLLMCache``, ``CachedEmbeddings``,
    ``CachedRetriever``, LiteLLM ``CacheBackend``, LlamaIndex ``CachedLLM``/``CachedEmbedding``/
    ``CachedRetriever``/``KVStore``), a :class:`~stratacache.ratelimit.RateLimiter` or a
    framework rate-limiter wrapper, a :class:`~stratacache.batching.MicroBatcher`, or a
    ``SemanticCache``. ``name`` becomes its ``adapter``/``limiter``/``batcher`` label (default:
    the class name, the limiter's ``name``, the batched function's name). Returns ``obj``.

    TieredCache objects need no tracking (every live cache is exported), nor does the active
    ``stratacache.litellm.install()``.
    """
    try:
        ref = weakref.ref(obj)
    except TypeError:
        raise TypeError(
            f"stratacache.metrics.track() holds objects weakly; {type(obj).__name__} cannot "
            "be weakly referenced"
        ) from None
    key = id(obj)
    with _tracked_lock:
        _TRACKED[key] = (ref, name)
    weakref.finalize(obj, _forget, key, ref)
    return obj


def untrack(obj: object) -> None:
    """Stop exporting ``obj`` (its counters so far stay in the totals)."""
    with _tracked_lock:
        _TRACKED.pop(id(obj), None)


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    with _tracked_lock:
        entry = _TRACKED.get(key)
        if entry is not None and entry[0] is ref:
            del _TRACKED[key]


def _tracked() -> list[tuple[Any, str | None]]:
    with _tracked_lock:
        entries = list(_TRACKED.values())
    out = []
    for ref, name in entries:
        obj = ref()
        if obj is not None:
            out.append((obj, name))
    return out


# -- the collector ------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _class_of(module: str, name: str) -> type[Any] | None:
    """A class from an already imported module: the collector never imports a framework."""
    mod = sys.modules.get(module)
    found = getattr(mod, name, None) if mod is not None else None
    return found if isinstance(found, type) else None


class _Scrape:
    """What one collect() gathers: counters per source, gauges, latency samples."""

    def __init__(self) -> None:
        #: id(source) -> its counters; None for process-wide sources that never go away
        self.counters: dict[int | None, dict[_Key, float]] = {}
        self.gauges: dict[_Key, float] = {}
        self.samples: dict[_Key, list[float]] = {}
        self.sources: dict[int, object] = {}
        self.seen: set[int] = set()
        self.errors = 0

    def first(self, obj: object) -> bool:
        """True the first time ``obj`` is met in this scrape (deduplicates shared objects)."""
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True

    def count(self, source: object | None, name: str, labels: _Labels, value: Any) -> None:
        number = _num(value)
        if number is None:
            return
        key = None if source is None else id(source)
        if source is not None:
            self.sources[id(source)] = source
        bucket = self.counters.setdefault(key, {})
        bucket[name, labels] = bucket.get((name, labels), 0.0) + number

    def gauge(self, name: str, labels: _Labels, value: Any, how: str = "sum") -> None:
        number = _num(value)
        if number is None:
            return
        old = self.gauges.get((name, labels))
        if old is None:
            self.gauges[name, labels] = number
        elif how == "sum":
            self.gauges[name, labels] = old + number
        elif how == "max":
            self.gauges[name, labels] = max(old, number)
        elif how == "min":
            self.gauges[name, labels] = min(old, number)

    def safely(self, what: object, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(self, *args)
        except Exception as exc:  # one broken source must not fail the whole scrape
            self.errors += 1
            logger.debug("stratacache.metrics: reading %r failed: %r", what, exc)


class StrataCacheCollector(Collector):
    """A ``prometheus_client`` collector that reads stratacache's own counters at scrape time.

    Register it with :func:`register` (idempotent per registry) rather than directly. It keeps
    the last counters it saw of every cache, tier and tracked object; when one is garbage-
    collected, those are folded into a retired total so the exported counters stay monotonic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, dict[_Key, float]] = {}
        self._retired: dict[_Key, float] = {}
        self._watched: set[int] = set()
        #: ids of sources collected since the last scrape; appended by weakref callbacks
        #: (list.append is atomic, so a collection during a scrape cannot deadlock)
        self._dead: list[int] = []
        self._errors = 0

    def describe(self) -> list[Metric]:
        # Names depend on nothing dynamic, but an empty describe() keeps registration from
        # running a full scrape; registries then skip duplicate-name checks for us.
        return []

    def collect(self) -> Iterator[Metric]:
        scrape = _Scrape()
        _gather(scrape)
        with self._lock:
            self._errors += scrape.errors
            self._retire_dead()
            totals = dict(self._retired)
            for key, counters in scrape.counters.items():
                if key is not None:
                    if key not in self._watched:
                        self._watch(scrape.sources[key])
                    if key in self._watched:  # else it cannot be followed: live counts only
                        self._last[key] = counters
                for name_labels, value in counters.items():
                    totals[name_labels] = totals.get(name_labels, 0.0) + value
            # alive but not reported now (untracked, or its stats failed): keep its last counts
            for key, counters in self._last.items():
                if key not in scrape.counters:
                    for name_labels, value in counters.items():
                        totals[name_labels] = totals.get(name_labels, 0.0) + value
            errors = self._errors
        totals["stratacache_metrics_source_errors", ()] = float(errors)
        yield from _families(totals, scrape.gauges, scrape.samples)

    def _watch(self, source: object) -> None:
        key = id(source)
        try:
            weakref.finalize(source, self._dead.append, key)
        except TypeError:  # not weakly referenceable: its counters die with it
            return
        self._watched.add(key)

    def _retire_dead(self) -> None:
        while self._dead:
            key = self._dead.pop()
            self._watched.discard(key)
            for name_labels, value in self._last.pop(key, {}).items():
                self._retired[name_labels] = self._retired.get(name_labels, 0.0) + value


def _gather(scrape: _Scrape) -> None:
    caches = live_caches()
    scrape.gauge("stratacache_caches", (), len(caches))
    for cache in caches:
        scrape.safely(cache, _cache, cache)
    scrape.safely("GLOBAL_SAVINGS", _savings)
    scrape.safely("the LiteLLM installation", _litellm)
    for obj, name in _tracked():
        scrape.safely(obj, _object, obj, name)


def _cache(scrape: _Scrape, cache: TieredCache) -> None:
    stats = cache.stats()
    ns = str(stats["namespace"])
    scrape.count(cache, "stratacache_cache_hits", (ns,), stats["hits"])
    scrape.count(cache, "stratacache_cache_misses", (ns,), stats["misses"])
    for space, (gen, _) in list(cache._gens.items()):
        scrape.gauge("stratacache_cache_generation", (space,), gen, "max")
    clears = getattr(cache, "_clears", None)  # see docs/metrics.md: a proposed hook
    if isinstance(clears, Mapping):
        for space, n in list(clears.items()):
            scrape.count(cache, "stratacache_cache_clears", (str(space),), n)
    health = getattr(cache, "_health", ())
    for i, (tier, row) in enumerate(zip(cache.tiers, stats["tiers"], strict=True)):
        labels = (ns, str(row["name"]), str(row["kind"]))
        for field, metric in _TIER_COUNTERS:
            scrape.count(cache, metric, labels, row.get(field))
        scrape.gauge("stratacache_tier_breaker_open", labels, int(row["breaker"] == "open"), "max")
        reservoirs = health[i].stats if i < len(health) else None
        for what in ("read", "write"):
            name = f"stratacache_tier_{what}_latency_seconds"
            samples = getattr(reservoirs, f"{what}_latency", None)
            if samples is not None:
                scrape.samples.setdefault((name, labels), []).extend(list(samples))
            else:  # no reservoir to merge: report the cache's own quantiles
                for q, field in ((0.5, f"{what}_p50_us"), (0.99, f"{what}_p99_us")):
                    value = _num(row.get(field))
                    if value is not None:
                        scrape.gauge(name, (*labels, str(q)), value / 1e6, "max")
        if scrape.first(tier):
            tier_labels = (str(row["name"]), str(row["kind"]))
            scrape.gauge("stratacache_tier_size_bytes", tier_labels, row.get("size_bytes"))
            for event, n in tier.load_stats().items():
                scrape.count(tier, "stratacache_tier_load_events", (*tier_labels, event), n)


def _savings(scrape: _Scrape) -> None:
    summary = GLOBAL_SAVINGS.summary()
    for field, metric in (
        ("llm_hits", "stratacache_llm_hits"),
        ("llm_misses", "stratacache_llm_misses"),
        ("tokens_saved", "stratacache_tokens_saved"),
        ("cost_saved_usd", "stratacache_cost_saved_usd"),
        ("latency_saved_s", "stratacache_latency_saved_seconds"),
    ):
        scrape.count(None, metric, (), summary.get(field))
    for framework, bucket in GLOBAL_SAVINGS.by_framework().items():
        for field, metric in _FRAMEWORK_COUNTERS:
            scrape.count(None, metric, (framework,), bucket.get(field))


def _litellm(scrape: _Scrape) -> None:
    install = sys.modules.get("stratacache.integrations.litellm.install")
    installation = getattr(install, "current", lambda: None)()
    if installation is None:
        return
    callback = installation.stats
    if scrape.first(callback):
        for model, bucket in callback.stats().items():
            for field, metric in _LITELLM_COUNTERS:
                scrape.count(callback, metric, (str(model),), bucket.get(field))
    for part in (installation.cache, installation.rate_limit, installation.semantic):
        if part is not None:
            _object(scrape, part, None)


def _object(scrape: _Scrape, obj: Any, name: str | None) -> None:
    """Export one tracked or discovered object, by what it is."""
    if not scrape.first(obj) or isinstance(obj, TieredCache):
        return
    limiter_cls = _class_of("stratacache.ratelimit._limiter", "RateLimiter")
    semantic_cls = _class_of("stratacache.semantic._cache", "SemanticCache")
    batcher_cls = _class_of("stratacache.batching._micro", "MicroBatcher")
    if limiter_cls is not None and isinstance(obj, limiter_cls):
        _limiter(scrape, obj, name)
        return
    if semantic_cls is not None and isinstance(obj, semantic_cls):
        _semantic(scrape, obj)
        return
    if batcher_cls is not None and isinstance(obj, batcher_cls):
        label = name or getattr(obj.fn, "__qualname__", None) or type(obj.fn).__name__
        scrape.count(obj, "stratacache_batch_size:count", (label,), obj.batches)
        scrape.count(obj, "stratacache_batch_size:sum", (label,), obj.items)
        if obj.limiter is not None:
            _object(scrape, obj.limiter, None)
        return
    inner = getattr(obj, "limiter", None)
    if limiter_cls is not None and isinstance(inner, limiter_cls):  # a framework wrapper
        label = name or inner.name
        scrape.count(obj, "stratacache_ratelimit_acquired", (label,), getattr(obj, "acquired", 0))
        charged = getattr(obj, "tokens_charged", None)
        scrape.count(obj, "stratacache_ratelimit_tokens_charged", (label,), charged)
        if scrape.first(inner):
            _limiter(scrape, inner, label)
        return
    limiters = getattr(obj, "limiters", None)
    if isinstance(limiters, Mapping):  # LiteLLM's RateLimitCallback
        for limiter in limiters.values():
            _object(scrape, limiter, None)
        own = getattr(obj, "_stats", None)
        if own is not None and hasattr(own, "snapshot"):
            _adapter_counts(scrape, obj, own.snapshot(), name)
        return
    stats = getattr(obj, "stats", None)
    if not callable(stats):
        raise TypeError(f"{type(obj).__name__} has no stats() stratacache.metrics can read")
    snapshot = stats()
    _adapter_counts(scrape, obj, snapshot, name)
    cacher = getattr(obj, "_cacher", None)
    for semantic in (getattr(obj, "semantic", None), getattr(cacher, "semantic", None)):
        if (
            semantic_cls is not None
            and isinstance(semantic, semantic_cls)
            and scrape.first(semantic)
        ):
            _semantic(scrape, semantic)


def _framework_layer(obj: object) -> tuple[str, str]:
    module = type(obj).__module__
    framework = "core"
    for candidate in ("langchain", "litellm", "llamaindex"):
        if f".integrations.{candidate}" in module:
            framework = candidate
    for cls in type(obj).__mro__:
        layer = _LAYERS.get(cls.__name__)
        if layer is not None:
            return framework, layer
    return framework, "other"


def _adapter_counts(
    scrape: _Scrape, obj: object, counts: Mapping[str, Any], name: str | None
) -> None:
    framework, layer = _framework_layer(obj)
    labels = (framework, layer, name or type(obj).__name__)
    for event, value in counts.items():
        if _num(value) is None:
            continue  # nested stats ("cache", "semantic") are exported on their own
        if event == "hits":
            scrape.count(obj, "stratacache_layer_hits", labels, value)
        elif event == "semantic_hits":
            scrape.count(obj, "stratacache_layer_hits", (framework, "semantic", labels[2]), value)
        elif event == "misses":
            scrape.count(obj, "stratacache_layer_misses", labels, value)
        else:
            scrape.count(obj, "stratacache_layer_events", (*labels, event), value)


def _semantic(scrape: _Scrape, semantic: Any) -> None:
    stats = semantic.stats()
    ns = (str(semantic.cache.namespace),)
    for event, value in stats.items():
        if event in _SEMANTIC_GAUGES:
            continue
        if event in ("lookups", "hits", "misses"):
            scrape.count(semantic, f"stratacache_semantic_{event}", ns, value)
        else:
            scrape.count(semantic, "stratacache_semantic_events", (*ns, event), value)
    scrape.gauge("stratacache_semantic_entries", ns, stats.get("entries"))
    scrape.gauge("stratacache_semantic_threshold", ns, stats.get("learned_threshold"), "max")
    for q, field in (("0.5", "similarity_p50"), ("0.9", "similarity_p90")):
        scrape.gauge("stratacache_semantic_similarity", (*ns, q), stats.get(field), "max")


def _limiter(scrape: _Scrape, limiter: Any, name: str | None) -> None:
    label = (name or str(limiter.name),)
    for budget in ("rpm", "tpm"):
        scrape.gauge("stratacache_ratelimit_limit", (*label, budget), getattr(limiter, budget))
    scrape.gauge("stratacache_ratelimit_rate_factor", label, limiter.factor, "min")
    scrape.gauge("stratacache_ratelimit_degraded", label, int(limiter.degraded), "max")
    scrape.count(limiter, "stratacache_ratelimit_paused_seconds", label, limiter._shift_total)
    # Not kept by RateLimiter today (see docs/metrics.md, "hooks"): exported once they exist.
    for attr, metric in (
        ("throttles", "stratacache_ratelimit_throttles"),
        ("waits", "stratacache_ratelimit_waits"),
        ("wait_seconds", "stratacache_ratelimit_wait_seconds"),
    ):
        scrape.count(limiter, metric, label, getattr(limiter, attr, None))


def _families(
    counters: Mapping[_Key, float],
    gauges: Mapping[_Key, float],
    samples: Mapping[_Key, list[float]],
) -> Iterable[Metric]:
    by_name: dict[str, list[tuple[_Labels, float]]] = {}
    for (name, labels), value in (*counters.items(), *gauges.items()):
        by_name.setdefault(name, []).append((labels, value))
    for (name, labels), values in samples.items():
        for q in _QUANTILES:
            found = percentile(values, q)
            if found is not None:
                by_name.setdefault(name, []).append(((*labels, str(q)), found))
    for name, (kind, labelnames, help_text) in METRICS.items():
        family: Metric
        if kind == "summary":
            summary = SummaryMetricFamily(name, help_text, labels=labelnames)
            sums = dict(by_name.get(f"{name}:sum", ()))
            for labels, count in sorted(by_name.get(f"{name}:count", ())):
                summary.add_metric(list(labels), int(count), sums.get(labels, 0.0))
            yield summary
            continue
        if kind == "counter":
            family = CounterMetricFamily(name, help_text, labels=labelnames)
        else:
            family = GaugeMetricFamily(name, help_text, labels=labelnames)
        for labels, value in sorted(by_name.get(name, ())):
            family.add_metric(list(labels), value)
        yield family


# -- registration and serving -------------------------------------------------------------------

_registered_lock = threading.Lock()
_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, StrataCacheCollector] = (
    weakref.WeakKeyDictionary()
)


def register(registry: CollectorRegistry | None = None) -> StrataCacheCollector:
    """Add a :class:`StrataCacheCollector` to ``registry`` (default: prometheus_client's global
    ``REGISTRY``) and return it; calling it again for the same registry returns the same one."""
    target = REGISTRY if registry is None else registry
    with _registered_lock:
        collector = _REGISTERED.get(target)
        if collector is None:
            collector = StrataCacheCollector()
            target.register(collector)
            _REGISTERED[target] = collector
    return collector


class MetricsServer:
    """The HTTP endpoint started by :func:`serve` (a daemon thread)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        address = self.server.server_address[0]
        host = address.decode() if isinstance(address, bytes) else str(address)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def serve(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: the global ``REGISTRY``, with stratacache's collector
    registered) at ``http://addr:port/metrics`` from a daemon thread. ``port=0`` picks a free
    port (see :attr:`MetricsServer.port`). The default address is loopback only: pass
    ``addr="0.0.0.0"`` for a scraper on another host."""
    target = REGISTRY if registry is None else registry
    register(target)
    server, thread = start_http_server(port, addr=addr, registry=target)
    return MetricsServer(server, thread)
