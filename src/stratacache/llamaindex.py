"""LlamaIndex integration: LLM, embedding and retriever caches, a KV store, a rate limiter.

::

    import stratacache.llamaindex as scli
    scli.install()                    # caches Settings.llm and Settings.embed_model

Importing this module requires llama-index-core (``pip install 'stratacache[llamaindex]'``);
``import stratacache`` alone never imports LlamaIndex. See ``docs/llamaindex.md``.
"""

from __future__ import annotations

import stratacache.integrations.llamaindex  # noqa: F401 - raises DependencyError without the extra
from stratacache.integrations.llamaindex.embedding import (
    CachedEmbedding,
    patch_embedding,
    unpatch_embedding,
)
from stratacache.integrations.llamaindex.events import CacheHitEvent, CacheMissEvent
from stratacache.integrations.llamaindex.install import install, installed, uninstall
from stratacache.integrations.llamaindex.kvstore import KVStore
from stratacache.integrations.llamaindex.llm import (
    CachedFunctionCallingLLM,
    CachedLLM,
    patch_llm,
    unpatch_llm,
)
from stratacache.integrations.llamaindex.ratelimit import RateLimiter
from stratacache.integrations.llamaindex.retriever import CachedRetriever

__all__ = [
    "CacheHitEvent",
    "CacheMissEvent",
    "CachedEmbedding",
    "CachedFunctionCallingLLM",
    "CachedLLM",
    "CachedRetriever",
    "KVStore",
    "RateLimiter",
    "install",
    "installed",
    "patch_embedding",
    "patch_llm",
    "uninstall",
    "unpatch_embedding",
    "unpatch_llm",
]
