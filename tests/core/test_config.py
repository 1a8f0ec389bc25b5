"""Misconfiguration fails at construction with a message that says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import stratacache as sc
from stratacache._config import parse_duration, parse_size
from stratacache.tiers import DiskTier, MemoryTier, RedisTier


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (("ftp://x",), "unknown tier scheme 'ftp'"),
        (("localhost:6379",), "bad tier URL"),
        (("memory://?max_bytes=-5MB",), "must be positive"),
        (("memory://?max_bytes=lots",), "bad max_bytes"),
        (("memory://?maxbytes=1MB",), r"unknown option\(s\) \['maxbytes'\]"),
        (("memory://?ttl=soon",), "bad ttl"),
        (("memory://?ttl=0",), "must be positive"),
        (("redis://localhost?timeout=0",), "must be positive"),
        (("redis+cluster://host-without-port",), "bad cluster node"),
        (("redis://localhost?max_connections=many",), "max_connections"),
        ((), "at least one tier URL"),
    ],
)
def test_bad_urls(urls: tuple[str, ...], message: str) -> None:
    with pytest.raises(sc.ConfigurationError, match=message):
        sc.TieredCache.from_urls(*urls)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(sc.ConfigurationError, match="at least one tier"):
        sc.TieredCache([])
    with pytest.raises(sc.ConfigurationError, match="Tier instance"):
        sc.TieredCache(["memory://"])  # type: ignore[list-item]
    with pytest.raises(sc.ConfigurationError, match="namespace"):
        sc.TieredCache([MemoryTier()], namespace="a:b")
    with pytest.raises(sc.ConfigurationError, match="ttl"):
        sc.TieredCache([MemoryTier()], ttl="-1h")
    with pytest.raises(sc.ConfigurationError):
        MemoryTier(0)
    assert issubclass(sc.ConfigurationError, sc.StrataCacheError)


def test_unwritable_disk_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(sc.ConfigurationError, match="writable directory"):
        sc.TieredCache.from_urls(f"disk://{blocker}/sub")


def test_sizes_and_durations() -> None:
    assert parse_size("256MB") == 256_000_000
    assert parse_size("1GiB") == parse_size("1G") == 1024**3
    assert parse_size(4096) == 4096
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300
    assert parse_duration("1d") == 86400
    assert parse_duration(None) is None


def test_url_forms(tmp_path: Path) -> None:
    cache = sc.TieredCache.from_urls(
        "memory://?max_bytes=1MB&ttl=5m",
        f"disk://{tmp_path}/a?max_bytes=10MB&ttl=1h",
        "redis://127.0.0.1:1/0?ttl=1d&timeout=100ms",
        "rediss://user:pw@127.0.0.1:1/2",
        namespace="app",
        ttl=86400,
    )
    memory, disk, redis, tls = cache.tiers
    assert isinstance(memory, MemoryTier)
    assert (memory.max_bytes, memory.ttl) == (1_000_000, 300)
    assert isinstance(disk, DiskTier)
    assert disk.ttl == 3600
    assert isinstance(redis, RedisTier)
    assert redis.ttl == 86400
    assert not redis.cluster
    assert isinstance(tls, RedisTier)
    assert cache.ttl == 86400
    cache.close()


def test_one_comma_separated_string_with_a_cluster_url() -> None:
    cache = sc.TieredCache.from_urls("memory://, redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert len(cache.tiers) == 2
    assert isinstance(cache.tiers[1], RedisTier)
    assert cache.tiers[1].cluster


def test_default_uses_stratacache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATACACHE_URLS", raising=False)
    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path / "home"))
    cache = sc.TieredCache.default()
    assert [t.kind for t in cache.tiers] == ["memory", "disk"]
    disk = cache.tiers[1]
    assert isinstance(disk, DiskTier)
    assert disk.directory == tmp_path / "home" / "disk"
    cache.set("k", 1)
    cache.close()


def test_default_honours_stratacache_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATACACHE_URLS", f"memory://?max_bytes=2MB,disk://{tmp_path}/x")
    cache = sc.TieredCache.default(namespace="envns")
    assert [t.kind for t in cache.tiers] == ["memory", "disk"]
    assert cache.namespace == "envns"
    cache.close()


def test_default_falls_back_to_memory_when_disk_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.delenv("STRATACACHE_URLS", raising=False)
    monkeypatch.setenv("STRATACACHE_DIR", str(blocker))
    cache = sc.TieredCache.default()
    assert [t.kind for t in cache.tiers] == ["memory"]
    assert "memory tier only" in caplog.text


def test_import_pulls_in_no_framework_or_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stratacache;"
        "bad=[m for m in ('redis','numpy','langchain_core','llama_index','litellm','aiohttp',"
        "'diskcache','asyncio') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_exactly_all() -> None:
    import types

    public = {
        name
        for name, value in vars(sc).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the __future__ feature object
    }
    assert set(sc.__all__) == public
