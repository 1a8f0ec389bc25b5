from __future__ import annotations

import os

# Before litellm is imported anywhere: never fetch the cost map from the internet.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import sys

# The suite runs as a plain `pip install 'stratacache[litellm]'` does: without the proxy's
# fastapi, which the dev extra installs only so that test_compat.py can also show litellm with it.
sys.modules["fastapi"] = None  # type: ignore[assignment]

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest

import stratacache as sc
import stratacache.litellm as scl
from stratacache.integrations.litellm.install import CALLBACK_LISTS
from stratacache.testing import OpenAICompatServer


def litellm_state() -> dict[str, Any]:
    """Everything install() may touch, compared by identity."""
    import litellm.caching.caching_handler as handler

    return {
        "cache": id(litellm.cache),
        "hook": id(handler._should_defer_streaming_cache_hit_callbacks),
        **{name: [id(x) for x in getattr(litellm, name)] for name in CALLBACK_LISTS},
    }


@pytest.fixture(autouse=True)
def _litellm_untouched() -> Iterator[None]:
    """Every test leaves litellm's globals exactly as it found them."""
    before = litellm_state()
    yield
    scl.uninstall()
    assert litellm_state() == before


@pytest.fixture
def backend(tiered: sc.TieredCache) -> Iterator[scl.CacheBackend]:
    """A bare backend; constructing one may apply the litellm#42195 patch, undone here."""
    from stratacache.integrations.litellm._compat import revert_hit_patch

    yield scl.CacheBackend(tiered)
    revert_hit_patch()


@pytest.fixture
def installed(tiered: sc.TieredCache) -> Iterator[scl.Installation]:
    yield scl.install(tiered)
    scl.uninstall()


def via(server: OpenAICompatServer, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments that send a litellm call to the loopback server."""
    return {"api_base": server.base_url, "api_key": "test", **kwargs}


#: Warnings litellm 1.106.2 itself triggers (pydantic schema notes, its own deprecations);
#: ours must stay warning-free, so only these are ignored, and only for these tests.
LITELLM_WARNINGS = (
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning",
    "ignore::DeprecationWarning:litellm.*",
    "ignore:Pydantic serializer warnings:UserWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            for spec in LITELLM_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))
