"""Every exception stratacache raises on purpose.

::

    StrataCacheError                  base: catch this to catch everything of ours
    ├── ConfigurationError            a bad URL, option, size or TTL; raised at construction
    │   └── GraphCycleError           a run_graph task graph with a dependency cycle
    ├── SerializationError            a value that cannot be stored (not bytes / JSON-compatible)
    ├── DependencyError               an optional extra is not installed (names the extra)
    ├── RequestTooLargeError          one request needs more tokens than a minute's budget
    ├── RateLimitTimeout              the limiter could not grant a request within ``timeout``
    └── TierError                     a tier failed; internal, never reaches a cache caller

A failing tier is never an exception for the caller of a cache method: ``TierError`` is
raised inside the tier layer and turned into a miss by :class:`stratacache.TieredCache`.
It is public only so that third-party tiers can raise it.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DependencyError",
    "GraphCycleError",
    "RateLimitTimeout",
    "RequestTooLargeError",
    "SerializationError",
    "StrataCacheError",
    "TierError",
]


class StrataCacheError(Exception):
    """Base class of every stratacache exception."""


class ConfigurationError(StrataCacheError, ValueError):
    """The configuration cannot work; the message says what to change."""


class SerializationError(StrataCacheError, TypeError):
    """A value cannot be stored: only bytes and JSON-compatible values are accepted."""


class DependencyError(StrataCacheError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class TierError(StrataCacheError):
    """A tier could not serve a request (backend down, timeout, full disk, corrupt data)."""


def missing_extra(package: str, extra: str) -> DependencyError:
    """Build the error raised when an optional package is needed but not installed."""
    return DependencyError(
        f"{package} is required for this feature; install it with "
        f"`pip install 'stratacache[{extra}]'`"
    )


class RequestTooLargeError(StrataCacheError, ValueError):
    """One request needs more tokens than the limiter can ever grant; it would wait forever."""


class RateLimitTimeout(StrataCacheError, TimeoutError):
    """The rate limiter could not grant a request within the caller's ``timeout``."""


class GraphCycleError(ConfigurationError):
    """A task graph for ``stratacache.batching.run_graph`` has a dependency cycle."""
