"""Workaround for litellm#42195: every cache hit crashes a plain ``pip install litellm``.

``litellm.caching.caching_handler._should_defer_streaming_cache_hit_callbacks`` runs on every
hit and imports the Anthropic pass-through cache module, which imports ``litellm.proxy`` and so
needs fastapi (the proxy extra). The replacement below performs the same ``isinstance`` test and
differs only when that import fails: a class whose module cannot be imported cannot have
instances, so leaving it out of the test changes no answer, it only removes the crash.

The patch is narrow on purpose. It is applied only when all of these hold:

* the installed litellm is in :data:`AFFECTED`, the range where the bug was verified (1.106.x
  run, up to 1.109.1 read); a newer litellm is left alone until it has been checked;
* the module still defines the function under that name, unchanged (not already patched);
* the import really fails in this environment (with fastapi installed nothing is patched).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "AFFECTED",
    "apply_hit_patch",
    "hit_patch_applied",
    "litellm_version",
    "revert_hit_patch",
]

log = logging.getLogger("stratacache")

#: ``[low, high)``: litellm versions whose cache-hit path imports the proxy unguarded.
AFFECTED: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 106, 0), (1, 110, 0))

_FUNC = "_should_defer_streaming_cache_hit_callbacks"
_ANTHROPIC_CACHE = "litellm.llms.anthropic.pass_through.messages.response_cache"
_original: Callable[..., bool] | None = None
_types: tuple[type, ...] | None = None


def litellm_version() -> tuple[int, ...]:
    """The installed litellm version as a tuple of ints (any pre-release suffix dropped)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", importlib.metadata.version("litellm"))
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def _proxy_import_fails() -> bool:
    try:
        importlib.import_module(_ANTHROPIC_CACHE)
    except ImportError:
        return True
    return False


def _stream_types() -> tuple[type, ...]:
    """The replay-iterator classes that exist here, resolved once: a failed import is retried
    by Python on every attempt (hundreds of µs), which would land on every cache hit."""
    global _types
    if _types is None:
        from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

        found: list[type] = [CustomStreamWrapper]
        try:
            from litellm.responses.streaming_iterator import BaseResponsesAPIStreamingIterator

            found.append(BaseResponsesAPIStreamingIterator)
        except ImportError:
            pass
        try:
            module = importlib.import_module(_ANTHROPIC_CACHE)
            found.append(module.CachedAnthropicMessagesStreamIterator)
        except ImportError:
            pass  # its class cannot exist in this process, so no cached result is one
        _types = tuple(found)
    return _types


def _safe_should_defer(*, cached_result: object) -> bool:
    return isinstance(cached_result, _stream_types())


def hit_patch_applied() -> bool:
    import litellm.caching.caching_handler as handler

    return getattr(handler, _FUNC, None) is _safe_should_defer


def apply_hit_patch() -> bool:
    """Install the workaround if this environment needs it; True if this call installed it."""
    global _original
    import litellm.caching.caching_handler as handler

    low, high = AFFECTED
    if not low <= litellm_version() < high:
        return False
    current: Any = getattr(handler, _FUNC, None)
    if current is None or current is _safe_should_defer or current.__name__ != _FUNC:
        return False
    if not _proxy_import_fails():
        return False
    _original = current
    setattr(handler, _FUNC, _safe_should_defer)
    log.info(
        "stratacache: patched litellm %s cache hits to work without fastapi (litellm#42195)",
        ".".join(map(str, litellm_version())),
    )
    return True


def revert_hit_patch() -> None:
    """Put litellm's own function back (only if ours is the one installed)."""
    global _original
    import litellm.caching.caching_handler as handler

    if _original is not None and getattr(handler, _FUNC, None) is _safe_should_defer:
        setattr(handler, _FUNC, _original)
    _original = None
