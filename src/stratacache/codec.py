"""The stored form of a value: a small versioned envelope, never pickle.

Tiers only ever see bytes. Every stored value is wrapped as::

    b"SC" | version:u8 | flags:u8 | expires_at:f64 | crc32:u32 | payload

The crc32 covers version, flags and expiry as well as the payload (version 2; version 1
entries, whose crc covered the payload only, are still read): a flipped flag bit would
otherwise hand back a dict's JSON text as bytes, and a flipped expiry bit could make an
entry immortal.
``expires_at`` (wall-clock seconds, 0 = never) travels with the value so that a hit in a slow
tier can be promoted into a faster one with exactly the time it has left, whatever the tier.
The crc32 catches truncated or bit-flipped entries; the magic and version catch foreign data
(another program's keys in a shared Redis). Anything that fails to decode is a miss that the
caller deletes, never an exception and never an unpickle: in a shared Redis, unpickling stored
bytes would be remote code execution.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from stratacache.errors import SerializationError, TierError, ValueTooLargeError

__all__ = ["CODEC_VERSION", "DecodeError", "DecodeMemo", "decode", "encode", "expires_at_of"]

CODEC_VERSION: Final = 2
#: Entries of this version are still read: their crc32 covers the payload only.
_LEGACY_VERSION: Final = 1
_MAGIC: Final = b"SC"
_HEADER = struct.Struct(">2sBBdI")
#: The header fields the crc32 covers (version, flags, expires_at), and where they are.
_CHECKED_FIELDS = struct.Struct(">BBd")
_CHECKED = slice(2, 2 + _CHECKED_FIELDS.size)
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
    max_size: int | None = None,
) -> bytes:
    """Wrap ``value`` (bytes or JSON-compatible) in an envelope.

    Strings holding lone surrogates (``os.fsdecode`` of a non-UTF-8 file name, a JSON
    ``"\\ud800"`` escape) are kept exactly: they travel as JSON ``\\u`` escapes. ``max_size``
    bounds the serialized value before compression: compression does not change what a reader
    must hold in memory.

    :raises SerializationError: if the value is neither bytes nor JSON-compatible, or is nested
        too deeply for the JSON encoder (a RecursionError would otherwise reach the caller).
    :raises ValueTooLargeError: if the serialized value is over ``max_size`` bytes.
    """
    flags = 0
    if isinstance(value, bytes | bytearray | memoryview):
        payload = bytes(value)
        flags |= _FLAG_BYTES
    else:
        try:
            payload, plain = _json_payload(value)
        except RecursionError as exc:
            raise SerializationError(
                f"cannot store a {type(value).__name__!r}: it is nested too deeply to encode"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot store a {type(value).__name__!r}: values must be bytes or "
                f"JSON-compatible (str, int, float, bool, None, lists, dicts) ({exc})"
            ) from exc
        if plain and _LONG_RUN not in payload.translate(_DIGITS_TO_ZERO):
            flags |= _FLAG_PLAIN_JSON
    if max_size is not None and len(payload) > max_size:
        raise ValueTooLargeError(
            f"a {type(value).__name__!r} value of {len(payload)} bytes is over the "
            f"max_value_bytes limit of {max_size} bytes; it was not stored",
            size=len(payload),
            limit=max_size,
        )
    if compress_threshold and len(payload) >= compress_threshold:
        packed = zlib.compress(payload, 1)
        if len(packed) < len(payload):
            payload = packed
            flags |= _FLAG_ZLIB
    expires = expires_at or 0.0
    crc = zlib.crc32(payload, zlib.crc32(_CHECKED_FIELDS.pack(CODEC_VERSION, flags, expires)))
    return _HEADER.pack(_MAGIC, CODEC_VERSION, flags, expires, crc) + payload


def _json_payload(value: Any) -> tuple[bytes, bool]:
    """The JSON bytes of ``value`` and whether orjson may decode them (see _FLAG_PLAIN_JSON).

    The common case is one ``json.dumps``; NaN/Infinity and lone surrogates take a second one
    that keeps them, in a form only the standard json module reads back exactly.
    """
    plain = True
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity: keep them, decode with json
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        plain = False
    try:
        return text.encode(), plain
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; as a \u escape json.loads gives back the very
        # same str (orjson refuses it, hence not plain).
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode(), False


def expires_at_of(data: bytes) -> float | None:
    """The absolute expiry stored in an envelope, without decoding the payload."""
    if len(data) < _HEADER.size:
        raise DecodeError("entry shorter than the envelope header")
    expires_at = _HEADER.unpack_from(data)[3]
    return expires_at or None


def decode(data: bytes, max_size: int | None = None) -> tuple[Any, float | None]:
    """Unwrap an envelope into ``(value, expires_at)``.

    ``max_size`` bounds the serialized value after decompression, so a small crafted entry in
    a shared tier (a zlib bomb inflating 1000-fold) cannot exhaust the reader's memory.

    :raises DecodeError: for anything that is not an intact envelope of a known version, or
        whose value is over ``max_size`` bytes or nested too deeply to parse.
    """
    if len(data) < _HEADER.size:
        raise DecodeError("entry shorter than the envelope header")
    magic, version, flags, expires_at, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise DecodeError("not a stratacache entry (bad magic)")
    payload = data[_HEADER.size :]
    if version == CODEC_VERSION:
        expected = zlib.crc32(payload, zlib.crc32(data[_CHECKED]))
    elif version == _LEGACY_VERSION:
        expected = zlib.crc32(payload)
    else:
        raise DecodeError(f"entry written by codec version {version}, this is {CODEC_VERSION}")
    if expected != crc:
        raise DecodeError("checksum mismatch (corrupt entry)")
    if not 0.0 <= expires_at < math.inf:  # NaN too: it would never expire, nor promote
        raise DecodeError(f"unusable expiry {expires_at!r}")
    global _orjson_loads
    try:
        raw = _inflate(payload, max_size) if flags & _FLAG_ZLIB else payload
        if max_size is not None and len(raw) > max_size:
            raise DecodeError(f"value of {len(raw)} bytes is over the limit of {max_size}")
        if flags & _FLAG_BYTES:
            value: Any = raw
        elif flags & _FLAG_PLAIN_JSON:
            if _orjson_loads is None:
                _orjson_loads = _fast_loads()
            value = _orjson_loads(raw)
        else:
            value = json.loads(raw)
    except (zlib.error, ValueError) as exc:  # UnicodeDecodeError and orjson's errors included
        raise DecodeError(f"undecodable payload: {exc}") from exc
    except RecursionError as exc:  # json.loads of deep nesting: a miss, not the reader's crash
        raise DecodeError("payload nested too deeply to decode") from exc
    return value, expires_at or None


def _inflate(payload: bytes, max_size: int | None) -> bytes:
    if max_size is None:
        return zlib.decompress(payload)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(payload, max_size + 1)
    if len(raw) > max_size:
        raise DecodeError(f"value inflates to more than the limit of {max_size} bytes")
    if not inflater.eof:
        raise DecodeError("undecodable payload: truncated zlib stream")
    return raw


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

    def decode(self, data: bytes, max_size: int | None = None) -> tuple[Any, float | None]:
        """Same result as :func:`decode` (and the same :class:`DecodeError`).

        ``max_size`` is applied when the bytes are first decoded; the memo only ever holds
        values below its own budget, far below any sensible limit.
        """
        # One C-level dict lookup: atomic under the GIL, so readers need no lock.
        known = self.peek(data)
        if known is not None:
            return known
        value, expires_at = decode(data, max_size)
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
