"""``install()`` / ``uninstall()``: the one-liner, and an exact way back.

litellm's configuration is module-global: ``litellm.cache`` plus nine callback lists that
``litellm.Cache(...)`` and litellm's ``function_setup`` fill as a side effect. ``install``
records what it changes (the previous ``litellm.cache``, which lists lacked the ``"cache"``
marker, our callback objects, whether it applied the litellm#42195 patch) and ``uninstall``
undoes exactly that, leaving anything the user added in between alone. Installing again
replaces our configuration but keeps the first snapshot, so one ``uninstall`` always restores
the state from before the first ``install``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import litellm

from stratacache.errors import ConfigurationError
from stratacache.integrations._shared import Tenant, check_tenant
from stratacache.integrations.litellm._compat import apply_hit_patch, revert_hit_patch
from stratacache.integrations.litellm.cache import LiteLLMCache
from stratacache.integrations.litellm.callbacks import RateLimitCallback, StatsCallback
from stratacache.ratelimit import RateLimiter
from stratacache.semantic import SemanticCache, Verifier
from stratacache.tiered import TieredCache

__all__ = ["CALLBACK_LISTS", "Installation", "current", "install", "uninstall"]

#: Every litellm module attribute holding callbacks (as of 1.106).
CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "service_callback",
    "audit_log_callbacks",
    "_async_input_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@dataclass
class Installation:
    """What :func:`install` set up; returned to the caller and kept for :func:`uninstall`."""

    cache: LiteLLMCache
    stats: StatsCallback
    rate_limit: RateLimitCallback | None = None
    previous_cache: Any = None
    missing_marker: list[str] = field(default_factory=list)
    patched: bool = False
    #: the semantic layer (``install(semantic=...)``), also ``cache.semantic``
    semantic: SemanticCache | None = None

    def callbacks(self) -> list[Any]:
        # Only the rate limiter is registered with litellm. Stats are fed by the cache's own
        # lookups: any CustomLogger in litellm.callbacks makes litellm build its logging payload
        # for every call, which measured ~1-2 ms per cache hit on this project's CI machine,
        # doubling what a hit costs.
        return [self.rate_limit] if self.rate_limit is not None else []


_lock = threading.Lock()
_installed: Installation | None = None


def current() -> Installation | None:
    """The active installation, if any."""
    return _installed


def _lists() -> list[list[Any]]:
    return [lst for name in CALLBACK_LISTS if isinstance(lst := getattr(litellm, name, None), list)]


def _remove(objects: list[Any]) -> None:
    for lst in _lists():
        lst[:] = [item for item in lst if not any(item is obj for obj in objects)]


def install(
    cache: TieredCache | None = None,
    semantic: bool | SemanticCache = False,
    rate_limits: Mapping[str, Mapping[str, float] | RateLimiter] | None = None,
    redis_url: str | None = None,
    *,
    ttl: float | None = None,
    namespace: str | None = None,
    max_messages: int | None = None,
    embedder: Any = None,
    threshold: float | None = None,
    error_budget: float = 0.02,
    verifier: Verifier | None = None,
    tenant: Tenant = None,
    **cache_options: Any,
) -> Installation:
    """Make every litellm call in this process use stratacache.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()`` (memory + disk).
    :param semantic: True to also serve chat requests whose last user message asks the same
        thing in other words (after an exact miss, within the same model, parameters, earlier
        turns and tenant; docs/litellm.md), or a ready
        :class:`~stratacache.semantic.SemanticCache`.
    :param embedder: / :param threshold: / :param error_budget: / :param verifier: passed to the
        :class:`~stratacache.semantic.SemanticCache` built for ``semantic=True`` (default
        embedder: the offline :class:`~stratacache.semantic.LocalEmbedder`).
    :param tenant: who may share answers, exact and semantic: a string or a zero-argument
        callable evaluated per call (e.g. reading a contextvar). The request's own ``user``
        and proxy key/team/org/end-user ids partition entries as well (docs/litellm.md).
    :param rate_limits: per-model RPM/TPM, e.g. ``{"gpt-4o-mini": {"rpm": 500, "tpm": 200_000}}``.
    :param redis_url: share the rate limits across processes through this Redis.
    :param ttl: default entry lifetime in seconds (per-call ``cache={"ttl": n}`` wins).
    :param namespace: the stratacache namespace of the entries (default ``litellm``).
    :param max_messages: litellm's cached-conversation-length limit; None (no limit).
    :param cache_options: any other ``litellm.Cache`` argument (``mode``, ``supported_call_types``).
    """
    global _installed
    sem = _semantic(
        semantic, cache, namespace, embedder=embedder, threshold=threshold,
        error_budget=error_budget, verifier=verifier, tenant=tenant,
    )  # fmt: skip
    with _lock:
        previous = _installed
        if previous is not None:
            _remove(previous.callbacks())
            if previous.rate_limit is not None:
                previous.rate_limit.close()
            previous_cache = previous.previous_cache
            missing = previous.missing_marker
            patched = previous.patched
        else:
            previous_cache = litellm.cache
            missing = [
                name
                for name in ("input_callback", "success_callback", "_async_success_callback")
                if "cache" not in getattr(litellm, name)
            ]
            patched = False
        patched = apply_hit_patch() or patched
        built = LiteLLMCache(
            cache, ttl=ttl, namespace=namespace, max_messages=max_messages, semantic=sem,
            tenant=tenant, **cache_options,
        )  # fmt: skip
        installation = Installation(
            cache=built,
            stats=StatsCallback(),
            rate_limit=RateLimitCallback(rate_limits, redis_url) if rate_limits else None,
            previous_cache=previous_cache,
            missing_marker=missing,
            patched=patched,
            semantic=sem,
        )
        built.on_lookup = installation.stats.record_lookup
        litellm.cache = built
        for callback in installation.callbacks():
            litellm.logging_callback_manager.add_litellm_callback(callback)
        _installed = installation
        return installation


def _semantic(
    semantic: bool | SemanticCache,
    cache: TieredCache | None,
    namespace: str | None,
    *,
    embedder: Any,
    threshold: float | None,
    error_budget: float,
    verifier: Verifier | None,
    tenant: Tenant,
) -> SemanticCache | None:
    """The semantic layer ``install`` was asked for; ConfigurationError for bad arguments."""
    check_tenant(tenant)
    if isinstance(semantic, SemanticCache):
        return semantic
    if semantic is False or semantic is None:
        tuning = embedder is not None or threshold is not None or verifier is not None
        if tuning or error_budget != 0.02:
            raise ConfigurationError(
                "embedder=, threshold=, error_budget= and verifier= configure the semantic "
                "layer: pass semantic=True with them"
            )
        return None
    if semantic is not True:
        raise ConfigurationError(
            f"semantic must be True, False or a SemanticCache, got {type(semantic).__name__}"
        )
    return SemanticCache(
        embedder, cache, threshold, error_budget, verifier=verifier,
        namespace=f"{namespace}.semantic" if namespace else None,
    )  # fmt: skip


def uninstall() -> None:
    """Undo :func:`install`: previous ``litellm.cache``, callback lists and patch restored."""
    global _installed
    with _lock:
        installation = _installed
        if installation is None:
            return
        _remove(installation.callbacks())
        for name in installation.missing_marker:
            lst = getattr(litellm, name)
            while "cache" in lst:
                lst.remove("cache")
        litellm.cache = installation.previous_cache
        if installation.patched:
            revert_hit_patch()
        if installation.rate_limit is not None:
            installation.rate_limit.close()
        _installed = None
