"""Sans-I/O bucket maths shared by the sync path, the async path and the Redis Lua script.

The state of one budget is a single float, the *theoretical arrival time* (TAT) of GCRA: the
moment the bucket will be full again. ``None`` means "already full". A bucket of ``burst``
units refilling at ``rate`` units per second admits a request of ``cost`` at time ``s`` when
``max(tat, s) + cost / rate - s <= max(burst, cost) / rate``.

Three choices make this a limiter for LLM calls rather than for HTTP hits:

* **Reservation, not polling.** :func:`reserve` commits the slot at once and returns how long
  to sleep, so each caller sleeps exactly once and callers are served in arrival order: a
  large request cannot be starved by a stream of small ones.
* **Oversized requests go into debt.** The tolerance is ``max(burst, cost)``: a request bigger
  than the burst waits for a full bucket and leaves it negative, instead of hanging forever
  (LlamaIndex #23202). Only requests beyond the per-minute budget are refused, by the caller.
* **Refunds are exact.** Settling an over-estimate moves the TAT back by ``refund / rate``.

``_lua.py`` is a line-by-line transcription of these functions onto the Redis server clock;
keep the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Limit", "adjust", "clamp", "reserve", "shift"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One budget: ``rate`` units per second, ``burst`` units of bucket."""

    rate: float
    burst: float

    def tolerance(self, cost: float) -> float:
        return max(self.burst, cost) / self.rate


def reserve(
    tats: Sequence[float | None],
    limits: Sequence[Limit | None],
    costs: Sequence[float],
    now: float,
    not_before: float = 0.0,
    max_wait: float | None = None,
) -> tuple[float, list[float | None] | None]:
    """Reserve ``costs`` in every budget at once: ``(wait, new_tats)``.

    ``new_tats`` is None when the wait would exceed ``max_wait``; nothing is committed then.
    All budgets are charged at the same start time, so RPM and TPM never disagree about when
    a request was sent.
    """
    start = max(now, not_before)
    for tat, limit, cost in zip(tats, limits, costs, strict=True):
        if limit is None or cost <= 0:
            continue
        base = now if tat is None else tat
        start = max(start, base + cost / limit.rate - limit.tolerance(cost))
    wait = start - now
    if max_wait is not None and wait > max_wait:
        return wait, None
    new: list[float | None] = []
    for tat, limit, cost in zip(tats, limits, costs, strict=True):
        if limit is None or cost <= 0:
            new.append(tat)
        else:
            new.append(max(now if tat is None else tat, start) + cost / limit.rate)
    return wait, new


def adjust(tat: float | None, limit: Limit, amount: float, now: float) -> float | None:
    """Give back ``amount`` units (or charge ``-amount`` more); never fuller than full."""
    base = now if tat is None else tat
    if amount >= 0:
        new = max(base - amount / limit.rate, now)
    else:
        new = max(base, now) - amount / limit.rate
    return None if new <= now else new


def clamp(tat: float | None, limit: Limit, remaining: float, now: float) -> float | None:
    """Make the bucket hold no more than ``remaining`` (what the provider says is left)."""
    floor = now + (limit.burst - remaining) / limit.rate
    base = now if tat is None else tat
    return tat if base >= floor else floor


def shift(tat: float | None, now: float, seconds: float) -> float | None:
    """Push a budget's schedule back by a shared pause, so waiters keep their spacing."""
    if tat is None or seconds <= 0:
        return tat
    return max(tat, now) + seconds
