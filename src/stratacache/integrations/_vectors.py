"""Pieces every embedding adapter shares: vectors as float32 bytes, and what counts as a
plain (identity-defining) model setting.

Vectors are stored as raw float32 (4 bytes a dimension): decoding is one ``frombytes`` instead
of parsing JSON floats, and a vector holding NaN or infinity is refused, never stored.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

__all__ = ["EmbeddingPlan", "is_plain", "pack_vector", "unpack_vector"]


def pack_vector(vector: Any) -> bytes | None:
    """float32 bytes of ``vector``, or None when it is empty, not numeric or not finite."""
    try:
        packed = array("f", vector)
    except (TypeError, OverflowError):
        return None
    if not packed or not all(map(math.isfinite, packed)):
        return None
    return packed.tobytes()


def unpack_vector(data: Any) -> list[float] | None:
    """The vector stored by :func:`pack_vector`, or None for anything that is not one."""
    if not isinstance(data, bytes) or not data or len(data) % 4:
        return None
    values = array("f")
    values.frombytes(data)
    return values.tolist()


def is_plain(value: Any) -> bool:
    """JSON-like settings (no clients, callables or secrets objects) that may enter a key."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


class EmbeddingPlan:
    """Keys of one call and the unique texts the model still has to embed, in caller order."""

    __slots__ = ("keys", "missing", "vectors")

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.vectors: dict[str, list[float]] = {}
        self.missing: dict[str, str] = {}
