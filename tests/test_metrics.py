"""stratacache.metrics: a scrape-time collector over the counters the library already keeps.

Other tests create caches and feed the process-wide savings too, so every assertion is about
series this test owns (a unique namespace or tracked name) or about deltas it caused.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import stratacache.metrics as metrics
from stratacache import TieredCache
from stratacache._stats import GLOBAL_SAVINGS
from stratacache.errors import DependencyError

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _ns() -> str:
    return "m" + uuid.uuid4().hex[:12]


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics.register(registry)
    return registry


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[TieredCache]:
    cache = TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}", namespace=_ns())
    yield cache
    cache.close()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _tier(registry: CollectorRegistry, cache: TieredCache, name: str, tier: str) -> float:
    return _value(registry, name, namespace=cache.namespace, tier=tier, kind=tier)


def _scrape(url: str) -> Sample:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    out: Sample = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _get(samples: Sample, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- the collector on a registry ------------------------------------------------------------------


def test_tier_and_cache_counters(registry: CollectorRegistry, cache: TieredCache) -> None:
    cache.set("a", {"x": 1})
    cache.set("b", b"bytes")
    assert cache.get("a") == {"x": 1}
    assert cache.get("a") == {"x": 1}
    assert cache.get("missing") is None

    ns = cache.namespace
    assert _value(registry, "stratacache_cache_hits_total", namespace=ns) == 2
    assert _value(registry, "stratacache_cache_misses_total", namespace=ns) == 1
    assert _tier(registry, cache, "stratacache_tier_hits_total", "memory") == 2
    assert _tier(registry, cache, "stratacache_tier_misses_total", "memory") == 1
    assert _tier(registry, cache, "stratacache_tier_misses_total", "disk") == 1
    assert _tier(registry, cache, "stratacache_tier_writes_total", "memory") == 2
    assert _tier(registry, cache, "stratacache_tier_writes_total", "disk") == 2
    assert _tier(registry, cache, "stratacache_tier_written_bytes_total", "disk") > 0
    assert _tier(registry, cache, "stratacache_tier_read_bytes_total", "memory") > 0
    assert _tier(registry, cache, "stratacache_tier_errors_total", "disk") == 0
    assert _tier(registry, cache, "stratacache_tier_breaker_open", "disk") == 0
    assert _value(registry, "stratacache_caches") >= 1

    # latency: quantile gauges in seconds from the tiers' reservoirs
    for q in ("0.5", "0.9", "0.99"):
        read = registry.get_sample_value(
            "stratacache_tier_read_latency_seconds",
            {"namespace": ns, "tier": "memory", "kind": "memory", "quantile": q},
        )
        assert read is not None and 0 < read < 10
    write_p50 = registry.get_sample_value(
        "stratacache_tier_write_latency_seconds",
        {"namespace": ns, "tier": "disk", "kind": "disk", "quantile": "0.5"},
    )
    assert write_p50 is not None and write_p50 > 0

    # a promotion: a disk hit is copied into memory
    memory_writes = _tier(registry, cache, "stratacache_tier_writes_total", "memory")
    cache.tiers[0].clear()
    assert cache.get("b") == b"bytes"
    assert _tier(registry, cache, "stratacache_tier_hits_total", "disk") == 1
    assert _tier(registry, cache, "stratacache_tier_writes_total", "memory") == memory_writes + 1


def test_clear_bumps_the_generation(registry: CollectorRegistry, cache: TieredCache) -> None:
    cache.set("a", 1)
    before = _value(registry, "stratacache_cache_generation", namespace=cache.namespace)
    cache.clear()
    cache.clear()
    after = _value(registry, "stratacache_cache_generation", namespace=cache.namespace)
    assert after == before + 2
    assert cache.get("a") is None


def test_caches_sharing_a_namespace_are_summed(tmp_path: Path, registry: CollectorRegistry) -> None:
    ns = _ns()
    one = TieredCache.from_urls("memory://", namespace=ns)
    two = TieredCache.from_urls("memory://", namespace=ns)
    try:
        one.set("k", 1)
        two.set("k", 2)
        one.get("k")
        two.get("k")
        two.get("k")
        # one series per label set: the exposition would be rejected otherwise
        families = {f.name: f for f in registry.collect()}
        hits = [
            s for s in families["stratacache_tier_hits"].samples if s.labels.get("namespace") == ns
        ]
        assert len(hits) == 1
        assert hits[0].value == 3
    finally:
        one.close()
        two.close()


def test_counters_survive_garbage_collection(registry: CollectorRegistry) -> None:
    ns = _ns()
    cache = TieredCache.from_urls("memory://", namespace=ns)
    cache.set("k", 1)
    cache.get("k")
    cache.get("k")
    assert _value(registry, "stratacache_cache_hits_total", namespace=ns) == 2
    cache.close()
    del cache
    gc.collect()
    # the cache is gone, its counts (as of the last scrape) are not
    assert _value(registry, "stratacache_cache_hits_total", namespace=ns) == 2

    again = TieredCache.from_urls("memory://", namespace=ns)
    again.set("k", 1)
    again.get("k")
    assert _value(registry, "stratacache_cache_hits_total", namespace=ns) == 3
    again.close()


def test_register_is_idempotent() -> None:
    registry = CollectorRegistry()
    first = metrics.register(registry)
    assert metrics.register(registry) is first
    assert isinstance(first, metrics.StrataCacheCollector)
    # a second registration would make every family appear twice per scrape
    names = [f.name for f in registry.collect()]
    assert names.count("stratacache_cache_hits") == 1
    assert metrics.register(CollectorRegistry()) is not first


def test_savings_per_framework(registry: CollectorRegistry) -> None:
    before = {
        name: _value(registry, name, framework="unit")
        for name in (
            "stratacache_framework_llm_hits_total",
            "stratacache_framework_tokens_saved_total",
            "stratacache_framework_cost_saved_usd_total",
            "stratacache_framework_embedding_hits_total",
            "stratacache_framework_calls_avoided_total",
        )
    }
    total_tokens = _value(registry, "stratacache_tokens_saved_total")
    GLOBAL_SAVINGS.record_hit(tokens=40, cost=0.25, framework="unit")
    GLOBAL_SAVINGS.record_embeddings("unit", hits=3, misses=0)

    def delta(name: str) -> float:
        return _value(registry, name, framework="unit") - before[name]

    assert delta("stratacache_framework_llm_hits_total") == 1
    assert delta("stratacache_framework_tokens_saved_total") == 40
    assert delta("stratacache_framework_cost_saved_usd_total") == pytest.approx(0.25)
    assert delta("stratacache_framework_embedding_hits_total") == 3
    assert delta("stratacache_framework_calls_avoided_total") == 2
    assert _value(registry, "stratacache_tokens_saved_total") == total_tokens + 40


def test_rate_limiter_and_batcher_are_tracked(registry: CollectorRegistry) -> None:
    from stratacache.batching import MicroBatcher
    from stratacache.ratelimit import RateLimiter

    name = _ns()
    limiter = metrics.track(RateLimiter(rpm=6000, tpm=100_000, name="x"), name=name)
    assert _value(registry, "stratacache_ratelimit_limit", limiter=name, budget="rpm") == 6000
    assert _value(registry, "stratacache_ratelimit_limit", limiter=name, budget="tpm") == 100_000
    assert _value(registry, "stratacache_ratelimit_rate_factor", limiter=name) == 1.0
    limiter.record_throttle(retry_after=0.0)  # a 429 naming no wait halves the rate
    assert _value(registry, "stratacache_ratelimit_rate_factor", limiter=name) == 0.5
    limiter.record_throttle(retry_after=0.05)
    assert _value(registry, "stratacache_ratelimit_paused_seconds_total", limiter=name) > 0

    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [i * 2 for i in items])
    metrics.track(batcher, name=name)
    assert batcher.call(3) == 6
    assert batcher.call(4) == 8
    assert _value(registry, "stratacache_batch_size_count", batcher=name) == batcher.batches
    assert _value(registry, "stratacache_batch_size_sum", batcher=name) == 2

    metrics.untrack(limiter)
    paused = _value(registry, "stratacache_ratelimit_paused_seconds_total", limiter=name)
    assert paused > 0  # an untracked object's counts so far stay in the totals
    assert registry.get_sample_value("stratacache_ratelimit_rate_factor", {"limiter": name}) is None


def test_track_holds_objects_weakly(registry: CollectorRegistry) -> None:
    from stratacache.ratelimit import RateLimiter

    name = _ns()
    limiter = metrics.track(RateLimiter(rpm=60, name="weak"), name=name)
    assert _value(registry, "stratacache_ratelimit_limit", limiter=name, budget="rpm") == 60
    del limiter
    gc.collect()
    assert (
        registry.get_sample_value("stratacache_ratelimit_limit", {"limiter": name, "budget": "rpm"})
        is None
    )
    with pytest.raises(TypeError, match="weakly"):
        metrics.track(3)


def test_a_broken_source_does_not_fail_the_scrape(registry: CollectorRegistry) -> None:
    class Broken:
        def stats(self) -> dict[str, int]:
            raise RuntimeError("boom")

    broken = metrics.track(Broken())
    before = _value(registry, "stratacache_metrics_source_errors_total")
    assert _value(registry, "stratacache_metrics_source_errors_total") == before + 1
    metrics.untrack(broken)


def test_langchain_llm_cache_hits_show_per_framework_and_layer(
    registry: CollectorRegistry, cache: TieredCache
) -> None:
    from langchain_core.language_models import FakeListChatModel

    from stratacache.langchain import LLMCache

    name = _ns()
    llm_cache = metrics.track(LLMCache(cache), name=name)
    hits = _value(registry, "stratacache_framework_llm_hits_total", framework="langchain")
    misses = _value(registry, "stratacache_framework_llm_misses_total", framework="langchain")
    avoided = _value(registry, "stratacache_framework_calls_avoided_total", framework="langchain")

    model = FakeListChatModel(responses=["first", "second"], cache=llm_cache)
    assert model.invoke("hello").content == "first"
    assert model.invoke("hello").content == "first"  # answered by the cache

    def now(metric: str) -> float:
        return _value(registry, metric, framework="langchain")

    assert now("stratacache_framework_llm_hits_total") == hits + 1
    assert now("stratacache_framework_llm_misses_total") == misses + 1
    assert now("stratacache_framework_calls_avoided_total") == avoided + 1
    layer = {"framework": "langchain", "layer": "llm", "adapter": name}
    assert _value(registry, "stratacache_layer_hits_total", **layer) == 1
    assert _value(registry, "stratacache_layer_misses_total", **layer) == 1
    # the adapter's entries live in a view of `cache`: counted under the cache's namespace
    assert _tier(registry, cache, "stratacache_tier_hits_total", "memory") == 1


# -- the HTTP endpoint ---------------------------------------------------------------------------


def test_serve_and_scrape_the_real_endpoint(cache: TieredCache) -> None:
    registry = CollectorRegistry()
    server = metrics.serve(port=0, registry=registry)
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        assert metrics.register(registry) is metrics.register(registry)  # serve registered it
        ns = cache.namespace
        tier = {"namespace": ns, "tier": "memory", "kind": "memory"}

        before = _scrape(server.url)
        cache.set("k", "v")
        for _ in range(5):
            assert cache.get("k") == "v"
        cache.get("nope")
        cache.clear()
        GLOBAL_SAVINGS.record_hit(tokens=7, cost=0.5, framework="scrape")
        after = _scrape(server.url)

        def delta(name: str, **labels: str) -> float:
            return _get(after, name, **labels) - _get(before, name, **labels)

        assert delta("stratacache_cache_hits_total", namespace=ns) == 5
        assert delta("stratacache_cache_misses_total", namespace=ns) == 1
        assert delta("stratacache_tier_hits_total", **tier) == 5
        assert delta("stratacache_tier_writes_total", **tier) == 1
        assert delta("stratacache_cache_generation", namespace=ns) == 1
        assert delta("stratacache_framework_llm_hits_total", framework="scrape") == 1
        assert delta("stratacache_framework_tokens_saved_total", framework="scrape") == 7
        assert delta("stratacache_framework_cost_saved_usd_total", framework="scrape") == 0.5
        assert delta("stratacache_llm_hits_total") >= 1
        assert _get(after, "stratacache_tier_read_latency_seconds", **tier, quantile="0.99") > 0
    finally:
        server.close()


# -- imports -------------------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_stratacache_does_not_import_prometheus_client() -> None:
    result = _run(
        "import sys, stratacache\n"
        "stratacache.TieredCache.from_urls('memory://').set('k', 1)\n"
        "stratacache.stats()\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client was imported'\n"
        "assert 'stratacache.metrics' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


def test_missing_extra_is_a_dependency_error() -> None:
    result = _run(
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if not installed\n"
        "from stratacache.errors import DependencyError\n"
        "try:\n"
        "    import stratacache.metrics\n"
        "except DependencyError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no DependencyError')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'stratacache[metrics]'" in result.stdout
    assert issubclass(DependencyError, ImportError)


def test_shared_tier_load_stats_are_counted_once(registry: CollectorRegistry) -> None:
    from stratacache.tiers.memory import MemoryTier

    name = _ns()

    class Contended(MemoryTier):
        def load_stats(self) -> dict[str, int]:
            return {"waits": 3, "pipelines": 2}

    shared = Contended(1024**2, name=name)
    one = TieredCache([shared], namespace=_ns())
    two = TieredCache([shared], namespace=_ns())
    labels = {"tier": name, "kind": "memory"}
    assert _value(registry, "stratacache_tier_load_events_total", **labels, event="waits") == 3
    assert _value(registry, "stratacache_tier_load_events_total", **labels, event="pipelines") == 2
    one.set("k", "v")
    assert _value(registry, "stratacache_tier_size_bytes", **labels) > 0
    # per-cache counters stay per namespace
    assert _value(registry, "stratacache_tier_writes_total", namespace=one.namespace, **labels) == 1
    assert _value(registry, "stratacache_tier_writes_total", namespace=two.namespace, **labels) == 0


def test_limiter_waits_and_429s_are_counted(registry: CollectorRegistry) -> None:
    from stratacache.ratelimit import RateLimiter

    name = _ns()
    limiter = metrics.track(RateLimiter(rpm=600, burst=0.1), name=name)  # 1 per 0.1 s
    assert _value(registry, "stratacache_ratelimit_waits_total", limiter=name) == 0
    for _ in range(3):  # the bucket holds one: the second and third wait
        with limiter.acquire():
            pass
    limiter.record_throttle(retry_after=0.01)
    assert _value(registry, "stratacache_ratelimit_waits_total", limiter=name) == 2
    assert _value(registry, "stratacache_ratelimit_wait_seconds_total", limiter=name) > 0
    assert _value(registry, "stratacache_ratelimit_throttles_total", limiter=name) == 1


def test_langchain_embeddings_layer(registry: CollectorRegistry, cache: TieredCache) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from stratacache.langchain import CachedEmbeddings

    name = _ns()
    embeddings = metrics.track(
        CachedEmbeddings(DeterministicFakeEmbedding(size=8), cache=cache), name=name
    )
    embeddings.embed_documents(["a", "b"])
    embeddings.embed_documents(["a", "c"])
    layer = {"framework": "langchain", "layer": "embeddings", "adapter": name}
    assert _value(registry, "stratacache_layer_hits_total", **layer) == 1
    assert _value(registry, "stratacache_layer_misses_total", **layer) == 3
