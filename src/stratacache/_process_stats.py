"""``stratacache.stats()``: what caching did for this process, across every cache."""

from __future__ import annotations

from typing import Any

from stratacache._stats import GLOBAL_SAVINGS
from stratacache.tiered import live_caches

__all__ = ["stats"]


def stats() -> dict[str, Any]:
    """Process-wide totals: cache requests served and missed, tier errors, and (from the
    framework integrations) LLM calls, tokens, cost and latency that hits saved."""
    caches = live_caches()
    totals: dict[str, Any] = {"caches": len(caches), "hits": 0, "misses": 0, "tier_errors": 0}
    for cache in caches:
        summary = cache.stats()
        totals["hits"] += summary["hits"]
        totals["misses"] += summary["misses"]
        totals["tier_errors"] += sum(t["errors"] for t in summary["tiers"])
    totals.update(GLOBAL_SAVINGS.summary())
    return totals
