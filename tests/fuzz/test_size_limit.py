"""``max_value_bytes``: a clear error for a writer, the value itself for ``get_or_set`` and the
framework adapters, a miss for a reader; never a partial value, never a crash."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.codec import encode
from stratacache.tiers.base import MISS
from stratacache.tiers.disk import DiskTier
from stratacache.tiers.memory import MemoryTier

LIMIT = 10_000


@pytest.fixture
def small(tmp_path: Path) -> Iterator[sc.TieredCache]:
    cache = sc.TieredCache(
        [MemoryTier(), DiskTier(tmp_path / "disk")], namespace="app", max_value_bytes=LIMIT
    )
    yield cache
    cache.close()


def test_the_default_limit_is_documented_and_sizes_parse() -> None:
    from stratacache.tiered import DEFAULT_MAX_VALUE_BYTES

    assert sc.TieredCache([MemoryTier()]).max_value_bytes == DEFAULT_MAX_VALUE_BYTES == 64 * 2**20
    assert sc.TieredCache([MemoryTier()], max_value_bytes="16MB").max_value_bytes == 16_000_000
    assert sc.TieredCache.from_urls("memory://", max_value_bytes=4096).max_value_bytes == 4096


@pytest.mark.parametrize("bad", [0, -1, 1.5, "lots", "-3MB", True, None, 2**64, [1]])
def test_an_unusable_limit_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(sc.ConfigurationError, match="max_value_bytes"):
        sc.TieredCache([MemoryTier()], max_value_bytes=bad)


def test_a_value_over_the_limit_is_a_clear_error_for_the_writer(small: sc.TieredCache) -> None:
    small.set("k", "old")
    with pytest.raises(sc.ValueTooLargeError, match="max_value_bytes") as raised:
        small.set("k", "x" * LIMIT)  # its JSON text has two more bytes: the quotes
    assert isinstance(raised.value, sc.SerializationError)
    assert isinstance(raised.value, sc.StrataCacheError)
    assert (raised.value.size, raised.value.limit) == (LIMIT + 2, LIMIT)
    assert small.get("k") == "old"  # nothing was written: the old entry is whole and stays
    small.set("k", b"x" * LIMIT)  # exactly at the limit: stored
    assert small.get("k") == b"x" * LIMIT
    assert small.stats()["too_large"] == 1


def test_the_limit_is_on_the_serialized_size_not_the_compressed_one(
    small: sc.TieredCache,
) -> None:
    """What a reader must hold in memory is the inflated value, whatever zlib makes of it."""
    with pytest.raises(sc.ValueTooLargeError):
        small.set("zeros", bytes(LIMIT * 10))
    assert small.get("zeros", MISS) is MISS


def test_set_many_and_add_are_all_or_nothing(small: sc.TieredCache) -> None:
    with pytest.raises(sc.ValueTooLargeError):
        small.set_many({"a": 1, "big": "x" * LIMIT, "c": 3})
    assert small.get_many(["a", "big", "c"]) == {}
    with pytest.raises(sc.ValueTooLargeError):
        small.add("big", "x" * LIMIT)
    assert small.get("big", MISS) is MISS


def test_get_or_set_returns_an_oversized_value_uncached_and_says_so_once(
    small: sc.TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    big = {"text": "x" * LIMIT}
    with caplog.at_level(logging.DEBUG, logger="stratacache"):
        assert small.get_or_set("k", lambda: big) is big
        assert small.get_or_set("k", lambda: big) is big
    assert small.get("k", MISS) is MISS
    assert small.stats()["too_large"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "max_value_bytes" in warnings[0].getMessage()


async def test_the_async_twins_behave_the_same(small: sc.TieredCache) -> None:
    with pytest.raises(sc.ValueTooLargeError):
        await small.aset("k", "x" * LIMIT)
    with pytest.raises(sc.ValueTooLargeError):
        await small.aset_many({"k": "x" * LIMIT})

    async def compute() -> str:
        return "y" * LIMIT

    assert await small.aget_or_set("k", compute) == "y" * LIMIT
    assert await small.aget("k", MISS) is MISS


def test_a_reader_with_a_lower_limit_sees_a_miss(tmp_path: Path) -> None:
    """Readers apply their own limit: an entry another process stored under a higher one (or
    planted in a shared tier) is a miss for them, never a value they cannot afford."""
    writer = sc.TieredCache([DiskTier(tmp_path / "d")], max_value_bytes=LIMIT * 10)
    reader = sc.TieredCache([DiskTier(tmp_path / "d")], max_value_bytes=LIMIT)
    try:
        writer.set("k", b"x" * (LIMIT * 5))
        assert reader.get("k", MISS) is MISS
        assert reader.stats()["tiers"][0]["corrupt"] == 1
        assert reader.get_or_set("k", lambda: b"small") == b"small"
    finally:
        writer.close()
        reader.close()


def test_a_planted_zlib_bomb_is_a_miss(small: sc.TieredCache) -> None:
    pk = small._drive(small._pkey("k"))
    bomb = encode(bytes(LIMIT * 1000))  # written by a codec without our limit
    small.tiers[1].set(pk, bomb, None)
    assert small.get("k", MISS) is MISS
    assert small.stats()["tiers"][1]["corrupt"] == 1


def test_an_oversized_write_never_reaches_redis(redis_url: str) -> None:
    import redis

    cache = sc.TieredCache.from_urls("memory://", redis_url, max_value_bytes=LIMIT)
    client = redis.Redis.from_url(redis_url)
    try:
        cache.set("seed", 1)  # registers the namespace: what is in Redis now is the baseline
        before = client.dbsize()
        with pytest.raises(sc.ValueTooLargeError):
            cache.set("big", "x" * LIMIT)
        assert cache.get_or_set("big", lambda: "x" * LIMIT) == "x" * LIMIT
        assert client.dbsize() == before
        assert cache.get("big", MISS) is MISS
    finally:
        client.close()
        cache.close()


# -- the framework adapters: the user's chain never fails because an answer did not fit ------


def test_langchain_llm_cache_serves_an_oversized_answer_uncached(small: sc.TieredCache) -> None:
    from langchain_core.language_models import FakeListChatModel

    from stratacache.langchain import LLMCache

    llm_cache = LLMCache(small)
    model = FakeListChatModel(responses=["x" * LIMIT, "second"], cache=llm_cache)
    assert model.invoke("hi").content == "x" * LIMIT
    assert model.invoke("hi").content == "second"  # nothing was cached: the model answered
    assert llm_cache.cache.stats()["too_large"] == 1


def test_litellm_serves_an_oversized_answer_uncached(small: sc.TieredCache) -> None:
    import litellm

    import stratacache.litellm as scl

    installed = scl.install(small)
    try:
        msgs = [{"role": "user", "content": "hi"}]
        first = litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="x" * LIMIT)
        second = litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="second")
        assert first.choices[0].message.content == "x" * LIMIT
        assert second.choices[0].message.content == "second"
        assert second._hidden_params.get("cache_hit") is not True
        assert installed.cache.backend.cache.stats()["too_large"] >= 1
    finally:
        scl.uninstall()


def test_llamaindex_serves_an_oversized_answer_uncached(small: sc.TieredCache) -> None:
    from llama_index.core.llms import MockLLM

    from stratacache.llamaindex import CachedLLM

    llm = CachedLLM(MockLLM(), cache=small)
    prompt = "x" * LIMIT  # MockLLM echoes the prompt: an answer over the limit
    assert llm.complete(prompt).text == prompt
    assert llm.complete(prompt).text == prompt
    assert llm.stats().get("hits", 0) == 0
    assert llm._cacher.cache.stats()["too_large"] == 2
