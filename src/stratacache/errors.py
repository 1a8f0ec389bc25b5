"""Every exception stratacache raises on purpose.

::

    StrataCacheError                  base: catch this to catch everything of ours
    ├── ConfigurationError            a bad URL, option, size or TTL; raised at construction
    │   └── GraphCycleError           a run_graph task graph with a dependency cycle
    ├── SerializationError            a value that cannot be stored (not bytes / JSON-compatible,
    │   │                             or nested too deeply)
    │   └── ValueTooLargeError        a value over the cache's ``max_value_bytes``
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
    "ValueTooLargeError",
]


class StrataCacheError(Exception):
    """Base class of every stratacache exception."""


class ConfigurationError(StrataCacheError, ValueError):
    """The configuration cannot work; the message says what to change."""


class SerializationError(StrataCacheError, TypeError):
    """A value cannot be stored: only bytes and JSON-compatible values are accepted."""


class ValueTooLargeError(SerializationError):
    """A value is over the cache's ``max_value_bytes`` (its serialized size, before compression).

    A SerializationError, because to the writer it is the same thing: this value cannot be
    stored, so code that already handles unstorable values handles this one too. The limit
    exists so that one huge value cannot evict a whole memory tier, stall a Redis connection or
    be refused by Redis half-way (its 512 MB bulk limit); readers apply the same limit, so an
    oversized (or decompression-bomb) entry in a shared tier is a miss, never a reader's crash.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


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
