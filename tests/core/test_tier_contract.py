"""The tier contract, written once and run against memory, disk, Redis and a 3-node cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from stratacache.tiers import MISS, LeaseSupport, Tier


def test_missing_key_is_the_miss_sentinel(tier: Tier) -> None:
    assert tier.get("sc:absent") is MISS
    assert not MISS


@pytest.mark.parametrize(
    "data", [b"", b"\x00\xff binary \x00", "ünïcødé ✓".encode(), bytes(range(256)) * 4096]
)
def test_round_trip_exact_bytes(tier: Tier, data: bytes) -> None:
    tier.set("sc:k", data, None)
    assert tier.get("sc:k") == data


def test_overwrite_and_delete(tier: Tier) -> None:
    tier.set("sc:k", b"one", None)
    tier.set("sc:k", b"two", None)
    assert tier.get("sc:k") == b"two"
    tier.delete("sc:k")
    assert tier.get("sc:k") is MISS
    tier.delete("sc:k")  # deleting an absent key is not an error


def test_keys_with_spaces_unicode_and_colons(tier: Tier) -> None:
    keys = ["sc:a b", "sc:ключ", "sc:x:y:z", "sc:" + "k" * 250]
    for i, key in enumerate(keys):
        tier.set(key, str(i).encode(), None)
    assert [tier.get(k) for k in keys] == [b"0", b"1", b"2", b"3"]


def test_ttl_expires_and_none_persists(tier: Tier) -> None:
    tier.set("sc:short", b"x", 0.15)
    tier.set("sc:forever", b"y", None)
    assert tier.get("sc:short") == b"x"
    time.sleep(0.4)
    assert tier.get("sc:short") is MISS
    assert tier.get("sc:forever") == b"y"


def test_get_many_returns_only_present_keys(tier: Tier) -> None:
    assert tier.get_many([]) == {}
    tier.set_many([("sc:a", b"1", None), ("sc:b", b"2", 60.0), ("sc:c", b"3", 0.15)])
    assert tier.get_many(["sc:c", "sc:missing", "sc:a", "sc:b"]) == {
        "sc:a": b"1",
        "sc:b": b"2",
        "sc:c": b"3",
    }
    time.sleep(0.4)
    assert tier.get_many(["sc:a", "sc:c"]) == {"sc:a": b"1"}


def test_get_many_of_large_values(tier: Tier) -> None:
    """Large values live in files on the disk tier and in big bulk strings in Redis."""
    big = {f"sc:big:{i}": bytes([i]) * 200_000 for i in range(3)}
    tier.set_many([(k, v, None) for k, v in big.items()])
    assert tier.get_many([*big, "sc:none"]) == big


def test_many_keys_spread_over_slots(tier: Tier) -> None:
    entries = [(f"sc:bulk:{i}", f"v{i}".encode(), None) for i in range(300)]
    tier.set_many(entries)
    found = tier.get_many([k for k, _, _ in entries])
    assert found == {k: v for k, v, _ in entries}


def test_clear_removes_entries(tier: Tier) -> None:
    tier.set_many([("sc:a", b"1", None), ("scmeta:ns:gen", b"3", None)])
    tier.clear()
    assert tier.get("sc:a") is MISS
    assert tier.get("scmeta:ns:gen") is MISS


async def test_async_twins(tier: Tier) -> None:
    assert await tier.aget("sc:a") is MISS
    await tier.aset("sc:a", b"1", None)
    await tier.aset_many([("sc:b", b"2", None), ("sc:c", b"3", 30.0)])
    assert await tier.aget("sc:a") == b"1"
    assert await tier.aget_many(["sc:a", "sc:b", "sc:c", "sc:d"]) == {
        "sc:a": b"1",
        "sc:b": b"2",
        "sc:c": b"3",
    }
    await tier.adelete("sc:a")
    assert await tier.aget("sc:a") is MISS


def test_async_works_across_event_loops(tier: Tier) -> None:
    """asyncio.run() twice: a client bound to the first (closed) loop must not be reused."""
    asyncio.run(tier.aset("sc:loop", b"1", None))
    assert asyncio.run(tier.aget("sc:loop")) == b"1"


def test_shared_tiers_support_leases(tier: Tier) -> None:
    assert isinstance(tier, LeaseSupport) == tier.shared


def test_leases_are_exclusive_and_expire(shared_tier: Tier) -> None:
    tier = shared_tier
    assert isinstance(tier, LeaseSupport)
    assert tier.acquire_lease("scmeta:lease:x", "me", 0.3)
    assert not tier.acquire_lease("scmeta:lease:x", "you", 0.3)
    tier.release_lease("scmeta:lease:x", "you")  # not the holder: no effect
    assert not tier.acquire_lease("scmeta:lease:x", "you", 0.3)
    tier.release_lease("scmeta:lease:x", "me")
    assert tier.acquire_lease("scmeta:lease:x", "you", 0.2)
    time.sleep(0.4)
    assert tier.acquire_lease("scmeta:lease:x", "third", 1.0)


def test_scan_by_exact_prefix_and_delete_many(tier: Tier) -> None:
    keys = [f"sc:ns:{g}:k:{i}" for g in (1, 2) for i in range(30)]
    tier.set_many([(k, b"v", None) for k in keys] + [("sc:ns2:1:k:0", b"v", None)])
    tier.set("scmeta:ns:gen", b"2", None)
    if not tier.shared:  # only shared tiers are swept; memory lists its keys all the same
        assert sorted(tier.scan("sc:ns:1:")) == sorted(keys[:30])
    assert sorted(tier.scan("sc:ns:")) == sorted(keys)
    assert tier.scan("scmeta:") == ["scmeta:ns:gen"]
    assert tier.scan("sc:[n]*") == []  # glob characters are literal
    tier.delete_many(keys[:30])
    assert sorted(tier.scan("sc:ns:")) == sorted(keys[30:])
    assert tier.get("sc:ns2:1:k:0") == b"v"


async def test_async_scan_delete_many_and_add(tier: Tier) -> None:
    await tier.aset_many([("sc:a:0:k:1", b"1", None), ("sc:a:0:k:2", b"2", None)])
    assert sorted(await tier.ascan("sc:a:")) == ["sc:a:0:k:1", "sc:a:0:k:2"]
    await tier.adelete_many(["sc:a:0:k:1"])
    assert await tier.ascan("sc:a:") == ["sc:a:0:k:2"]
    assert await tier.aadd("scmeta:a:gen", b"0")
    assert not await tier.aadd("scmeta:a:gen", b"5")
    assert await tier.aget("scmeta:a:gen") == b"0"


def test_add_is_set_if_absent_without_expiry(tier: Tier) -> None:
    assert tier.add("scmeta:x:gen", b"0")
    assert not tier.add("scmeta:x:gen", b"7")
    assert tier.get("scmeta:x:gen") == b"0"


def test_add_with_ttl_expires(tier: Tier) -> None:
    assert tier.add("sc:j:0:k:1", b"a", 0.2)
    assert not tier.add("sc:j:0:k:1", b"b", 0.2)
    assert tier.get("sc:j:0:k:1") == b"a"
    time.sleep(0.5)
    assert tier.get("sc:j:0:k:1") is MISS
    assert tier.add("sc:j:0:k:1", b"c", 0.2)
