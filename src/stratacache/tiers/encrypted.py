"""Encryption at rest: a tier wrapper that seals every entry with AES-256-GCM.

A disk directory or a Redis server is readable by whoever can read the directory or reach the
server: backups, replicas, a shared host, an operator running ``redis-cli``. Cached LLM answers
and prompts are often the most sensitive data an application has, so :class:`EncryptedTier`
seals them before they leave the process. It wraps any tier and forwards every call; tiers
only ever see bytes (:mod:`stratacache.codec` envelopes), so the wrapper needs to know nothing
about values, namespaces or generations. Each entry is stored as::

    b"SCE" | version:u8 | key id:4 bytes | nonce:12 bytes | AES-256-GCM(envelope) | tag:16 bytes

- The nonce is 96 random bits, fresh for every write. Random nonces are safe for about 2**32
  writes under one key (NIST SP 800-38D); rotate the key long before that.
- The key id is a short hash of the key. It lets a reader pick the right key after a
  rotation, and tells "written with a key I do not have" apart from "tampered with".
- The header and the storage key are the associated data. An entry copied to another key (by
  anyone who can write to the directory or to Redis) fails authentication just like a flipped
  bit, so it can never answer a different prompt.

Whatever cannot be opened (tampered, moved, written with an unknown key, or plaintext that
someone wrote without encryption) reads as an unusable entry, never as an exception: the
tiered cache then treats it like any corrupt entry (a miss, counted in ``corrupt``, logged
once, deleted). An exception would count as a tier failure and feed the circuit breaker, so
anyone able to write one bad value could switch the tier off. This tier also counts each kind
of rejection in :meth:`EncryptedTier.load_stats` and logs the reason once.

Bookkeeping entries (keys under :data:`~stratacache.tiers.base.META_PREFIX`: namespace
generations and single-flight leases) are stored as they are. They hold no user data (a
counter, a random token), leases are released by a compare-and-delete on their exact bytes
inside Redis, and generation counters must stay readable by every process sharing the tier,
including those configured before a rotation. Sealing them would protect nothing and would
break both.

Keys come from :data:`ENV_KEY`, a comma-separated list: the first key encrypts, every key
decrypts. Putting a new key first rotates without a flush; entries under the old key stay
readable and move to the new key whenever they are rewritten. ``cryptography`` is imported
only when an encrypted tier is built, so ``import stratacache`` never loads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final

from stratacache.errors import ConfigurationError, missing_extra
from stratacache.tiers.base import META_PREFIX, LeaseSupport, Miss, SetEntry, Tier

__all__ = ["ENV_KEY", "EncryptedTier", "Keyring", "generate_key"]

logger = logging.getLogger("stratacache")

#: The environment variable holding the key(s): urlsafe (or standard) base64 of 32 random
#: bytes, or a comma-separated list ``new,old,...``.
ENV_KEY: Final = "STRATACACHE_ENCRYPTION_KEY"

_MAGIC: Final = b"SCE"
_VERSION: Final = 1
#: magic, version, key id, nonce: 20 bytes, all of them authenticated as associated data.
_HEADER: Final = struct.Struct(">3sB4s12s")
_TAG: Final = 16
_KEY_BYTES: Final = 32
#: What a rejected entry reads as. It is shorter than any codec envelope, so the tiered cache
#: judges it corrupt, counts it and deletes it: the one path every unusable entry takes.
_REJECTED: Final = b""

#: Counter names in :meth:`EncryptedTier.load_stats`, with what the log says about each.
_REASONS: Final = {
    "decrypt_failed": "failed authentication: tampered, moved to another key, or written "
    "with a different key",
    "decrypt_unknown_key": "was written with a key (or format) this process does not have; "
    f"add that key to ${ENV_KEY} after the current one to keep reading it",
    "decrypt_plaintext": "is not encrypted (written by a process without encryption, or "
    "foreign data)",
}
#: Reads that needed an older key: the progress of a rotation (0 for long = drop the old key).
_OLD_KEY: Final = "decrypt_old_key"


def generate_key() -> str:
    """A new random key, in the form :data:`ENV_KEY` expects (urlsafe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def _key_id(key: bytes) -> bytes:
    # A hash of a 256-bit random key reveals nothing usable about it; the domain prefix keeps
    # it from equalling any other hash someone might publish of the same key.
    return hashlib.sha256(b"stratacache key id\x00" + key).digest()[:4]


def _decode_key(text: str) -> bytes | None:
    """Strict base64 in either alphabet, padding optional: a lenient decoder drops stray
    characters and turns a typo into a different (wrong) key instead of an error."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse_keys(source: str | bytes | Sequence[str | bytes] | None) -> list[bytes]:
    """The raw keys, primary first. Messages name a key by its position only, never by text:
    they end up in logs and tracebacks."""
    if source is None:
        text = os.environ.get(ENV_KEY, "")
        if not text.strip():
            raise ConfigurationError(
                f"encryption is on but ${ENV_KEY} is not set: set it to the urlsafe base64 of "
                '32 random bytes (make one with `python -c "from stratacache.tiers.encrypted '
                'import generate_key; print(generate_key())"`)'
            )
        where = f"${ENV_KEY}"
        items: list[object] = list(text.split(","))
    else:
        where = "encryption key"
        if isinstance(source, str):
            items = list(source.split(","))
        elif isinstance(source, bytes | bytearray):
            items = [bytes(source)]
        else:
            items = list(source)
    if not items:
        raise ConfigurationError(f"{where}: no key given")
    keys: list[bytes] = []
    for n, item in enumerate(items, 1):
        label = f"{where}: key {n} of {len(items)}"
        if isinstance(item, bytes | bytearray):
            raw = bytes(item)
        elif isinstance(item, str):
            if not item.strip():
                raise ConfigurationError(f"{label} is empty (a stray comma?)")
            decoded = _decode_key(item)
            if decoded is None:
                raise ConfigurationError(
                    f"{label} is not valid base64; expected the urlsafe base64 of 32 random "
                    "bytes (44 characters)"
                )
            raw = decoded
        else:
            raise ConfigurationError(f"{label} must be str (base64) or bytes, not {type(item)}")
        if len(raw) != _KEY_BYTES:
            raise ConfigurationError(
                f"{label} is {len(raw)} bytes long; AES-256 needs exactly {_KEY_BYTES}"
            )
        if raw not in keys:  # the same key listed twice is harmless
            keys.append(raw)
    return keys


class Keyring:
    """The keys of one encrypted tier: the first seals, any of them opens.

    Built from :data:`ENV_KEY` when ``keys`` is None; else from a base64 string (a
    comma-separated list is a rotation, as in the variable), raw 32-byte ``bytes``, or a
    sequence of either. The key material is never shown: ``repr`` lists key ids only.
    """

    __slots__ = ("_by_id", "_invalid_tag", "_primary", "ids")

    def __init__(self, keys: str | bytes | Sequence[str | bytes] | None = None) -> None:
        raw = _parse_keys(keys)
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise missing_extra("cryptography", "crypto") from exc
        self._invalid_tag: type[Exception] = InvalidTag
        self._by_id: dict[bytes, Any] = {}
        for key in raw:
            kid = _key_id(key)
            if kid in self._by_id:  # 1 in 4 billion per pair: refuse rather than mix them up
                raise ConfigurationError("two different encryption keys share a key id")
            self._by_id[kid] = AESGCM(key)
        first = _key_id(raw[0])
        self._primary: tuple[bytes, Any] = (first, self._by_id[first])
        #: Key ids (hex), primary first: safe to show, and what operators compare.
        self.ids: tuple[str, ...] = tuple(kid.hex() for kid in self._by_id)

    def seal(self, key: str, data: bytes) -> bytes:
        kid, aead = self._primary
        nonce = os.urandom(12)
        header = _HEADER.pack(_MAGIC, _VERSION, kid, nonce)
        return header + aead.encrypt(nonce, data, header + _aad(key))  # type: ignore[no-any-return]

    def open(self, key: str, blob: bytes) -> tuple[bytes | None, str | None]:
        """``(plaintext, None)``, or ``(None, reason)`` with a :data:`_REASONS` name; a read
        under an older key is ``(plaintext, _OLD_KEY)``."""
        if len(blob) < _HEADER.size + _TAG or blob[:3] != _MAGIC:
            return None, "decrypt_plaintext"
        _, version, kid, nonce = _HEADER.unpack_from(blob)
        aead = self._by_id.get(kid)
        if version != _VERSION or aead is None:
            return None, "decrypt_unknown_key"
        header = blob[: _HEADER.size]
        try:
            data = aead.decrypt(nonce, blob[_HEADER.size :], header + _aad(key))
        except self._invalid_tag:
            return None, "decrypt_failed"
        return data, (None if kid == self._primary[0] else _OLD_KEY)

    def __repr__(self) -> str:
        return f"<Keyring ids={list(self.ids)}>"


def _aad(key: str) -> bytes:
    # surrogatepass: every str a tier accepts has one encoding, so no two keys share an AAD.
    return key.encode("utf-8", "surrogatepass")


#: What :class:`EncryptedTier` accepts as ``keys``: a :class:`Keyring`, or what builds one.
Keys = Keyring | str | bytes | Sequence[str | bytes] | None


class EncryptedTier(Tier):
    """``inner`` with every entry sealed by AES-256-GCM (see the module docstring).

    ``keys`` defaults to :data:`ENV_KEY`; a missing or malformed key is a
    :class:`~stratacache.errors.ConfigurationError` here, at construction.

    It takes the inner tier's kind, name, TTL and sharing, so stats, metrics and dashboards
    look the same with encryption on; ``repr`` and :meth:`load_stats` show that it is on.
    Wrapping a tier that holds leases (disk, Redis) gives a tier that holds leases too.
    """

    def __new__(cls, inner: Tier, keys: Keys = None) -> EncryptedTier:
        if cls is EncryptedTier and isinstance(inner, LeaseSupport):
            return super().__new__(_EncryptedLeaseTier)
        return super().__new__(cls)

    def __init__(self, inner: Tier, keys: Keys = None) -> None:
        if not isinstance(inner, Tier) or isinstance(inner, EncryptedTier):
            raise ConfigurationError("EncryptedTier wraps one plain stratacache Tier")
        super().__init__(ttl=inner.ttl, name=inner.name)
        self.keyring = keys if isinstance(keys, Keyring) else Keyring(keys)
        self.inner = inner
        self.kind = inner.kind
        self.shared = inner.shared
        self._counts = dict.fromkeys((*_REASONS, _OLD_KEY), 0)
        self._count_lock = threading.Lock()

    # -- the two transformations every method shares ------------------------------------------

    def _seal(self, key: str, data: bytes) -> bytes:
        return data if key.startswith(META_PREFIX) else self.keyring.seal(key, data)

    def _open(self, key: str, blob: bytes | Miss) -> bytes | Miss:
        if isinstance(blob, Miss) or key.startswith(META_PREFIX):
            return blob
        data, event = self.keyring.open(key, blob)
        if event is not None:
            self._note(event)
        return _REJECTED if data is None else data

    def _open_many(self, found: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, blob in found.items() for v in [self._open(k, blob)]
                if isinstance(v, bytes)}  # fmt: skip

    def _seal_many(self, entries: Iterable[SetEntry]) -> list[SetEntry]:
        return [(key, self._seal(key, data), ttl) for key, data, ttl in entries]

    def _note(self, event: str) -> None:
        with self._count_lock:
            self._counts[event] += 1
            first = self._counts[event] == 1
        if event == _OLD_KEY:
            if first:
                logger.info(
                    "stratacache: %s is reading entries sealed with an older key; they move "
                    "to the current key when rewritten (load_stats: %s)",
                    self.name,
                    _OLD_KEY,
                )
            return
        (logger.warning if first else logger.debug)(
            "stratacache: an entry in %s %s; it reads as a miss", self.name, _REASONS[event]
        )

    # -- sync ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | Miss:
        return self._open(key, self.inner.get(key))

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.inner.set(key, self._seal(key, data), ttl)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def clear(self) -> None:
        self.inner.clear()

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self._open_many(self.inner.get_many(keys))

    def set_many(self, entries: Iterable[SetEntry]) -> None:
        self.inner.set_many(self._seal_many(entries))

    def add(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        return self.inner.add(key, self._seal(key, data), ttl)

    def scan(self, prefix: str) -> list[str]:
        return self.inner.scan(prefix)

    def delete_many(self, keys: Sequence[str]) -> None:
        self.inner.delete_many(keys)

    def size_bytes(self) -> int | None:
        return self.inner.size_bytes()

    def load_stats(self) -> dict[str, int]:
        with self._count_lock:
            return {**self.inner.load_stats(), **self._counts}

    def close(self) -> None:
        self.inner.close()

    # -- async: the inner tier's own twins (Redis has a native client), same transformations --

    async def aget(self, key: str) -> bytes | Miss:
        return self._open(key, await self.inner.aget(key))

    async def aset(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.inner.aset(key, self._seal(key, data), ttl)

    async def adelete(self, key: str) -> None:
        await self.inner.adelete(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self._open_many(await self.inner.aget_many(keys))

    async def aset_many(self, entries: Iterable[SetEntry]) -> None:
        await self.inner.aset_many(self._seal_many(entries))

    async def aadd(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        return await self.inner.aadd(key, self._seal(key, data), ttl)

    async def ascan(self, prefix: str) -> list[str]:
        return await self.inner.ascan(prefix)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        await self.inner.adelete_many(keys)

    async def aclear(self) -> None:
        await self.inner.aclear()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"<EncryptedTier {self.name!r} keys={list(self.keyring.ids)} over {self.inner!r}>"


class _EncryptedLeaseTier(EncryptedTier, LeaseSupport):
    """An encrypted tier over one that holds leases. Leases are bookkeeping (a random token
    under a ``scmeta:`` key) and pass through unsealed: the inner tier releases them by
    comparing their exact bytes."""

    inner: Any  # a Tier that is also LeaseSupport

    def acquire_lease(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.inner.acquire_lease(key, token, ttl))

    def release_lease(self, key: str, token: str) -> None:
        self.inner.release_lease(key, token)

    async def aacquire_lease(self, key: str, token: str, ttl: float) -> bool:
        return bool(await self.inner.aacquire_lease(key, token, ttl))

    async def arelease_lease(self, key: str, token: str) -> None:
        await self.inner.arelease_lease(key, token)
