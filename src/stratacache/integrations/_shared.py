"""Helpers every framework adapter needs: one shared default cache, failures that stay quiet.

Adapters must never raise into the user's chain because of the cache, yet a silent cache is
undebuggable. So every adapter failure is counted and logged once per (adapter, kind) at
WARNING, then at DEBUG.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stratacache.errors import ConfigurationError

if TYPE_CHECKING:
    from stratacache.tiered import TieredCache

__all__ = ["AdapterStats", "Tenant", "check_tenant", "default_cache", "kind_namespace"]

#: ``tenant=`` of the semantic adapters: who may share semantic answers. A value, or a
#: zero-argument callable asked on every call (e.g. reading a contextvar); None is one tenant.
Tenant = str | Callable[[], Any] | None


def check_tenant(tenant: Any) -> Tenant:
    """``tenant`` itself when it is a valid ``tenant=`` argument; ConfigurationError if not."""
    if tenant is not None and not isinstance(tenant, str) and not callable(tenant):
        raise ConfigurationError(
            "tenant must be None, a str, or a zero-argument callable returning a str"
        )
    return tenant  # type: ignore[no-any-return]


logger = logging.getLogger("stratacache")

#: The longest namespace check_namespace() accepts.
_MAX_NAMESPACE = 64
#: Hex digits of sha256 kept when an adapter namespace is too long: 96 bits.
_DIGEST_CHARS = 24

_default: TieredCache | None = None
_default_lock = threading.Lock()


def default_cache() -> TieredCache:
    """The process-wide ``TieredCache.default()``, created on first use.

    Shared so that LLM, embedding and retriever adapters (and other frameworks' adapters) built
    without an explicit cache use one memory budget and one disk directory, not one each.
    """
    global _default
    cache = _default
    if cache is None:
        with _default_lock:
            if _default is None:
                from stratacache.tiered import TieredCache

                _default = TieredCache.default()
            cache = _default
    return cache


def kind_namespace(cache: TieredCache, kind: str, namespace: str | None) -> TieredCache:
    """A view of ``cache`` under the adapter's own namespace.

    Per-kind namespaces make ``clear()`` on one adapter leave the others' entries alone. A
    user namespace (``myapp``) is kept as a prefix (``myapp.lc-llm``) so apps sharing a Redis
    stay apart; an explicit ``namespace`` wins.

    Namespaces are at most 64 characters. Cutting ``<64-char base>.lc-llm`` to 64 would give
    back the base itself, and clearing the adapter would clear the user's own entries (and
    every other adapter's). So a name that does not fit keeps the kind and replaces the tail
    of the base by a digest of the full name: distinct inputs stay distinct.
    """
    if namespace:
        return cache.with_namespace(namespace)
    if cache.namespace in ("default", ""):
        return cache.with_namespace(kind)
    full = f"{cache.namespace}.{kind}"
    if len(full) <= _MAX_NAMESPACE:
        return cache.with_namespace(full)
    digest = hashlib.sha256(full.encode()).hexdigest()[:_DIGEST_CHARS]
    head = cache.namespace[: max(0, _MAX_NAMESPACE - len(kind) - _DIGEST_CHARS - 2)]
    return cache.with_namespace(f"{head}.{digest}.{kind}".lstrip("."))


class AdapterStats:
    """Counters of what an adapter did, plus the once-per-kind warning."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}
        self._warned: set[str] = set()

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def problem(self, what: str, message: str, *args: Any) -> None:
        """Count a problem that was turned into a miss or a skipped write; log it once."""
        self.count(what)
        if what in self._warned:
            logger.debug("stratacache %s: " + message, self.name, *args)
            return
        self._warned.add(what)
        logger.warning(
            "stratacache %s: " + message + " (served as a cache miss; further occurrences are "
            "logged at DEBUG and counted in .stats())",
            self.name,
            *args,
        )

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
