"""Strategies and settings shared by the fuzz tests.

A long campaign: ``STRATACACHE_FUZZ_EXAMPLES=5000 pytest tests/fuzz --timeout=0`` (the suite's
120 s per-test timeout would otherwise cut it short).

Values are drawn the way trouble arrives in production: JSON from a provider (unicode of every
plane, lone surrogates from ``os.fsdecode`` or a ``"\\ud800"`` escape, NaN and infinities a
numpy pipeline let through, integers past 64 bits, digit runs that look like them), nested and
mixed. ``same`` compares the way a user would: exactly, types included, with NaN equal to NaN.
"""

from __future__ import annotations

import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property; ``STRATACACHE_FUZZ_EXAMPLES=5000`` runs a long campaign on demand.
EXAMPLES = int(os.environ.get("STRATACACHE_FUZZ_EXAMPLES", "100"))

settings.register_profile(
    "stratacache-fuzz",
    max_examples=EXAMPLES,
    deadline=None,  # a loaded 2-core CI box: wall-clock limits would only add flakiness
    print_blob=True,  # a CI failure prints the @reproduce_failure line to replay it
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("stratacache-fuzz")
#: For properties that write to disk (SQLite) or go through a whole framework per example.
FUZZ_IO = settings(FUZZ, max_examples=max(EXAMPLES // 3, 25))
#: For properties that revive through LiteLLM or LlamaIndex (pydantic validation per example).
FUZZ_FRAMEWORK = settings(FUZZ, max_examples=max(EXAMPLES // 10, 10))

#: Every code point, lone surrogates (category Cs) included.
any_char = st.characters(exclude_categories=())
tricky_text = st.sampled_from(
    [
        "",
        "\ud800",
        "\udfff",
        "a\udc80b",
        "\x00",
        "nul\x00inside",
        "é",
        "e\u0301",  # the same text as "é" after NFC
        "🎉",
        "\u2028\u2029",
        "12345678901234567890",  # a digit run a fast JSON parser would misread as a number
        "NaN",
        '{"lc": 1}',
        "\\ud800",
    ]
)
text = st.text(any_char, max_size=40) | tricky_text
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, 2.0**53 + 1]
)
ints = (
    st.integers()
    | st.integers(min_value=2**63 - 4, max_value=2**200)
    | st.integers(max_value=-(2**63) + 4, min_value=-(2**200))
)
scalars = st.none() | st.booleans() | ints | floats | text


def json_values(leaves: st.SearchStrategy[Any] = scalars, max_leaves: int = 30) -> Any:
    """JSON-compatible values: str keys, lists (tuples would come back as lists)."""
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(text, inner, max_size=6),
        max_leaves=max_leaves,
    )


def same(a: Any, b: Any) -> bool:
    """Equal as a user sees it: same types, same float bits (NaN equal to NaN, -0.0 not 0.0),
    same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def nested(depth: int, kind: str = "list") -> Any:
    """``[[[...]]]`` (or ``{"k": {"k": ...}}``) ``depth`` levels deep, built without recursion."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value
