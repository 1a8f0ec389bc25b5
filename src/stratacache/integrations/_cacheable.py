"""What no adapter may store, decided once for every framework.

An answer a safety system cut short (``content_filter``) or that the provider itself flags as
failed (``error``) is not the model's answer to the prompt: a retry may well get the real one,
and a cached copy would replay the failure to every later caller. Likewise a vector that is
not finite, empty, or not as long as the model's other vectors is a provider fault, and a
stored copy would silently corrupt every index built from the cache.

``finish_reason="length"`` is *not* refused: the answer is what the model gives for that
``max_tokens``, which is part of every key, so the same request deterministically gets it again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "REFUSED_FINISH_REASONS",
    "declared_dimensions",
    "finish_reasons",
    "refused_finish",
    "storable_vectors",
]

#: Finish reasons (compared lower-cased) that mark a filtered or failed answer, as OpenAI,
#: Azure, LangChain, litellm's mapping, Gemini (``SAFETY``...) and Bedrock spell them.
REFUSED_FINISH_REASONS: Final = frozenset(
    {
        "content_filter",
        "content_filtered",
        "error",
        "safety",
        "recitation",
        "blocklist",
        "prohibited_content",
        "spii",
        "guardrail_intervened",
        "malformed_function_call",
    }
)


def refused_finish(reasons: Iterable[Any]) -> str | None:
    """The first finish reason in ``reasons`` that makes an answer unstorable, else None."""
    for reason in reasons:
        if isinstance(reason, str) and reason.lower() in REFUSED_FINISH_REASONS:
            return reason
    return None


def finish_reasons(response: Any) -> list[Any] | None:
    """``finish_reason`` of every choice of an OpenAI-shaped response or stream chunk (an SDK
    object or a dict); None when ``response`` has no ``choices`` (not OpenAI-shaped)."""
    choices = (
        response.get("choices")
        if isinstance(response, Mapping)
        else getattr(response, "choices", None)
    )
    if not isinstance(choices, Sequence) or isinstance(choices, str | bytes):
        return None
    return [
        c.get("finish_reason") if isinstance(c, Mapping) else getattr(c, "finish_reason", None)
        for c in choices
    ]


def declared_dimensions(model: Any) -> int | None:
    """The vector length a model is configured to return (``dimensions=``), if it says."""
    dim = getattr(model, "dimensions", None)
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _length(vector: Any) -> int | None:
    try:
        return len(vector)
    except TypeError:
        return None


def _finite(vector: Any) -> bool:
    try:
        return all(math.isfinite(v) for v in vector)
    except TypeError:
        return False


def storable_vectors(vectors: Sequence[Any], dim: int | None = None) -> list[bool]:
    """Which vectors of one response may be stored: non-empty, finite, and of the right length.

    The right length is ``dim`` when the model declares one; otherwise the length every
    vector of the response shares. When they disagree nothing is stored: which one is the
    model's real dimension cannot be told from the response.
    """
    lengths = [_length(v) for v in vectors]
    if dim is None:
        sizes = {n for n in lengths if n}
        if len(sizes) != 1:
            return [False] * len(vectors)
        (dim,) = sizes
    return [n == dim and _finite(v) for n, v in zip(lengths, vectors, strict=True)]
