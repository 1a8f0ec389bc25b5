from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import stratacache as sc
from stratacache.testing import OpenAICompatServer


@pytest.fixture
def tiered(tmp_path: Path) -> Iterator[sc.TieredCache]:
    """Memory + disk, private to the test."""
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}")
    yield cache
    cache.close()


@pytest.fixture
def memory_cache() -> Iterator[sc.TieredCache]:
    cache = sc.TieredCache.from_urls("memory://")
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def server_module() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer() as server:
        yield server


@pytest.fixture
def server(server_module: OpenAICompatServer) -> OpenAICompatServer:
    server_module.reset()
    server_module.interrupt_stream_after = None
    return server_module
