from __future__ import annotations

import json
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stratacache as sc
from stratacache.codec import DecodeError, DecodeMemo, decode, encode, expires_at_of

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False)
    | st.integers(min_value=2**63 - 10, max_value=2**80),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip(value: Any) -> None:
    assert decode(encode(value))[0] == value


@given(st.binary(max_size=5000))
def test_bytes_round_trip_and_stay_bytes(value: bytes) -> None:
    decoded, expires = decode(encode(value, 123.5))
    assert decoded == value
    assert isinstance(decoded, bytes)
    assert expires == 123.5


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, [2**70, "12345678901234567890"], float("inf"), {"x": float("-inf")}],
)
def test_values_a_fast_parser_would_change_round_trip_exactly(value: Any) -> None:
    assert decode(encode(value))[0] == value
    assert type(decode(encode(value))[0]) is type(value)


def test_nan_round_trips() -> None:
    value = decode(encode({"x": float("nan")}))[0]
    assert value["x"] != value["x"]


def test_large_values_are_compressed() -> None:
    value = {"text": "lorem ipsum " * 10_000}
    data = encode(value, compress_threshold=1024)
    assert len(data) < len(json.dumps(value)) / 5
    assert decode(data)[0] == value
    assert expires_at_of(data) is None


def test_non_json_values_are_rejected() -> None:
    with pytest.raises(sc.SerializationError, match="JSON-compatible"):
        encode({"when": object()})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        pickle.dumps({"a": 1}),
        b"SC" + bytes(14),  # header of zeros: bad version
    ],
)
def test_foreign_bytes_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_bit_flip_is_detected() -> None:
    data = bytearray(encode({"answer": 42}))
    data[-2] ^= 0x01
    with pytest.raises(DecodeError, match="checksum"):
        decode(bytes(data))


def test_newer_version_is_rejected_not_misread() -> None:
    data = bytearray(encode("x"))
    struct.pack_into(">B", data, 2, 99)
    with pytest.raises(DecodeError, match="version 99"):
        decode(bytes(data))


# -- DecodeMemo: a decoding shortcut for in-process tiers ---------------------------------------


def test_decode_memo_gives_what_decode_gives() -> None:
    memo = DecodeMemo(1024**2)
    for value, expires in [(b"raw", None), (b"", 12.5), ({"a": [1]}, None), ("text", 3.0)]:
        data = encode(value, expires)
        assert memo.decode(data) == decode(data) == memo.decode(data)


def test_decode_memo_keeps_bytes_only_and_json_values_are_fresh() -> None:
    memo = DecodeMemo(1024**2)
    data = encode({"a": [1, 2]})
    first, _ = memo.decode(data)
    first["a"].append(3)  # a caller mutating its value
    assert memo.decode(data)[0] == {"a": [1, 2]}
    assert len(memo) == 0
    memo.decode(encode(b"immutable"))
    assert len(memo) == 1


def test_decode_memo_is_keyed_by_the_whole_envelope() -> None:
    """Same payload, other expiry (an overwrite with a new TTL): never the old expiry."""
    memo = DecodeMemo(1024**2)
    assert memo.decode(encode(b"v", 100.0)) == (b"v", 100.0)
    assert memo.decode(encode(b"v", 200.0)) == (b"v", 200.0)
    assert memo.decode(encode(b"w", 100.0)) == (b"w", 100.0)


def test_decode_memo_never_keeps_corrupt_entries() -> None:
    memo = DecodeMemo(1024**2)
    data = bytearray(encode(b"payload"))
    data[-1] ^= 0xFF
    for _ in range(2):
        with pytest.raises(DecodeError):
            memo.decode(bytes(data))
    assert len(memo) == 0


def test_decode_memo_is_bounded_oldest_out() -> None:
    memo = DecodeMemo(4 * 1024)
    envelopes = [encode(bytes([i]) * 500) for i in range(20)]
    for data in envelopes:
        memo.decode(data)
    assert 0 < len(memo) < 20
    assert memo._used <= memo.budget
    assert envelopes[-1] in memo._memo and envelopes[0] not in memo._memo
    memo.decode(encode(b"x" * 10_000))  # larger than the whole budget: decoded, not kept
    assert all(len(v) < 10_000 for v, _ in memo._memo.values())
    memo.clear()
    assert len(memo) == 0 and memo._used == 0


def test_decode_memo_threads() -> None:
    import threading

    memo = DecodeMemo(64 * 1024)  # small: threads evict each other's entries all the time
    envelopes = {i: encode(str(i).encode() * 50) for i in range(200)}
    errors: list[str] = []

    def work(offset: int) -> None:
        for n in range(2000):
            i = (n + offset) % 200
            value, _ = memo.decode(envelopes[i])
            if value != str(i).encode() * 50:
                errors.append(f"{i}: {value[:10]!r}")

    threads = [threading.Thread(target=work, args=(k * 37,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert memo._used <= memo.budget
