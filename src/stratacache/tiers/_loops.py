"""Async clients that belong to one event loop and are closed when that loop shuts down.

redis-py's asyncio connections are bound to the loop that opened them, so a tier (or the rate
limiter's Redis budget) needs one client per loop. Every ``asyncio.run`` makes a new loop; if
nothing closes the old loop's client its connection pool stays open for the life of the
process, one more per ``asyncio.run``. Loops give no "on close" callback, but the standard
runners (``asyncio.run``, ``asyncio.Runner``) close every live async generator of the loop
before closing it. So each client is paired with a started async generator whose ``finally``
closes it: the client goes away with its loop. Loops closed without that shutdown step are
dropped on the next lookup, so at least their references do not accumulate.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["LoopClients"]

C = TypeVar("C")


class LoopClients(Generic[C]):
    """One client per running event loop, built by ``factory`` and closed by ``closer``."""

    def __init__(self, factory: Callable[[], C], closer: Callable[[C], Awaitable[None]]) -> None:
        self._factory = factory
        self._closer = closer
        self._lock = threading.Lock()
        self._entries: dict[asyncio.AbstractEventLoop, tuple[C, AsyncGenerator[None, None]]] = {}

    def get(self) -> C:
        """The running loop's client, created on first use."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None:
            return entry[0]
        client = self._factory()
        guard = self._guard(loop, client)
        # Run the guard up to its ``yield``: from now on the loop tracks it (firstiter hook)
        # and its shutdown_asyncgens() step runs the ``finally`` that closes the client.
        step: Any = guard.__anext__()
        with contextlib.suppress(StopIteration):  # it stops at once: the guard yields first
            step.send(None)
        with self._lock:
            for old in [lp for lp in self._entries if lp.is_closed()]:
                del self._entries[old]
            self._entries[loop] = (client, guard)
        return client

    async def _guard(
        self, loop: asyncio.AbstractEventLoop, client: C
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if loop in self._entries and self._entries[loop][0] is client:
                    del self._entries[loop]
            await self._closer(client)

    async def aclose(self) -> None:
        """Close the running loop's client now (the others close with their loops)."""
        with self._lock:
            entry = self._entries.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()

    def forget_closed(self) -> None:
        """Drop clients whose loop was closed without shutting down its async generators."""
        with self._lock:
            for loop in [lp for lp in self._entries if lp.is_closed()]:
                del self._entries[loop]

    def __len__(self) -> int:
        return len(self._entries)
