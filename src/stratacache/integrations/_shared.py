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

__all__ = [
    "AdapterStats",
    "Tenant",
    "check_tenant",
    "default_cache",
    "kind_namespace",
    "resolve_tenant",
    "tenant_key",
    "tenant_scoped_key",
]

#: ``tenant=`` of every adapter that caches answers: who may share them. A string, or a
#: zero-argument callable asked on every call (e.g. reading a contextvar set per request);
#: None is the "no tenant" partition (a single-tenant app).
Tenant = str | Callable[[], Any] | None

#: Hex digits of sha256(tenant) in a tenant-scoped key: 128 bits.
_TENANT_CHARS = 32


def check_tenant(tenant: Any) -> Tenant:
    """``tenant`` itself when it is a valid ``tenant=`` argument; ConfigurationError if not."""
    if tenant is not None and not isinstance(tenant, str) and not callable(tenant):
        raise ConfigurationError(
            "tenant must be None, a str, or a zero-argument callable returning a str"
        )
    return tenant  # type: ignore[no-any-return]


def resolve_tenant(tenant: Tenant) -> str | None:
    """The tenant of this call: ``tenant``, or what the callable returns right now.

    Only ``str`` or None. ``str()`` of anything else is no stable name: a default ``repr``
    holds a memory address (a new tenant in every process, so nothing is ever shared), and a
    ``__str__`` showing a display name can give two tenants one partition.

    :raises ConfigurationError: the callable returned something else (whatever the callable
        itself raises propagates unchanged).
    """
    value = tenant() if callable(tenant) else tenant
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"tenant() returned {type(value).__name__}, not str or None: return a stable "
            "string id (e.g. str(user.org_id))"
        )
    return value


def tenant_key(key: str, tenant: str | None) -> str:
    """``key`` inside ``tenant``'s partition of the exact layer.

    Without a tenant the key is unchanged, so entries written before tenants existed (and by
    single-tenant apps) stay reachable. With one, a digest of the tenant is appended: keys of
    two tenants, or of a tenant and the no-tenant partition, can never be equal, and the
    tenant's name is not written into the shared tiers.
    """
    if tenant is None:
        return key
    mark = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:_TENANT_CHARS]
    return f"{key}:t:{mark}"


def tenant_scoped_key(key: str, tenant: Tenant, stats: AdapterStats) -> str | None:
    """:func:`tenant_key` for this call, or None (the call bypasses the cache, read and write)
    when the tenant cannot be had: without it, any partition we picked could be another
    tenant's. Counted as ``tenant_errors`` and logged once."""
    try:
        return tenant_key(key, resolve_tenant(tenant))
    except Exception as exc:
        stats.problem(
            "tenant_errors", "no tenant for this call, cache bypassed (%s: %s)",
            type(exc).__name__, exc,
        )  # fmt: skip
        return None


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
    # An adapter's write must never fail the user's chain: an answer that cannot be stored
    # (over max_value_bytes, ...) is skipped, counted and logged by the view instead.
    cache = cache._lenient()
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
