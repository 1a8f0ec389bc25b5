"""LiteLLM integration: a multi-tier cache backend, stable keys, savings stats, rate limits.

::

    import stratacache.litellm as scl
    scl.install()                      # litellm.cache + stats callback; memory + disk, no server
    scl.install(cache, rate_limits={"gpt-4o-mini": {"rpm": 500, "tpm": 200_000}})
    scl.uninstall()                    # litellm exactly as before

Importing this module requires litellm (``pip install 'stratacache[litellm]'``) and imports
it (1-2 s); ``import stratacache`` alone never does. See ``docs/litellm.md``.
"""

from __future__ import annotations

import stratacache.integrations.litellm  # noqa: F401 - raises DependencyError without the extra
from stratacache.integrations.litellm.backend import CacheBackend
from stratacache.integrations.litellm.cache import LiteLLMCache
from stratacache.integrations.litellm.callbacks import RateLimitCallback, StatsCallback
from stratacache.integrations.litellm.install import Installation, current, install, uninstall

__all__ = [
    "CacheBackend",
    "Installation",
    "LiteLLMCache",
    "RateLimitCallback",
    "StatsCallback",
    "current",
    "install",
    "uninstall",
]
