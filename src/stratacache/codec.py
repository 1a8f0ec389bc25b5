"""The stored form of a value: a small versioned envelope, never pickle.

Tiers only ever see bytes. Every stored value is wrapped as::

    b"SC" | version:u8 | flags:u8 | expires_at:f64 | crc32:u32 | payload

``expires_at`` (wall-clock seconds, 0 = never) travels with the value so that a hit in a slow
tier can be promoted into a faster one with exactly the time it has left, whatever the tier.
The crc32 catches truncated or bit-flipped entries; the magic and version catch foreign data
(another program's keys in a shared Redis). Anything that fails to decode is a miss that the
caller deletes, never an exception and never an unpickle: in a shared Redis, unpickling stored
bytes would be remote code execution.
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from stratacache.errors import SerializationError, TierError

__all__ = ["CODEC_VERSION", "DecodeError", "DecodeMemo", "decode", "encode", "expires_at_of"]

CODEC_VERSION: Final = 1
_MAGIC: Final = b"SC"
_HEADER = struct.Struct(">2sBBdI")
_FLAG_ZLIB: Final = 0x01
_FLAG_BYTES: Final = 0x02
#: The JSON payload holds no NaN/Infinity and no integer beyond 64 bits, so orjson (about 4x
#: faster than json on a typical 2 KB LLM response) decodes it to exactly the same value.
_FLAG_PLAIN_JSON: Final = 0x04
#: Below this the CPU spent on zlib costs more than the bytes it saves on the wire.
DEFAULT_COMPRESS_THRESHOLD: Final = 16 * 1024


def _fast_loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency; stay correct without it
        return json.loads
    return orjson.loads


#: Set on first decode; importing orjson at ``import stratacache`` time would cost the budget.
_orjson_loads: Callable[[bytes], Any] | None = None
#: A run of 19+ digits may be an integer beyond 64 bits, which orjson would turn into a float.
#: Mapping every digit to "0" and searching for nineteen of them is ~8x faster than a regex.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


class DecodeError(TierError):
    """Stored bytes are not a valid envelope (corrupt, foreign or from a newer version)."""


def encode(
    value: Any,
    expires_at: float | None = None,
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
) -> bytes:
    """Wrap ``value`` (bytes or JSON-compatible) in an envelope.

    :raises SerializationError: if the value is neither bytes nor JSON-compatible.
    """
    flags = 0
    if isinstance(value, bytes | bytearray | memoryview):
        payload = bytes(value)
        flags |= _FLAG_BYTES
    else:
        try:
            try:
                text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
                payload = text.encode()
                if _LONG_RUN not in payload.translate(_DIGITS_TO_ZERO):
                    flags |= _FLAG_PLAIN_JSON
            except ValueError:  # NaN or Infinity: keep them, decode with json
                payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot store a {type(value).__name__!r}: values must be bytes or "
                f"JSON-compatible (str, int, float, bool, None, lists, dicts) ({exc})"
            ) from exc
    if compress_threshold and len(payload) >= compress_threshold:
        packed = zlib.compress(payload, 1)
        if len(packed) < len(payload):
            payload = packed
            flags |= _FLAG_ZLIB
    header = _HEADER.pack(_MAGIC, CODEC_VERSION, flags, expires_at or 0.0, zlib.crc32(payload))
    return header + payload


def expires_at_of(data: bytes) -> float | None:
    """The absolute expiry stored in an envelope, without decoding the payload."""
    if len(data) < _HEADER.size:
        raise DecodeError("entry shorter than the envelope header")
    expires_at = _HEADER.unpack_from(data)[3]
    return expires_at or None


def decode(data: bytes) -> tuple[Any, float | None]:
    """Unwrap an envelope into ``(value, expires_at)``.

    :raises DecodeError: for anything that is not an intact envelope of a known version.
    """
    if len(data) < _HEADER.size:
        raise DecodeError("entry shorter than the envelope header")
    magic, version, flags, expires_at, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise DecodeError("not a stratacache entry (bad magic)")
    if version != CODEC_VERSION:
        raise DecodeError(f"entry written by codec version {version}, this is {CODEC_VERSION}")
    payload = data[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise DecodeError("checksum mismatch (corrupt entry)")
    global _orjson_loads
    try:
        raw = zlib.decompress(payload) if flags & _FLAG_ZLIB else payload
        if flags & _FLAG_BYTES:
            value: Any = raw
        elif flags & _FLAG_PLAIN_JSON:
            if _orjson_loads is None:
                _orjson_loads = _fast_loads()
            value = _orjson_loads(raw)
        else:
            value = json.loads(raw)
    except (zlib.error, ValueError) as exc:
        raise DecodeError(f"undecodable payload: {exc}") from exc
    return value, expires_at or None


#: Bookkeeping per memo entry (dict slot, tuple, the two bytes headers), counted in the budget.
_MEMO_OVERHEAD: Final = 160


class DecodeMemo:
    """:func:`decode` for recently seen envelopes holding bytes, without re-checking them.

    A memory tier hands back the very bytes object it stores, so the memo's lookup costs a
    cached hash and an identity check, where decoding costs a crc32 over the payload and a
    copy of it (about 0.4 µs for a 1.5 KB embedding).

    It is a decoding shortcut only, never a cache of answers: it is keyed by the whole
    envelope (payload and expiry included), so it can only answer for the exact bytes a tier
    has just returned for a key, and the caller still judges expiry against the clock. A key
    that was deleted, overwritten, cleared (a new generation is a new key) or expired never
    reaches it. Only bytes values are kept: they are immutable, so giving the same object to
    two callers is safe; a JSON value (a dict the caller may mutate) is decoded afresh every
    time. Bounded by ``budget`` bytes (oldest entries out first) and thread-safe.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._memo: OrderedDict[bytes, tuple[bytes, float | None]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        #: ``(value, expires_at)`` if these exact bytes were decoded before, else None: a bound
        #: C method, so hot loops pay no Python call (one dict read, atomic under the GIL).
        self.peek = self._memo.get

    def decode(self, data: bytes) -> tuple[Any, float | None]:
        """Same result as :func:`decode` (and the same :class:`DecodeError`)."""
        # One C-level dict lookup: atomic under the GIL, so readers need no lock.
        known = self.peek(data)
        if known is not None:
            return known
        value, expires_at = decode(data)
        if type(value) is bytes:
            self._keep(data, value, expires_at)
        return value, expires_at

    def _keep(self, data: bytes, value: bytes, expires_at: float | None) -> None:
        cost = len(data) + len(value) + _MEMO_OVERHEAD
        if cost > self.budget:
            return
        with self._lock:
            if data in self._memo:
                return
            self._memo[data] = (value, expires_at)
            self._used += cost
            while self._used > self.budget:
                old, (old_value, _) = self._memo.popitem(last=False)
                self._used -= len(old) + len(old_value) + _MEMO_OVERHEAD

    def clear(self) -> None:
        with self._lock:
            self._memo.clear()
            self._used = 0

    def __len__(self) -> int:
        return len(self._memo)
