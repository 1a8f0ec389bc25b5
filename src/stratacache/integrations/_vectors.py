"""Pieces every embedding adapter shares: vectors as float32 bytes, and what counts as a
plain (identity-defining) model setting.

Vectors are stored as raw float32 (4 bytes a dimension): decoding is one ``frombytes`` instead
of parsing JSON floats, and a vector holding NaN or infinity is refused, never stored.
"""

from __future__ import annotations

import hashlib
import math
import threading
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, Final

from stratacache.integrations._cacheable import storable_vectors

__all__ = [
    "EmbeddingPlan",
    "TextKeys",
    "VectorMemo",
    "is_plain",
    "pack_vector",
    "unpack_vector",
]

#: Bookkeeping per memo entry (dict slot, tuple or key string header), counted in budgets.
_ENTRY_OVERHEAD: Final = 120


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


class KeyBook:
    """One :class:`TextKeys` per kind of text (documents, queries), rebuilt when the model
    identity changes, e.g. a user assigning ``model_id`` after construction."""

    def __init__(self) -> None:
        self._books: dict[str, TextKeys] = {}

    def get(self, model_id: str, kind: str) -> TextKeys:
        prefix = f"{model_id}:{kind}:"
        keys = self._books.get(kind)
        if keys is None or keys.prefix != prefix:
            keys = self._books[kind] = TextKeys(prefix)
        return keys


class TextKeys:
    """Cache keys of texts, ``<prefix><blake2b-128 of the text>``, remembered per text.

    A key is a pure function of the prefix (model identity and kind) and the text, so a memo
    keyed by the text's content can never give a wrong key; it saves hashing a text again on
    every warm call (~0.3 µs a text, most of a memory hit). Bounded by ``budget`` bytes of text
    (dropped at once when full) and safe to share between threads (a lookup is one dict read;
    a write replaces a whole entry).
    """

    def __init__(self, prefix: str, budget: int = 8 * 1024**2) -> None:
        self.prefix = prefix
        self.budget = budget
        self._memo: dict[str, str] = {}
        self._used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with its adapter (worker processes): the settings travel, the memo does not.
        return {"prefix": self.prefix, "budget": self.budget}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["prefix"], state["budget"])  # type: ignore[misc]

    def key(self, text: str) -> str:
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return self.prefix + h

    def keys(self, texts: Sequence[str]) -> list[str]:
        memo = self._memo
        out = []
        for text in texts:
            key = memo.get(text) if type(text) is str else None
            if key is None:
                key = self.key(text)
                if type(text) is str:
                    self._remember(text, key)
            out.append(key)
        return out

    def _remember(self, text: str, key: str) -> None:
        cost = len(text) + len(key) + _ENTRY_OVERHEAD
        if cost > self.budget:
            return
        with self._lock:
            if self._used + cost > self.budget:
                self._memo.clear()
                self._used = 0
            self._memo[text] = key
            self._used += cost


class EmbeddingPlan:
    """Keys of one call and the unique texts the model still has to embed, in caller order."""

    __slots__ = ("keys", "missing", "vectors")

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.vectors: dict[str, list[float]] = {}
        self.missing: dict[str, str] = {}

    def result(self) -> list[list[float]]:
        """Vectors in caller order; a repeated text gets its own list (callers may mutate)."""
        vectors = self.vectors
        if len(vectors) == len(self.keys):  # no text twice: every list is already its own
            return [vectors[key] for key in self.keys]
        seen: set[str] = set()
        out = []
        for key in self.keys:
            vec = vectors[key]
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
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with its adapter (worker processes): the budget travels, the memo does not.
        return {"budget": self.budget}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["budget"])  # type: ignore[misc]

    @staticmethod
    def _cost(vec: list[float]) -> int:
        return 32 * len(vec) + 200  # a Python float is 24 bytes plus its 8-byte slot

    def remember(self, key: str, data: bytes, vec: list[float]) -> None:
        if not self.budget:
            return
        cost = self._cost(vec)
        entry = (data, list(vec))
        with self._lock:
            old = self._memo.get(key)
            if old is not None:
                self._used -= self._cost(old[1])
            if self._used + cost > self.budget:
                self._memo.clear()
                self._used = 0
            self._memo[key] = entry
            self._used += cost

    def absorb(self, plan: EmbeddingPlan, texts: Sequence[str], found: Mapping[str, Any]) -> int:
        """Decode the hits into ``plan.vectors`` and list the unique misses in ``plan.missing``
        (caller order); returns how many cached entries were unusable."""
        bad = 0
        memo = self._memo
        vectors = plan.vectors
        for key, data in found.items():
            known = memo.get(key)
            # Equal bytes decode to equal floats; usually the very same object (identity).
            if known is not None and known[0] == data:
                vectors[key] = known[1][:]
                continue
            vec = unpack_vector(data)
            if vec is None:
                bad += 1
            else:
                vectors[key] = vec
                self.remember(key, data, vec)
        if len(vectors) < len(plan.keys):
            missing = plan.missing
            for key, text in zip(plan.keys, texts, strict=True):
                if key not in vectors and key not in missing:
                    missing[key] = text
        return bad

    def take(
        self,
        plan: EmbeddingPlan,
        pairs: list[tuple[str, str]],
        vectors: Any,
        model: str,
        dim: int | None = None,
    ) -> tuple[dict[str, bytes], int]:
        """Record the model's fresh vectors (float32-rounded, so cold and warm calls return
        the same numbers); returns the entries to store and how many vectors were unstorable
        (empty, not finite, or not ``dim`` long, see ``storable_vectors``).

        :raises ValueError: when the model returned the wrong number of vectors.
        """
        if not isinstance(vectors, list) or len(vectors) != len(pairs):
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise ValueError(f"{model} returned {got} embeddings for {len(pairs)} texts")
        store: dict[str, bytes] = {}
        skipped = 0
        verdicts = storable_vectors(vectors, dim)
        for (key, _), vec, ok in zip(pairs, vectors, verdicts, strict=True):
            packed = pack_vector(vec) if ok else None
            if packed is None:
                skipped += 1
                plan.vectors[key] = list(vec) if isinstance(vec, list | tuple) else vec
                continue
            store[key] = packed
            plan.vectors[key] = fresh = array("f", vec).tolist()
            self.remember(key, packed, fresh)
        return store, skipped
