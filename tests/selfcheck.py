"""Values that prove themselves: a reader can tell a genuine value from a torn or foreign one
without knowing what was written. Kept free of pytest so child processes import it fast."""

from __future__ import annotations

import hashlib
from typing import Any


def payload(key: str, n: int, size: int) -> bytes:
    """Incompressible bytes derived from ``(key, n, size)`` only."""
    head = f"{key}|{n}|{size}|".encode()
    return head + hashlib.shake_256(head).digest(size)


def genuine(key: str, value: Any) -> bool:
    """Is ``value`` exactly some ``payload(key, n, size)``?"""
    if not isinstance(value, bytes):
        return False
    try:
        k, n, size, _ = value.split(b"|", 3)
        return k.decode() == key and value == payload(key, int(n), int(size))
    except ValueError:
        return False
