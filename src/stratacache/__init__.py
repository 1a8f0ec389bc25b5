"""stratacache: multi-level, semantic and rate-limited caching for LLM pipelines.

The core is framework-free: importing it pulls in none of LangChain, LlamaIndex, LiteLLM,
redis or numpy. Integrations live in ``stratacache.langchain``, ``stratacache.llamaindex``
and ``stratacache.litellm`` and import their framework only when used.
"""

from __future__ import annotations

from stratacache._process_stats import stats
from stratacache.errors import (
    CacheClosedError,
    ConfigurationError,
    DependencyError,
    SerializationError,
    StrataCacheError,
    TierError,
    ValueTooLargeError,
)
from stratacache.keys import make_key
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS, Miss

__version__ = "0.1.0"

__all__ = [
    "MISS",
    "CacheClosedError",
    "ConfigurationError",
    "DependencyError",
    "Miss",
    "SerializationError",
    "StrataCacheError",
    "TierError",
    "TieredCache",
    "ValueTooLargeError",
    "make_key",
    "stats",
]
