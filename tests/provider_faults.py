"""What the three ``test_never_cached`` modules share: how a fault is injected into the loopback
provider, and how many answers a cache holds afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import stratacache as sc
    from stratacache.testing import OpenAICompatServer

#: How long the client waits in the timeout case, and how long the provider makes it wait.
CLIENT_TIMEOUT, SERVER_DELAY = 0.1, 1.5


def entries(cache: sc.TieredCache) -> int:
    """Entries in the memory tier, but for the semantic journal's epoch marker (``je``), which
    the semantic layer's first lookup writes: bookkeeping, not an answer."""
    return len([k for k in cache.tiers[0].scan("") if not k.endswith(":k:je")])


def inject(server: OpenAICompatServer, fault: str | int) -> None:
    """An HTTP status, ``"timeout"`` (a reply slower than CLIENT_TIMEOUT), or a Defect."""
    if isinstance(fault, int):
        server.fail_next(1, status=fault)
    elif fault == "timeout":
        server.misbehave_next("slow", delay=SERVER_DELAY)
    else:
        server.misbehave_next(fault)  # type: ignore[arg-type]
