"""Pieces every embedding adapter shares: vectors as float32 bytes, and what counts as a
plain (identity-defining) model setting.

Vectors are stored as raw float32 (4 bytes a dimension): decoding is one ``frombytes`` instead
of parsing JSON floats, and a vector holding NaN or infinity is refused, never stored.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EmbeddingPlan", "VectorMemo", "is_plain", "pack_vector", "unpack_vector"]


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

    def result(self) -> list[list[float]]:
        """Vectors in caller order; a repeated text gets its own list (callers may mutate)."""
        seen: set[str] = set()
        out = []
        for key in self.keys:
            vec = self.vectors[key]
            if key in seen:
                vec = list(vec)
            seen.add(key)
            out.append(vec)
        return out


class VectorMemo:
    """Decoded vectors of recent hits, checked against the bytes the cache returned.

    Turning 384 float32 into Python floats costs ~10-20 µs; copying a decoded list ~1 µs. The
    memo is only a decoding shortcut: every lookup still goes to the cache, and an entry is used
    only while the cache returns the very bytes it was decoded from, so TTL, ``clear()`` and
    other processes' writes behave exactly as without it. ``budget`` is in bytes (0: off).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._memo: dict[str, tuple[bytes, list[float]]] = {}
        self._used = 0

    def remember(self, key: str, data: bytes, vec: list[float]) -> None:
        if not self.budget:
            return
        cost = 32 * len(vec) + 200  # a Python float is 24 bytes plus its 8-byte slot
        if self._used + cost > self.budget:
            self._memo.clear()
            self._used = 0
        self._memo[key] = (data, list(vec))
        self._used += cost

    def absorb(self, plan: EmbeddingPlan, texts: Sequence[str], found: Mapping[str, Any]) -> int:
        """Decode the hits into ``plan.vectors`` and list the unique misses in ``plan.missing``
        (caller order); returns how many cached entries were unusable."""
        bad = 0
        for key, data in found.items():
            known = self._memo.get(key)
            if known is not None and known[0] == data:
                plan.vectors[key] = list(known[1])
                continue
            vec = unpack_vector(data)
            if vec is None:
                bad += 1
            else:
                plan.vectors[key] = vec
                self.remember(key, data, vec)
        for key, text in zip(plan.keys, texts, strict=True):
            if key not in plan.vectors and key not in plan.missing:
                plan.missing[key] = text
        return bad

    def take(
        self, plan: EmbeddingPlan, pairs: list[tuple[str, str]], vectors: Any, model: str
    ) -> tuple[dict[str, bytes], int]:
        """Record the model's fresh vectors (float32-rounded, so cold and warm calls return
        the same numbers); returns the entries to store and how many vectors were unstorable.

        :raises ValueError: when the model returned the wrong number of vectors.
        """
        if not isinstance(vectors, list) or len(vectors) != len(pairs):
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise ValueError(f"{model} returned {got} embeddings for {len(pairs)} texts")
        store: dict[str, bytes] = {}
        skipped = 0
        for (key, _), vec in zip(pairs, vectors, strict=True):
            packed = pack_vector(vec)
            if packed is None:
                skipped += 1
                plan.vectors[key] = list(vec) if isinstance(vec, list | tuple) else vec
                continue
            store[key] = packed
            plan.vectors[key] = fresh = array("f", vec).tolist()
            self.remember(key, packed, fresh)
        return store, skipped
