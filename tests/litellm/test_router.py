"""Router writes to litellm.cache but reads it only with cache_responses=True."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm.router import Router

import stratacache.litellm as scl
from stratacache.integrations.litellm.install import CALLBACK_LISTS
from stratacache.testing import OpenAICompatServer

MSGS: Any = [{"role": "user", "content": "route me"}]


@pytest.fixture(autouse=True)
def _forget_router_callbacks() -> Iterator[None]:
    """A Router registers its own loggers in litellm's global lists; take them out again."""
    saved: dict[str, list[Any]] = {name: list(getattr(litellm, name)) for name in CALLBACK_LISTS}
    yield
    for name, items in saved.items():
        lst = getattr(litellm, name)
        lst[:] = [x for x in lst if any(x is y for y in items) or isinstance(x, scl.StatsCallback)]


def _router(server: OpenAICompatServer, cache_responses: bool) -> Router:
    return Router(
        model_list=[
            {
                "model_name": "chat",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": server.base_url,
                    "api_key": "test",
                },
            }
        ],
        cache_responses=cache_responses,
    )


def test_router_without_cache_responses_never_reads(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    router = _router(server, cache_responses=False)
    router.completion(model="chat", messages=MSGS)
    second = router.completion(model="chat", messages=MSGS)
    assert second._hidden_params.get("cache_hit") is not True
    assert server.stats.requests["chat"] == 2


def test_router_with_cache_responses_hits(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    router = _router(server, cache_responses=True)
    assert litellm.cache is installed.cache  # the Router keeps an existing litellm.cache
    router.completion(model="chat", messages=MSGS)
    second = router.completion(model="chat", messages=MSGS)
    assert second._hidden_params["cache_hit"] is True
    assert server.stats.requests["chat"] == 1


async def test_router_async_hits(installed: scl.Installation, server: OpenAICompatServer) -> None:
    import asyncio

    router = _router(server, cache_responses=True)
    await router.acompletion(model="chat", messages=MSGS)
    await asyncio.sleep(0.1)
    second = await router.acompletion(model="chat", messages=MSGS)
    assert second._hidden_params["cache_hit"] is True
    assert server.stats.requests["chat"] == 1
