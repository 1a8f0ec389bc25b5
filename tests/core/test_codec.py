from __future__ import annotations

import json
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stratacache as sc
from stratacache.codec import DecodeError, decode, encode, expires_at_of

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
