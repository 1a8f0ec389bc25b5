"""install()/uninstall(): idempotent, and litellm's globals restored exactly."""

from __future__ import annotations

from typing import Any

import litellm
from litellm.caching.caching import Cache
from litellm.integrations.custom_logger import CustomLogger

import stratacache as sc
import stratacache.litellm as scl
from tests.litellm.conftest import litellm_state


def test_install_sets_cache_and_callbacks(tiered: sc.TieredCache) -> None:
    before = litellm_state()
    installation = scl.install(tiered, rate_limits={"gpt-4o-mini": {"rpm": 500}})
    assert litellm.cache is installation.cache
    assert isinstance(litellm.cache, scl.LiteLLMCache)
    assert litellm.cache.max_messages is None
    # Stats come from the cache's lookups, not a registered callback (a CustomLogger makes
    # litellm build its logging payload on every call, doubling what a hit costs).
    assert installation.stats not in litellm.callbacks
    assert installation.cache.on_lookup == installation.stats.record_lookup
    assert installation.rate_limit in litellm.callbacks
    assert "cache" in litellm.success_callback
    scl.uninstall()
    assert litellm_state() == before


def test_install_is_idempotent(tiered: sc.TieredCache) -> None:
    before = litellm_state()
    scl.install(tiered)
    second = scl.install(tiered, rate_limits={"*": {"rpm": 100}})
    litellm.completion(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "i"}], mock_response="x"
    )
    assert litellm.cache is second.cache
    assert not any(isinstance(cb, scl.StatsCallback) for cb in litellm.callbacks)
    assert litellm.success_callback.count("cache") == 1
    scl.uninstall()
    scl.uninstall()  # a second uninstall is a no-op
    assert litellm_state() == before


def test_uninstall_restores_a_previous_cache_and_keeps_user_callbacks(
    tiered: sc.TieredCache,
) -> None:
    own = litellm.cache = Cache()  # the user's own litellm cache
    try:
        before = litellm_state()
        scl.install(tiered)
        mine = CustomLogger()
        litellm.callbacks.append(mine)  # added by the user while installed
        litellm.completion(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "u"}], mock_response="x"
        )
        scl.uninstall()
        assert litellm.cache is own
        assert mine in litellm.callbacks
        litellm.callbacks.remove(mine)
        for name in ("input_callback", "success_callback", "failure_callback",
                     "_async_success_callback", "_async_failure_callback"):  # fmt: skip
            lst: list[Any] = getattr(litellm, name)
            while mine in lst:
                lst.remove(mine)
        assert litellm_state() == before
    finally:
        litellm.disable_cache()


def test_cache_backend_plugs_into_a_plain_litellm_cache(backend: scl.CacheBackend) -> None:
    """The documented manual route: litellm's keys, our tiers."""
    try:
        litellm.cache = Cache(_backend=backend)
        msgs = [{"role": "user", "content": "manual"}]
        litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="one")
        hit = litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="two")
        assert hit._hidden_params["cache_hit"] is True
        assert hit.choices[0].message.content == "one"
    finally:
        litellm.disable_cache()
