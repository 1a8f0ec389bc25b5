"""Completions through litellm with ``mock_response=``: hits, keys, per-call controls."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import litellm
import pytest
from litellm.caching.caching import Cache
from litellm.exceptions import RateLimitError

import stratacache as sc
import stratacache.litellm as scl

MSGS = [{"role": "user", "content": "hello"}]


def ask(content: str = "first", **kwargs: Any) -> Any:
    return litellm.completion(
        **{"model": "gpt-4o-mini", "messages": MSGS, "mock_response": content, **kwargs}
    )


def text(response: Any) -> str:
    return str(response.choices[0].message.content)


def test_second_identical_call_is_a_hit(installed: scl.Installation) -> None:
    first = ask("first")
    second = ask("second")
    assert first._hidden_params.get("cache_hit") is None
    assert second._hidden_params["cache_hit"] is True
    assert text(second) == "first"
    assert installed.cache.backend.stats()["hits"] == 1


async def test_async_hit_and_sync_async_share_entries(installed: scl.Installation) -> None:
    ask("from sync")
    hit = await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="x")
    assert hit._hidden_params["cache_hit"] is True and text(hit) == "from sync"
    other = [{"role": "user", "content": "async first"}]
    await litellm.acompletion(model="gpt-4o-mini", messages=other, mock_response="a1")
    await asyncio.sleep(0.1)  # litellm writes in a background task
    again = await litellm.acompletion(model="gpt-4o-mini", messages=other, mock_response="a2")
    assert again._hidden_params["cache_hit"] is True and text(again) == "a1"


def test_key_does_not_depend_on_kwarg_order(installed: scl.Installation) -> None:
    """litellm#40128: litellm's own key changes with keyword order; ours does not."""
    litellm.completion(model="gpt-4o-mini", messages=MSGS, temperature=0.2, mock_response="a")
    hit = litellm.completion(temperature=0.2, mock_response="b", messages=MSGS, model="gpt-4o-mini")
    assert hit._hidden_params["cache_hit"] is True and text(hit) == "a"
    own = Cache()
    try:
        one = own.get_cache_key(model="m", messages=MSGS, temperature=0.2)
        two = own.get_cache_key(temperature=0.2, messages=MSGS, model="m")
    finally:
        litellm.disable_cache()
    assert one != two  # the upstream bug this works around (fails once litellm fixes it)


def test_answer_changing_params_miss(installed: scl.Installation) -> None:
    ask("t0", temperature=0)
    assert text(ask("t1", temperature=1)) == "t1"
    assert text(ask("seed", temperature=0, seed=7)) == "seed"
    assert text(ask("model", model="gpt-4o")) == "model"
    assert text(ask("again", temperature=0.0)) == "t0"  # 0 and 0.0 are one temperature


def test_long_conversations_are_cached(installed: scl.Installation) -> None:
    """litellm's default max_messages=4 would never cache this 6-message history."""
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(6)
    ]
    ask("long", messages=history)
    assert ask("other", messages=history)._hidden_params["cache_hit"] is True


def test_no_cache_skips_the_read_but_stores(installed: scl.Installation) -> None:
    ask("old")
    fresh = ask("new", cache={"no-cache": True})
    assert fresh._hidden_params.get("cache_hit") is None and text(fresh) == "new"
    assert text(ask("x")) == "new"


def test_no_store_reads_but_never_writes(installed: scl.Installation) -> None:
    ask("kept", cache={"no-store": True})
    assert text(ask("second")) == "second"


def test_per_call_ttl_and_zero_ttl(installed: scl.Installation) -> None:
    ask("zero", cache={"ttl": 0})
    assert text(ask("stored", cache={"ttl": 1})) == "stored"
    assert text(ask("x")) == "stored"
    time.sleep(1.1)
    assert text(ask("expired")) == "expired"


def test_s_maxage_rejects_old_entries(installed: scl.Installation) -> None:
    ask("old")
    time.sleep(0.3)
    assert text(ask("y", cache={"s-maxage": 10})) == "old"
    assert text(ask("fresh", cache={"s-maxage": 0.1})) == "fresh"


def test_namespace_isolates(installed: scl.Installation) -> None:
    ask("a", cache={"namespace": "tenant-a"})
    assert text(ask("b", cache={"namespace": "tenant-b"})) == "b"
    assert text(ask("c", cache={"namespace": "tenant-a"})) == "a"
    assert text(ask("d")) == "d"


def test_install_ttl_is_the_default(tiered: sc.TieredCache) -> None:
    scl.install(tiered, ttl=1)
    ask("short")
    time.sleep(1.1)
    assert text(ask("later")) == "later"


def test_errors_are_not_cached(installed: scl.Installation) -> None:
    with pytest.raises(RateLimitError):
        ask("litellm.RateLimitError")
    assert ask("ok")._hidden_params.get("cache_hit") is None


def test_empty_unfinished_and_error_responses_are_not_stored(backend: scl.CacheBackend) -> None:
    def entry(choice: dict[str, Any]) -> dict[str, Any]:
        return {"timestamp": time.time(), "response": json.dumps({"choices": [choice]})}

    done = {"finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
    backend.set_cache("ok", entry(done))
    backend.set_cache("empty", entry({**done, "message": {"role": "assistant", "content": ""}}))
    backend.set_cache("cut", entry({**done, "finish_reason": None}))
    backend.set_cache("none", {"timestamp": 1.0, "response": json.dumps({"choices": []})})
    backend.set_cache("err", {"timestamp": 1.0, "response": {"error": {"message": "boom"}}})
    backend.set_cache("ttl0", entry(done), ttl=0)
    tool = {"finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [{}]}}
    backend.set_cache("tool", entry(tool))
    found = backend.batch_get_cache(["ok", "empty", "cut", "none", "err", "ttl0", "tool"])
    assert [f is not None for f in found] == [True, False, False, False, False, False, True]
    assert backend.stats()["skipped_writes"] == 4


def test_entries_are_json_not_pickles(installed: scl.Installation) -> None:
    ask("json")
    key = installed.cache.get_cache_key(model="gpt-4o-mini", messages=MSGS)
    entry = installed.cache.backend.cache.get(key)
    assert isinstance(entry, dict) and isinstance(entry["response"], dict)
    assert entry["response"]["choices"][0]["message"]["content"] == "json"
    assert key.startswith("sc1:litellm:")


def test_broken_tier_is_a_miss_not_an_error() -> None:
    broken = sc.TieredCache.from_urls("redis://127.0.0.1:1/0?connect_timeout=0.2&timeout=0.2")
    try:
        scl.install(broken)
        assert text(ask("one")) == "one"
        assert text(ask("two")) == "two"
    finally:
        scl.uninstall()
        broken.close()


def test_unhashable_params_are_served_uncached(installed: scl.Installation) -> None:
    weird = object()
    first = ask("w1", user_data=weird)
    assert text(first) == "w1"
    assert text(ask("w2", user_data=weird)) == "w2"
    assert installed.cache._stats.snapshot()["key_errors"] >= 1


@pytest.mark.redis
def test_redis_tier(redis_url: str) -> None:
    cache = sc.TieredCache.from_urls(redis_url)
    try:
        scl.install(cache)
        ask("from redis")
        hit = ask("x")
        assert hit._hidden_params["cache_hit"] is True and text(hit) == "from redis"
    finally:
        scl.uninstall()
        cache.close()


def test_a_bad_semantic_argument_is_refused() -> None:
    with pytest.raises(sc.ConfigurationError):
        scl.install(semantic="yes")  # type: ignore[arg-type]
    assert scl.current() is None
