"""Circuit breaker for one tier: pure state, the caller supplies the clock."""

from __future__ import annotations

import random
import threading
import time

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> one probe after the back-off.

    While open, the tier is not called at all, so a dead Redis costs nothing per request
    instead of a connect timeout each. Back-off doubles on every failed probe up to
    ``max_backoff``, shortened by up to 20% at random so that a fleet of processes does not
    probe in lockstep (never lengthened: ``max_backoff`` bounds how long a tier stays unused
    after its outage ends). The default cap of 2 s costs one probe per 2 s per process
    while a tier is down, and brings a tier back within 2 s of its recovery.
    """

    def __init__(
        self, threshold: int = 3, base_backoff: float = 1.0, max_backoff: float = 2.0
    ) -> None:
        self.threshold = threshold
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._failures = 0
        self._opens = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._failures >= self.threshold

    def allow(self) -> bool:
        """May the tier be called now? In the open state, lets exactly one probe through.
        The closed state, the hot path, costs one comparison and no clock read."""
        if self._failures < self.threshold:
            return True
        with self._lock:
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> bool:
        """Record a success; True when this closed a breaker that was open."""
        if self._failures == 0:
            return False
        with self._lock:
            was_open = self._failures >= self.threshold
            self._failures = 0
            self._opens = 0
            self._probing = False
            return was_open

    def failure(self, now: float) -> bool:
        """Record a failure; True when this opened the breaker (closed -> open).

        Only a failed probe grows the back-off. Calls that were already in flight when the
        breaker opened fail too, one after the other; counting each of them as a failed probe
        escalated the back-off to its cap within one outage (8 threads and a one-second Redis
        restart kept the tier unused for ~30 s), so while open they change nothing.
        """
        with self._lock:
            if self._failures >= self.threshold:
                if not self._probing:
                    return False
                self._probing = False
                self._schedule_probe(now)
                return False
            self._failures += 1
            if self._failures < self.threshold:
                return False
            self._opens = 0
            self._schedule_probe(now)
            return True

    def _schedule_probe(self, now: float) -> None:
        backoff = min(self.max_backoff, self.base_backoff * 2**self._opens)
        self._open_until = now + backoff * random.uniform(0.8, 1.0)
        self._opens += 1
