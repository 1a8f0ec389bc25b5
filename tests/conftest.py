from __future__ import annotations

import os

# Before anything imports litellm: its cost map comes from the wheel, never from the internet.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

import stratacache as sc
from tests.redis_procs import RedisClusterProcesses, RedisProcess

if TYPE_CHECKING:
    from stratacache.testing import OpenAICompatServer

# A 2-core CI box shared with redis-server processes: wall-clock health checks only add noise.
settings.register_profile(
    "stratacache", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("stratacache")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private redis-server for the whole session (never the machine's 6379)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> Iterator[str]:
    """The session server, emptied before each test (it is ours alone, so FLUSHALL is safe)."""
    import redis

    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server this test may kill and restart."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterProcesses) -> str:
    import redis

    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    return redis_cluster.url


@pytest.fixture
def tiered(tmp_path: Path) -> Iterator[sc.TieredCache]:
    """Memory + disk, private to the test."""
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}")
    yield cache
    cache.close()


@pytest.fixture
def shared_redis_caches(redis_url: str) -> Iterator[tuple[sc.TieredCache, sc.TieredCache]]:
    """Two processes' worth of tiers: a private memory tier each, one Redis between them."""
    # A short generation_refresh: another process learns of a clear() that much later.
    one = sc.TieredCache.from_urls("memory://", redis_url, generation_refresh=0.1)
    two = sc.TieredCache.from_urls("memory://", redis_url, generation_refresh=0.1)
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def memory_cache() -> Iterator[sc.TieredCache]:
    cache = sc.TieredCache.from_urls("memory://")
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def server_module() -> Iterator[OpenAICompatServer]:
    """One loopback OpenAI-compatible provider per test module (the integrations' upstream)."""
    from stratacache.testing import OpenAICompatServer

    with OpenAICompatServer() as server:
        yield server


@pytest.fixture
def server(server_module: OpenAICompatServer) -> OpenAICompatServer:
    """The module's provider with counters, limits and injected faults reset."""
    server_module.reset()
    server_module.interrupt_stream_after = None
    server_module.rpm = None
    server_module.tpm = None
    return server_module
