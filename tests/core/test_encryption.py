"""Encryption at rest (``?encrypt=1``): against a real diskcache directory and a real
redis-server. An attacker is played by an independent client with write access to the store
(redis-py, a second diskcache handle, or plain file writes), never by a mocked tier."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import pytest

import stratacache as sc
from stratacache.errors import ConfigurationError, DependencyError
from stratacache.tiers import DiskTier, LeaseSupport, MemoryTier
from stratacache.tiers.encrypted import ENV_KEY, EncryptedTier, Keyring, generate_key

KEY1, KEY2, KEY3 = generate_key(), generate_key(), generate_key()
SECRET = "the-patient-record-7f3a"  # what must never be readable at rest


@dataclass
class Store:
    """A URL for the cache and raw access to what the backend really holds."""

    url: str
    stored: Callable[[], list[str]]
    read: Callable[[str], bytes | None]
    write: Callable[[str, bytes], None]


@pytest.fixture(params=["disk", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "disk":
        raw = diskcache.Cache(str(tmp_path / "disk"))
        yield Store(
            f"disk://{tmp_path / 'disk'}",
            lambda: [k for k in raw.iterkeys() if k.startswith("sc:")],
            lambda k: raw.get(k),
            lambda k, v: raw.set(k, v),
        )
        raw.close()
        return
    import redis

    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    yield Store(
        url,
        lambda: sorted(k.decode() for k in client.scan_iter(match="sc:*")),
        lambda k: client.get(k),
        lambda k, v: client.set(k, v),
    )
    client.close()


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Sets the key variable, as an operator would before starting the process."""
    return lambda value: monkeypatch.setenv(ENV_KEY, value)


def _cache(url: str, **options: Any) -> sc.TieredCache:
    """The shared tier alone, so every read really goes to the store."""
    return sc.TieredCache.from_urls(f"{url}?encrypt=1", compress_threshold=0, **options)


def _enc(cache: sc.TieredCache) -> EncryptedTier:
    tier = cache.tiers[-1]
    assert isinstance(tier, EncryptedTier)
    return tier


def _only_key(store: Store) -> str:
    keys = store.stored()
    assert len(keys) == 1, keys
    return keys[0]


def test_round_trip_and_what_the_store_holds(store: Store, keyed: Callable[[str], None]) -> None:
    keyed(KEY1)
    value = {"answer": SECRET, "tokens": [1, 2, 3]}
    with _cache(store.url) as cache:
        cache.set("prompt", value)
        cache.set("blob", SECRET.encode() * 3)
        assert cache.get("prompt") == value
        stored = [store.read(k) for k in store.stored()]
    assert len(stored) == 2
    for blob in stored:
        assert blob is not None and blob.startswith(b"SCE\x01")
        assert SECRET.encode() not in blob
    with _cache(store.url) as other:  # another process with the same key
        assert other.get("prompt") == value
        assert other.get("blob") == SECRET.encode() * 3
        assert other.stats()["tiers"][0]["corrupt"] == 0


async def test_async_round_trip(store: Store, keyed: Callable[[str], None]) -> None:
    keyed(KEY1)
    async with _cache(store.url) as cache:
        await cache.aset("a", SECRET)
        await cache.aset_many({"b": 1, "c": [SECRET]})
        assert await cache.aget("a") == SECRET
        assert await cache.aget_many(["a", "b", "c", "d"]) == {"a": SECRET, "b": 1, "c": [SECRET]}
    assert all(SECRET.encode() not in (store.read(k) or b"") for k in store.stored())


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain-control"])
def test_no_plaintext_anywhere_in_the_disk_directory(
    tmp_path: Path, keyed: Callable[[str], None], encrypt: bool
) -> None:
    """Every byte of the directory (SQLite file, its WAL, value files) is searched; the plain
    control proves the search finds the secret when it is there."""
    keyed(KEY1)
    directory = tmp_path / "disk"
    url = f"disk://{directory}" + ("?encrypt=1" if encrypt else "")
    with sc.TieredCache.from_urls(url, compress_threshold=0) as cache:
        cache.set("small", SECRET)
        cache.set("large", SECRET * 4000)  # ~92 KB: diskcache keeps it in a file of its own
        assert cache.get("large") == SECRET * 4000
        on_disk = b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())
        assert list(directory.rglob("*.val")), "the large value should live in a file"
    assert (SECRET.encode() in on_disk) is not encrypt


@pytest.mark.redis
def test_no_plaintext_in_redis(redis_url: str, keyed: Callable[[str], None]) -> None:
    import redis

    keyed(KEY1)
    client = redis.Redis.from_url(redis_url)
    try:
        for encrypt in (False, True):  # the plain pass is the control
            client.flushall()
            url = f"{redis_url}?encrypt=1" if encrypt else redis_url
            with sc.TieredCache.from_urls(url, compress_threshold=0) as cache:
                cache.set("k", {"text": SECRET})
            values = b"".join(client.get(k) or b"" for k in client.scan_iter(match="sc:*"))
            assert values
            assert (SECRET.encode() in values) is not encrypt
    finally:
        client.close()


def _flip(blob: bytes, at: int) -> bytes:
    i = at % len(blob)
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]


def test_tampered_entry_is_a_counted_miss_and_deleted(
    store: Store, keyed: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    keyed(KEY1)
    with _cache(store.url) as cache:
        cache.set("k", SECRET)
        pk = _only_key(store)
        blob = store.read(pk)
        assert blob is not None
        store.write(pk, _flip(blob, 40))  # one bit of the ciphertext
        with caplog.at_level(logging.DEBUG, logger="stratacache"):
            assert cache.get("k", "default") == "default"  # no exception
        row = cache.stats()["tiers"][0]
        assert (row["corrupt"], row["errors"], row["breaker"]) == (1, 0, "closed")
        assert row["decrypt_failed"] == 1
        assert store.read(pk) is None  # deleted
        cache.set("k", SECRET)  # and the key works again
        assert cache.get("k") == SECRET
    warnings = [r for r in caplog.records if "failed authentication" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert KEY1 not in caplog.text


# Layout: magic 0-2 | version 3 | key id 4-7 | nonce 8-19 | ciphertext | tag (last 16).
TAMPERING = {
    "magic": (lambda b: _flip(b, 0), "decrypt_plaintext"),
    "version": (lambda b: _flip(b, 3), "decrypt_unknown_key"),
    "key-id": (lambda b: _flip(b, 5), "decrypt_unknown_key"),
    "nonce": (lambda b: _flip(b, 12), "decrypt_failed"),
    "ciphertext": (lambda b: _flip(b, 25), "decrypt_failed"),
    "tag": (lambda b: _flip(b, -1), "decrypt_failed"),
    "truncated": (lambda b: b[:-1], "decrypt_failed"),
    "header-only": (lambda b: b[:20], "decrypt_plaintext"),
    "appended": (lambda b: b + b"\x00", "decrypt_failed"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_every_kind_of_tampering_is_a_miss(
    tmp_path: Path, keyed: Callable[[str], None], how: str
) -> None:
    keyed(KEY1)
    raw = diskcache.Cache(str(tmp_path / "disk"))
    with _cache(f"disk://{tmp_path / 'disk'}") as cache:
        cache.set_many({"a": SECRET, "b": "untouched"})
        pk = next(k for k in raw.iterkeys() if k.endswith(":a"))
        change, counter = TAMPERING[how]
        raw.set(pk, change(raw.get(pk)))
        assert cache.get_many(["a", "b"]) == {"b": "untouched"}
        row = cache.stats()["tiers"][0]
        assert row[counter] == 1 and row["corrupt"] == 1 and row["errors"] == 0
        assert pk not in raw
    raw.close()


def test_flipped_byte_in_the_value_file_on_disk(
    tmp_path: Path, keyed: Callable[[str], None]
) -> None:
    """The attack without any cache API: one byte of the file diskcache wrote is changed."""
    keyed(KEY1)
    directory = tmp_path / "disk"
    with _cache(f"disk://{directory}") as cache:
        cache.set("large", SECRET * 4000)
        (path,) = directory.rglob("*.val")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x80
        path.write_bytes(bytes(data))
    with _cache(f"disk://{directory}") as fresh:
        assert fresh.get("large") is None
        row = fresh.stats()["tiers"][0]
        assert (row["corrupt"], row["decrypt_failed"], row["errors"]) == (1, 1, 0)
        assert not path.exists()


def test_value_moved_to_another_key_is_a_miss(store: Store, keyed: Callable[[str], None]) -> None:
    """The storage key is authenticated: a valid ciphertext copied under another key (the
    answer to an innocent prompt served for a different one) fails."""
    keyed(KEY1)
    with _cache(store.url) as cache:
        cache.set("transfer $10", "approved")
        cache.set("transfer $1M", "denied")
        by_suffix = {k.rsplit(":", 1)[-1]: k for k in store.stored()}
        small, large = by_suffix["transfer $10"], by_suffix["transfer $1M"]
        store.write(large, store.read(small) or b"")
        assert cache.get("transfer $1M") is None
        assert cache.get("transfer $10") == "approved"
        assert cache.stats()["tiers"][0]["decrypt_failed"] == 1


def test_plaintext_written_without_encryption_is_a_miss(
    store: Store, keyed: Callable[[str], None]
) -> None:
    """A process without ``?encrypt=1`` (or a foreign writer) cannot plant answers."""
    keyed(KEY1)
    with sc.TieredCache.from_urls(store.url) as plain:
        plain.set("k", "planted")
    with _cache(store.url) as cache:
        assert cache.get("k") is None
        assert cache.stats()["tiers"][0]["decrypt_plaintext"] == 1
        assert store.stored() == []


async def test_async_reads_reject_tampering(store: Store, keyed: Callable[[str], None]) -> None:
    keyed(KEY1)
    async with _cache(store.url) as cache:
        await cache.aset_many({"a": 1, "b": 2})
        pk = next(k for k in store.stored() if k.endswith(":a"))
        store.write(pk, _flip(store.read(pk) or b"", -3))
        assert await cache.aget("a") is None
        assert await cache.aget_many(["a", "b"]) == {"b": 2}
        assert _enc(cache).load_stats()["decrypt_failed"] == 1


def test_wrong_key_is_a_miss(store: Store, keyed: Callable[[str], None]) -> None:
    keyed(KEY1)
    with _cache(store.url) as writer:
        writer.set("k", SECRET)
    keyed(KEY3)
    with _cache(store.url) as reader:
        assert reader.get("k") is None
        assert reader.stats()["tiers"][0]["decrypt_unknown_key"] == 1


def test_key_rotation_without_a_flush(store: Store, keyed: Callable[[str], None]) -> None:
    keyed(KEY1)
    with _cache(store.url) as old:
        old.set_many({"a": "A", "b": "B"})
    key_id = {k: Keyring(k).ids[0] for k in (KEY1, KEY2)}

    def key_id_of(name: str) -> str:
        blob = store.read(next(k for k in store.stored() if k.endswith(":" + name)))
        assert blob is not None
        return blob[4:8].hex()

    keyed(f"{KEY2},{KEY1}")  # step 2: new key first, old key still accepted
    with _cache(store.url) as rotating:
        assert rotating.get_many(["a", "b"]) == {"a": "A", "b": "B"}
        assert _enc(rotating).load_stats()["decrypt_old_key"] == 2
        rotating.set("b", "B2")  # a rewrite moves the entry to the new key
        rotating.set("c", "C")
        assert (key_id_of("a"), key_id_of("b"), key_id_of("c")) == (
            key_id[KEY1], key_id[KEY2], key_id[KEY2],
        )  # fmt: skip
        assert rotating.stats()["tiers"][0]["corrupt"] == 0
    keyed(KEY2)  # step 3: old key dropped; what was never rewritten is gone
    with _cache(store.url) as rotated:
        assert rotated.get_many(["a", "b", "c"]) == {"b": "B2", "c": "C"}
        assert _enc(rotated).load_stats()["decrypt_unknown_key"] == 1


def test_bookkeeping_stays_plain_and_shared(store: Store, keyed: Callable[[str], None]) -> None:
    """Generations are not sealed: a clear() by an encrypted process is seen by every process
    on the tier, and a generation holds a counter, not user data."""
    keyed(KEY1)
    with _cache(store.url) as cache, sc.TieredCache.from_urls(store.url) as plain:
        plain.set("p", 1)
        cache.set("e", 1)
        cache.clear()
        assert plain.get("p") is None  # the generation it reads moved on
        assert cache.get("e") is None
        cache.set("e", 2)
        assert cache.get("e") == 2
        assert _enc(cache).inner.get("scmeta:default:gen") == b"1"


BAD_KEYS = {
    "not-base64": "not a key at all!!",
    "too-short": "c2hvcnQta2V5",  # base64 of b"short-key"
    "too-long": generate_key() + "AAAA",
    "stray-comma": generate_key() + ",",
    "non-ascii": "ключ" * 11,
    "blank": "   ",
}


@pytest.mark.parametrize("name", list(BAD_KEYS))
def test_bad_keys_fail_at_construction_without_showing_the_key(
    tmp_path: Path, keyed: Callable[[str], None], name: str
) -> None:
    bad = BAD_KEYS[name]
    keyed(bad)
    directory = tmp_path / "never-created"
    with pytest.raises(ConfigurationError) as info:
        sc.TieredCache.from_urls(f"disk://{directory}?encrypt=1")
    shown = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    assert ENV_KEY in shown
    for part in bad.split(","):
        if part.strip():
            assert part.strip() not in shown
    assert not directory.exists()  # the key is checked before the tier opens anything


def test_configuration_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(ConfigurationError, match="is not set"):
        sc.TieredCache.from_urls(f"disk://{tmp_path}?encrypt=1")
    with pytest.raises(ConfigurationError, match="memory tier"):
        sc.TieredCache.from_urls("memory://?encrypt=1")
    with pytest.raises(ConfigurationError, match="encrypt"):
        sc.TieredCache.from_urls(f"disk://{tmp_path}?encrypt=maybe")
    disk = DiskTier(tmp_path / "d")
    with pytest.raises(ConfigurationError, match="32"):
        EncryptedTier(disk, b"\x00" * 16)
    with pytest.raises(ConfigurationError, match="wraps one plain"):
        EncryptedTier(EncryptedTier(disk, KEY1), KEY1)
    disk.close()
    with sc.TieredCache.from_urls("memory://?encrypt=0") as plain:
        assert plain.tiers[0].kind == "memory"


def test_key_never_shown(tmp_path: Path, keyed: Callable[[str], None]) -> None:
    keyed(f"{KEY1},{KEY2}")
    with _cache(f"disk://{tmp_path}") as cache:
        cache.set("k", 1)
        shown = f"{cache!r} {cache.tiers!r} {cache.stats()!r} {_enc(cache).keyring!r}"
    for key in (KEY1, KEY2):
        assert key not in shown and key.rstrip("=") not in shown
    assert Keyring(KEY1).ids[0] in shown  # ids (hashes) are shown, so operators can compare


def test_keys_in_code_and_both_base64_alphabets(tmp_path: Path) -> None:
    import base64
    import os

    raw = os.urandom(32)
    standard = base64.b64encode(raw).decode()  # what `openssl rand -base64 32` prints
    urlsafe_unpadded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    ids = {Keyring(k).ids for k in (raw, standard, urlsafe_unpadded, [raw, raw])}
    assert len(ids) == 1
    writer = EncryptedTier(DiskTier(tmp_path / "d"), [KEY2, raw])
    reader = EncryptedTier(DiskTier(tmp_path / "d"), standard)
    try:
        writer.set("sc:x", b"v", None)
        assert reader.get("sc:x") is not None  # sealed with KEY2: not readable by `raw` alone
        assert reader.get("sc:x") == b""
        writer.keyring = Keyring([raw, KEY2])
        writer.set("sc:x", b"v", None)
        assert reader.get("sc:x") == b"v"
    finally:
        writer.close()
        reader.close()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_cryptography_is_imported_only_when_encryption_is_on(tmp_path: Path) -> None:
    code = f"""
import sys
import stratacache as sc
assert "cryptography" not in sys.modules, "import stratacache loaded cryptography"
sc.TieredCache.from_urls("memory://", "disk://{tmp_path}/plain").close()
assert "cryptography" not in sys.modules, "an unencrypted cache loaded cryptography"
import os
os.environ["{ENV_KEY}"] = "{KEY1}"
sc.TieredCache.from_urls("disk://{tmp_path}/sealed?encrypt=1").close()
assert "cryptography" in sys.modules
print("ok")
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_missing_cryptography_names_the_extra(tmp_path: Path) -> None:
    code = f"""
import os, sys
sys.modules["cryptography"] = None  # as if the package were not installed
os.environ["{ENV_KEY}"] = "{KEY1}"
import stratacache as sc
try:
    sc.TieredCache.from_urls("disk://{tmp_path}?encrypt=1")
except sc.StrataCacheError as exc:
    print(type(exc).__name__, exc)
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(DependencyError.__name__)
    assert "stratacache[crypto]" in done.stdout


def test_semantic_layer_over_an_encrypted_disk_tier(
    tmp_path: Path, keyed: Callable[[str], None]
) -> None:
    """The semantic layer's journal and entries go through the tier and are sealed; its index
    is not saved next to an encrypted tier (the saved state names every prompt in clear), so
    another process rebuilds it from the sealed journal."""
    from stratacache.semantic import SemanticCache
    from stratacache.semantic._embedders import LocalEmbedder

    keyed(KEY1)
    prompt, answer = "How do I reset my password?", "Use the link sent to jane@example.com"
    scope = {"model": "gpt-x", "tenant": "acme"}
    embedder = LocalEmbedder()
    directory = tmp_path / "disk"
    url = f"disk://{directory}?encrypt=1"
    with sc.TieredCache.from_urls("memory://", url, compress_threshold=0) as first:
        writer = SemanticCache(embedder, first, sync_interval=0)
        assert writer.index_dir is None
        writer.store(prompt, answer, scope)
        writer.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for text in (prompt, answer, "jane@example.com"):
        assert text.encode() not in on_disk
    with sc.TieredCache.from_urls("memory://", url) as second:
        reader = SemanticCache(embedder, second, sync_interval=0)
        assert reader.lookup("how can I reset my password", scope) == answer
        reader.close()
        assert second.stats()["tiers"][1]["corrupt"] == 0


def test_turned_on_without_code_changes(
    tmp_path: Path, keyed: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$STRATACACHE_URLS`` + the key variable: what every integration's default cache uses."""
    keyed(KEY1)
    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STRATACACHE_URLS", "memory://,disk://?encrypt=1")
    with sc.TieredCache.default() as cache:
        sealed = _enc(cache)
        assert isinstance(cache.tiers[0], MemoryTier)
        assert sealed.kind == "disk" and sealed.shared and isinstance(sealed, LeaseSupport)
        cache.set("k", SECRET)
        (pk,) = sealed.scan("sc:")
        blob = sealed.inner.get(pk)
        assert isinstance(blob, bytes) and blob.startswith(b"SCE") and SECRET.encode() not in blob
