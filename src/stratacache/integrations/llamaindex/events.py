"""Instrumentation events for cache hits and misses.

LlamaIndex's instrumentation is observe-only, so these events never steer anything; they let
the observability tools users already attach (Arize, Langfuse, a custom ``BaseEventHandler``)
see which calls the cache served. A hit produces no ``LLMChatStartEvent``/``EndEvent`` (the
provider was not called), so without these events a hit would be invisible.
"""

from __future__ import annotations

import contextlib
from typing import Any

from llama_index.core.instrumentation.events import BaseEvent
from llama_index_instrumentation import get_dispatcher

__all__ = ["CacheHitEvent", "CacheMissEvent", "emit"]

dispatcher = get_dispatcher("stratacache")


class CacheHitEvent(BaseEvent):
    """Served from stratacache: ``kind`` is ``llm``, ``embedding`` or ``retriever``.

    ``count`` is the number of items served (texts for embeddings, 1 otherwise); ``tokens`` the
    usage the provider reported when the entry was stored, if any.
    """

    kind: str
    method: str
    key: str | None = None
    count: int = 1
    tokens: int | None = None

    @classmethod
    def class_name(cls) -> str:
        return "StrataCacheHitEvent"


class CacheMissEvent(BaseEvent):
    """Not in the cache: the wrapped component was called (``count`` items)."""

    kind: str
    method: str
    key: str | None = None
    count: int = 1

    @classmethod
    def class_name(cls) -> str:
        return "StrataCacheMissEvent"


def emit(event_cls: type[BaseEvent], **fields: Any) -> None:
    """Dispatch an event; a broken handler must never break a cached call."""
    with contextlib.suppress(Exception):
        dispatcher.event(event_cls(**fields))
