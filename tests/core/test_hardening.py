"""Defects found in review of the core, each reproduced against real tiers."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.errors import CacheClosedError
from stratacache.integrations._shared import kind_namespace
from stratacache.tiers import DiskTier, MemoryTier, Miss, RedisTier
from tests.redis_procs import client_count

SURROGATE_KEY = "user-\udcff-input"  # what os.fsdecode gives for an undecodable file name


# -- keys any str can be ----------------------------------------------------------------------


@pytest.mark.redis
def test_a_lone_surrogate_key_works_and_never_opens_a_breaker(
    tmp_path: Path, redis_url: str
) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}", redis_url)
    cache.set("valid", "ok")
    for i in range(5):
        cache.set(SURROGATE_KEY, i)
        assert cache.get(SURROGATE_KEY) == i
    # Only the shared tiers can show it: in a fresh cache the memory tier is empty.
    fresh = sc.TieredCache.from_urls(f"disk://{tmp_path / 'disk'}", redis_url)
    assert fresh.get(SURROGATE_KEY) == 4
    assert fresh.get_many([SURROGATE_KEY, "valid"]) == {SURROGATE_KEY: 4, "valid": "ok"}
    assert fresh.get_or_set("user-\udc80", lambda: "computed") == "computed"
    for tier in cache.stats()["tiers"] + fresh.stats()["tiers"]:
        assert tier["breaker"] == "closed"
        assert tier["errors"] == 0
    assert fresh.get("valid") == "ok"
    # Distinct surrogate keys stay distinct.
    cache.set("user-\udc80-input", "other")
    assert cache.get(SURROGATE_KEY) == 4
    cache.close()
    fresh.close()


def test_keys_with_nul_and_surrogates_round_trip_on_disk(tmp_path: Path) -> None:
    cache = sc.TieredCache([DiskTier(tmp_path / "disk")])
    keys = ["a\x00b", "a\x00c", "\ud800", "\udfff", "\ud83d\ude00", "😀"]
    for i, key in enumerate(keys):
        cache.set(key, i)
    assert [cache.get(k) for k in keys] == list(range(len(keys)))
    assert cache.stats()["tiers"][0]["errors"] == 0
    cache.close()


class PickyTier(MemoryTier):
    """A third-party tier whose backend cannot encode some keys."""

    def get(self, key: str) -> bytes | Miss:
        if "picky" in key:
            raise UnicodeEncodeError("ascii", key, 0, 1, "cannot encode")
        return super().get(key)


def test_a_key_the_backend_cannot_encode_never_opens_the_breaker() -> None:
    cache = sc.TieredCache([PickyTier()], breaker_threshold=3)
    cache.set("valid", 1)
    for _ in range(5):
        assert cache.get("picky") is None
    tier = cache.stats()["tiers"][0]
    assert tier["errors"] == 5
    assert tier["breaker"] == "closed"
    assert cache.get("valid") == 1


# -- Redis clear only touches its own keys ----------------------------------------------------


@pytest.mark.redis
def test_redis_tier_clear_keeps_keys_that_only_start_with_sc(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    foreign = {b"scores:alice": b"10", b"sc": b"x", b"scmetadata": b"y", b"scx:1": b"z"}
    client.mset(foreign)
    cache = sc.TieredCache.from_urls(redis_url, namespace="app")
    cache.set("k", 1)
    cache.tiers[0].clear()
    assert cache.get("k") is None
    assert {k: client.get(k) for k in foreign} == foreign
    assert client.dbsize() == len(foreign)
    client.close()
    cache.close()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 1e300, 10**400, "99999999999d"])
def test_unusable_ttls_are_configuration_errors(ttl: Any) -> None:
    with pytest.raises(sc.ConfigurationError, match="ttl"):
        sc.TieredCache([MemoryTier()], ttl=ttl)
    with pytest.raises(sc.ConfigurationError):
        MemoryTier(ttl=ttl)
    cache = sc.TieredCache([MemoryTier()])
    with pytest.raises(sc.ConfigurationError):
        cache.set("k", 1, ttl=ttl)


@pytest.mark.parametrize(
    "option",
    [
        {"lock_timeout": float("inf")},
        {"generation_refresh": float("nan")},
        {"breaker_backoff": float("inf")},
    ],
)
def test_unusable_timings_are_configuration_errors(option: dict[str, Any]) -> None:
    with pytest.raises(sc.ConfigurationError):
        sc.TieredCache([MemoryTier()], **option)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:99999/0",
        "redis://localhost:0/0",
        "redis://localhost:port/0",
        "redis://localhost:6379/notadb",
        "redis://localhost:6379/0/1",
        "redis+cluster://a:1,b:70000",
        "redis+cluster://a:1,b:2/3",
        "redis://[::1",
        "redis+cluster://[::1",
        "memory://?max_bytes=" + "9" * 400 + "GB",
        "memory://?max_bytes=" + "9" * 30,
        "disk:///tmp/x?max_bytes=" + "9" * 30,
        "memory://?ttl=" + "9" * 400,
    ],
)
def test_bad_addresses_and_sizes_are_configuration_errors(url: str) -> None:
    with pytest.raises(sc.ConfigurationError):
        sc.TieredCache.from_urls(url)


def test_huge_max_bytes_given_directly_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(sc.ConfigurationError):
        DiskTier(tmp_path / "d", 10**30)
    with pytest.raises(sc.ConfigurationError):
        MemoryTier(10**30)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2secret@[::1",
        "redis://:hunter2secret@localhost:99999/0",
        "redis://:hunter2secret@localhost:6379/notadb",
        "redis://:hunter2secret@localhost:6379/0?bogus=1",
        "redis://:hunter2secret@localhost:6379/0?max_connections=x",
        "rediss+cluster://u:hunter2secret@a:1,b:70000",
        "redis://:hunter2secret@localhost:6379/0?ttl=inf",
    ],
)
def test_the_redis_password_never_appears_in_errors(url: str) -> None:
    with pytest.raises(sc.ConfigurationError) as info:
        sc.TieredCache.from_urls(url)
    assert "hunter2secret" not in str(info.value)
    assert "hunter2secret" not in repr(info.value)


@pytest.mark.redis
def test_the_redis_password_never_appears_in_reprs_or_stats(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:hunter2secret@")
    tier = RedisTier(url)
    cache = sc.TieredCache([MemoryTier(), tier])
    cache.get("k")  # the server has no password: AUTH fails, which is a miss
    for text in (repr(tier), str(tier), repr(cache), str(cache.stats()), repr(tier._sync())):
        assert "hunter2secret" not in text
    cache.close()


@pytest.mark.redis
def test_use_after_close_raises_instead_of_reconnecting(redis_url: str, tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls("memory://", redis_url, namespace="app")
    view = kind_namespace(cache, "lc-llm", None)
    cache.set("k", 1)
    cache.close()
    for call in (
        lambda: cache.get("k"),
        lambda: cache.set("k", 2),
        lambda: cache.get_or_set("k", lambda: 3),
        lambda: cache.clear(),
        lambda: view.get("k"),  # views share the tiers, so they are closed too
        lambda: asyncio.run(cache.aget("k")),
    ):
        with pytest.raises(CacheClosedError, match="closed"):
            call()
    assert issubclass(CacheClosedError, sc.StrataCacheError)
    assert cache.stats()["tiers"][1]["size_bytes"] is None
    tier = cache.tiers[1]
    assert isinstance(tier, RedisTier)
    with pytest.raises(CacheClosedError):
        tier.get("k")
    assert tier._client is None  # nothing was reopened


# -- adapter namespaces never collide ---------------------------------------------------------


def test_a_64_character_namespace_keeps_adapters_apart_from_the_user() -> None:
    from stratacache.langchain import LLMCache
    from stratacache.llamaindex import KVStore

    base = sc.TieredCache([MemoryTier()], namespace="n" * 64)
    base.set("mine", "user data")
    kv = KVStore(base)
    kv.put("doc", {"text": "ingested"})
    llm_cache = LLMCache(base)
    names = {base.namespace, llm_cache.cache.namespace, kv.cache.namespace}
    assert len(names) == 3
    llm_cache.clear()
    assert base.get("mine") == "user data"
    assert kv.get("doc") == {"text": "ingested"}


def test_long_adapter_namespaces_are_valid_and_distinct() -> None:
    bases = ["n" * 64, "n" * 63 + "m", "n" * 58, "n" * 57, "a.b" * 21]
    kinds = ["lc-llm", "lc-store", "li-kvstore", "li-emb"]
    seen: dict[str, tuple[str, str]] = {}
    for base_ns in bases:
        base = sc.TieredCache([MemoryTier()], namespace=base_ns)
        for kind in kinds:
            ns = kind_namespace(base, kind, None).namespace
            assert len(ns) <= 64
            assert ns != base_ns
            assert ns.endswith(kind)
            assert ns not in seen, (seen.get(ns), (base_ns, kind))
            seen[ns] = (base_ns, kind)
    short = sc.TieredCache([MemoryTier()], namespace="myapp")
    assert kind_namespace(short, "lc-llm", None).namespace == "myapp.lc-llm"


# -- single-flight across processes -----------------------------------------------------------


class RacingDiskTier(DiskTier):
    """A real disk tier that lets another process finish the key just before our lease."""

    def __init__(self, directory: Path, before_lease: Any) -> None:
        super().__init__(directory)
        self.before_lease = before_lease

    def acquire_lease(self, key: str, token: str, ttl: float) -> bool:
        hook, self.before_lease = self.before_lease, None
        if hook is not None:
            hook()
        return super().acquire_lease(key, token, ttl)


def test_the_lease_holder_reads_again_before_computing(tmp_path: Path) -> None:
    other = sc.TieredCache([DiskTier(tmp_path / "disk")])
    computed: list[str] = []

    def compute(who: str) -> str:
        computed.append(who)
        return f"from {who}"

    def other_process_finishes() -> None:
        other.get_or_set("k", lambda: compute("other"))

    racing = RacingDiskTier(tmp_path / "disk", other_process_finishes)
    cache = sc.TieredCache([MemoryTier(), racing])
    value = cache.get_or_set("k", lambda: compute("us"))
    assert value == "from other"
    assert computed == ["other"]
    assert cache.stats()["misses"] == 1  # the re-read belongs to the same request
    other.close()
    cache.close()


async def test_the_async_lease_holder_reads_again_before_computing(tmp_path: Path) -> None:
    other = sc.TieredCache([DiskTier(tmp_path / "disk")])
    cache = sc.TieredCache(
        [RacingDiskTier(tmp_path / "disk", lambda: other.set("k", "from other"))]
    )
    assert await cache.aget_or_set("k", lambda: "from us") == "from other"
    other.close()
    cache.close()


# -- async clients close with their event loop ------------------------------------------------


@pytest.mark.redis
def test_async_redis_clients_close_with_their_event_loop(redis_url: str) -> None:
    tier = RedisTier(redis_url)
    cache = sc.TieredCache([MemoryTier(), tier])
    before = client_count(redis_url)

    async def use(i: int) -> None:
        await cache.aset(f"k{i}", i)
        assert await cache.aget_many([f"k{i}"]) == {f"k{i}": i}
        await cache.aclear()

    for i in range(5):
        asyncio.run(use(i))
    assert client_count(redis_url) == before
    assert len(tier._aclients) == 0

    async def use_and_close() -> None:
        await cache.aset("k", 1)
        await cache.aclose()

    asyncio.run(use_and_close())
    assert client_count(redis_url) == before


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the abandoned sockets, by design
def test_loops_closed_without_shutdown_are_forgotten(redis_url: str) -> None:
    tier = RedisTier(redis_url)
    for _ in range(3):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(tier.aset("k", b"v", None))
        loop.close()  # no shutdown_asyncgens(): the client cannot be closed gracefully
    assert len(tier._aclients) == 1  # only the last one, dropped at the next lookup
    assert asyncio.run(tier.aget("k")) == b"v"
    assert len(tier._aclients) == 0
    tier.close()
    gc.collect()  # the abandoned clients' sockets close when collected


# -- clear(): bounded leftovers, reported failures ---------------------------------------------


@pytest.mark.redis
def test_cleared_entries_without_ttl_do_not_pile_up_in_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("scores:alice", 10)
    cache = sc.TieredCache.from_urls(redis_url, namespace="app")  # ttl=None: no expiry
    other = cache.with_namespace("app.lc-llm")
    other.set("stays", 1)
    for round_ in range(3):
        cache.set_many({f"k{i}": round_ for i in range(1000)})
        cache.clear()
    assert sorted(client.keys()) == sorted(
        [b"sc:app.lc-llm:0:k:stays", b"scmeta:app.lc-llm:gen", b"scmeta:app:gen", b"scores:alice"]
    )
    assert other.get("stays") == 1
    client.close()
    cache.close()


async def test_async_clear_sweeps_old_generations_on_disk(tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "disk")
    cache = sc.TieredCache([MemoryTier(), disk], namespace="app")
    await cache.aset_many({f"k{i}": i for i in range(50)})
    await cache.with_namespace("app2").aset("k", 1)
    await cache.aclear()
    await cache.aset("new", 1)
    assert sorted(disk.scan("sc:")) == [
        "sc:app2:0:k:k",
        "sc:app:1:k:new",
    ]
    cache.close()


def test_a_clear_that_misses_a_shared_tier_is_reported(tmp_path: Path) -> None:
    from tests.redis_procs import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0?timeout=100ms&connect_timeout=100ms"
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}", dead)
    cache.set("k", 1)
    with pytest.raises(sc.TierError, match="redis") as info:
        cache.clear()
    assert "disk" not in str(info.value)  # the disk tier did take the new generation
    peer = sc.TieredCache.from_urls(f"disk://{tmp_path / 'disk'}")
    assert peer.get("k") is None
    with pytest.raises(sc.TierError):
        asyncio.run(cache.aclear())
    peer.close()
    cache.close()


def test_namespaces_are_registered_in_shared_tiers(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'disk'}")
    cache.with_namespace("a").set("k", 1)
    cache.with_namespace("b.lc-llm").get("missing")
    cache.get_or_set("x:gen", lambda: 1)  # a lease key that ends like a generation key
    peer = sc.TieredCache.from_urls(f"disk://{tmp_path / 'disk'}", namespace="c")
    assert peer._namespaces() == ["a", "b.lc-llm", "default"]
    cache.close()
    peer.close()


def test_a_misspelt_option_never_shows_its_value() -> None:
    """A misspelt option may carry a secret: the message names it, never prints its value."""
    with pytest.raises(sc.ConfigurationError) as caught:
        sc.TieredCache.from_urls("memory://?encryption_key=s3cr3t-v4lue")
    assert "encryption_key" in str(caught.value)
    assert "s3cr3t-v4lue" not in str(caught.value)
