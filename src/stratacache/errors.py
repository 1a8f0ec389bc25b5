"""Every exception stratacache raises on purpose.

::

    StrataCacheError                  base: catch this to catch everything of ours
    ├── ConfigurationError            a bad URL, option, size or TTL; raised at construction
    │   └── GraphCycleError           a run_graph task graph with a dependency cycle
    ├── SerializationError            a value that cannot be stored (not bytes / JSON-compatible)
    ├── DependencyError               an optional extra is not installed (names the extra)
    ├── RequestTooLargeError          one request needs more tokens than a minute's budget
    ├── RateLimitTimeout              the limiter could not grant a request within ``timeout``
    ├── CacheClosedError              a cache (or tier) used after ``close()``
    └── TierError                     a tier failed; a miss for reads and writes, raised only
                                      by ``clear()`` when the invalidation did not reach a tier

A failing tier is never an exception for the caller of ``get``/``set``/``get_or_set``:
``TierError`` is raised inside the tier layer and turned into a miss by
:class:`stratacache.TieredCache`. ``clear()`` is the exception: it is an explicit admin action,
and a clear that did not reach a shared tier leaves other processes serving the old entries, so
it raises ``TierError`` naming the tier. It is public so that third-party tiers can raise it.
"""

from __future__ import annotations

__all__ = [
    "CacheClosedError",
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


class CacheClosedError(StrataCacheError, RuntimeError):
    """A cache or tier was used after ``close()``.

    Reconnecting silently would reopen connections that the caller meant to release (often at
    shutdown, after the event loop or the Redis server is gone), so this is an error.
    """


class GraphCycleError(ConfigurationError):
    """A task graph for ``stratacache.batching.run_graph`` has a dependency cycle."""
