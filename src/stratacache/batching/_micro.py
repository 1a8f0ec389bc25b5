"""MicroBatcher: many concurrent single calls become one batch call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stratacache.batching._retry import is_transient
from stratacache.errors import ConfigurationError, StrataCacheError

__all__ = ["BatchSizeError", "MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")

Outcome = list[Any] | BaseException


class BatchSizeError(StrataCacheError, ValueError):
    """The batch function returned a different number of results than it was given items."""


def _default_tokens(item: Any) -> int:
    return (len(item) + 3) // 4 if isinstance(item, str) else 1


def _params_key(params: dict[str, Any]) -> str:
    """Only identical parameters share a batch; the key is their canonical JSON."""
    return json.dumps(params, sort_keys=True, default=repr)


@dataclass
class _Slot:
    item: Any
    tokens: int
    future: Any  # asyncio.Future or concurrent.futures.Future


@dataclass
class _Group:
    slots: list[_Slot]
    params: dict[str, Any]
    timer: asyncio.TimerHandle | None = None


def _split(slots: list[_Slot], max_items: int, max_tokens: int | None) -> list[list[_Slot]]:
    """Cut pending slots into batches by count and by tokens, keeping arrival order.

    An item larger than ``max_tokens`` on its own travels alone rather than being refused.
    """
    batches: list[list[_Slot]] = []
    current: list[_Slot] = []
    tokens = 0
    for slot in slots:
        over = max_tokens is not None and current and tokens + slot.tokens > max_tokens
        if len(current) >= max_items or over:
            batches.append(current)
            current, tokens = [], 0
        current.append(slot)
        tokens += slot.tokens
    if current:
        batches.append(current)
    return batches


def _plan(
    n: int, bisect: Callable[[BaseException], bool]
) -> Generator[list[int], Outcome, list[Any]]:
    """Which sub-batches to call, as index lists; the driver sends back each outcome.

    A failed batch is halved and retried when ``bisect(exc)`` says the error may belong to
    one item (a 400 for a bad input), so good items still get answers and only the offender
    gets the error. A transient error (429, 5xx) fans out to every item in the batch instead:
    bisecting it would multiply the load on a provider that is already refusing.
    Results are values or exception instances, one per index.
    """
    results: list[Any] = [None] * n
    stack = [list(range(n))]
    while stack:
        indices = stack.pop(0)
        outcome = yield indices
        if isinstance(outcome, BaseException):
            if len(indices) > 1 and bisect(outcome):
                half = len(indices) // 2
                stack[:0] = [indices[:half], indices[half:]]
            else:
                for i in indices:
                    results[i] = outcome
        elif len(outcome) != len(indices):
            error = BatchSizeError(
                f"batch function returned {len(outcome)} results for {len(indices)} items"
            )
            for i in indices:
                results[i] = error
        else:
            for i, value in zip(indices, outcome, strict=True):
                results[i] = value
    return results


def _check(outcome: Any) -> Outcome:
    if isinstance(outcome, BaseException):
        return outcome
    return list(outcome)


class MicroBatcher(Generic[T, R]):
    """Collect single calls made within ``max_wait`` seconds into one call of ``fn(items)``.

    ``fn(items, **params) -> results`` may be sync or async and must return one result per
    item, in order. Calls with different ``params`` (model, dimensions, input type...) never
    share a batch. A batch is dispatched when it reaches ``max_items`` or ``max_tokens``
    (counted by ``token_counter``), or ``max_wait`` after its first item, whichever is first.

    ``await submit(item)`` is the async entry; ``call(item)`` serves threads. A caller that
    is cancelled simply stops waiting: the shared call goes on for everyone else. With a
    ``limiter`` (:class:`stratacache.ratelimit.RateLimiter`), each batch is one request of
    the batch's tokens, charged at dispatch.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        max_items: int = 256,
        max_tokens: int | None = None,
        max_wait: float = 0.005,
        token_counter: Callable[[Any], int] = _default_tokens,
        bisect: Callable[[BaseException], bool] | bool = True,
        limiter: Any = None,
    ) -> None:
        if max_items < 1 or (max_tokens is not None and max_tokens < 1) or max_wait < 0:
            raise ConfigurationError("max_items and max_tokens must be >= 1, max_wait >= 0")
        self.fn = fn
        self.max_items = max_items
        self.max_tokens = max_tokens
        self.max_wait = max_wait
        self.token_counter = token_counter
        if bisect is True:
            self._bisect: Callable[[BaseException], bool] = lambda exc: not is_transient(exc)
        elif bisect is False:
            self._bisect = lambda exc: False
        else:
            self._bisect = bisect
        self.limiter = limiter
        self.batches = 0
        """Calls of ``fn`` made so far (bisection retries included)."""
        self.items = 0
        self._async_pending: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _Group]
        ] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_pending: dict[str, list[_Slot]] = {}
        self._cond = threading.Condition()

    def _full(self, slots: list[_Slot]) -> bool:
        if len(slots) >= self.max_items:
            return True
        return self.max_tokens is not None and sum(s.tokens for s in slots) >= self.max_tokens

    # -- async -------------------------------------------------------------------------------

    async def submit(self, item: T, **params: Any) -> R:
        loop = asyncio.get_running_loop()
        groups = self._async_pending.setdefault(loop, {})
        key = _params_key(params)
        slot = _Slot(item, self.token_counter(item), loop.create_future())
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group([], params)
        group.slots.append(slot)
        if self._full(group.slots):
            self._flush(loop, key)
        elif group.timer is None:
            group.timer = loop.call_later(self.max_wait, self._flush, loop, key)
        result: R = await slot.future
        return result

    def _flush(self, loop: asyncio.AbstractEventLoop, key: str) -> None:
        group = self._async_pending.get(loop, {}).pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        live = [s for s in group.slots if not s.future.done()]  # cancelled callers are dropped
        for batch in _split(live, self.max_items, self.max_tokens):
            task = loop.create_task(self._arun(batch, group.params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _arun(self, batch: list[_Slot], params: dict[str, Any]) -> None:
        try:
            if self.limiter is not None:
                await self.limiter.aacquire(tokens=sum(s.tokens for s in batch))
            items = [s.item for s in batch]
            plan = _plan(len(items), self._bisect)
            indices = next(plan)
            while True:
                outcome = await self._acall([items[i] for i in indices], params)
                indices = plan.send(outcome)
        except StopIteration as stop:
            results: list[Any] = stop.value
        except Exception as exc:  # the limiter refused: tell everyone
            results = [exc] * len(batch)
        except BaseException:  # the loop is shutting down
            for slot in batch:
                slot.future.cancel()
            raise
        self._settle(batch, results)

    async def _acall(self, items: list[Any], params: dict[str, Any]) -> Outcome:
        self.batches += 1
        self.items += len(items)
        try:
            if inspect.iscoroutinefunction(self.fn):
                return _check(await self.fn(items, **params))
            value = await asyncio.to_thread(self.fn, items, **params)
            if inspect.isawaitable(value):
                value = await value
            return _check(value)
        except Exception as exc:
            return exc

    @staticmethod
    def _settle(batch: list[_Slot], results: list[Any]) -> None:
        for slot, value in zip(batch, results, strict=True):
            if slot.future.done():
                continue
            if isinstance(value, BaseException):
                slot.future.set_exception(value)
            else:
                slot.future.set_result(value)

    # -- threads -----------------------------------------------------------------------------

    def call(self, item: T, **params: Any) -> R:
        """The blocking twin of :meth:`submit`: the first caller of a window runs the batch."""
        key = _params_key(params)
        slot = _Slot(item, self.token_counter(item), concurrent.futures.Future())
        with self._cond:
            slots = self._sync_pending.setdefault(key, [])
            slots.append(slot)
            leader = len(slots) == 1
            if self._full(slots):
                self._cond.notify_all()
            if leader:
                deadline = time.monotonic() + self.max_wait
                while not self._full(slots) and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                self._sync_pending.pop(key, None)
        if leader:
            for batch in _split(slots, self.max_items, self.max_tokens):
                self._run_sync(batch, params)
        result: R = slot.future.result()
        return result

    def _run_sync(self, batch: list[_Slot], params: dict[str, Any]) -> None:
        try:
            if self.limiter is not None:
                self.limiter.acquire(tokens=sum(s.tokens for s in batch))
            items = [s.item for s in batch]
            plan = _plan(len(items), self._bisect)
            indices = next(plan)
            while True:
                indices = plan.send(self._call_sync([items[i] for i in indices], params))
        except StopIteration as stop:
            results: list[Any] = stop.value
        except Exception as exc:
            results = [exc] * len(batch)
        self._settle(batch, results)

    def _call_sync(self, items: list[Any], params: dict[str, Any]) -> Outcome:
        self.batches += 1
        self.items += len(items)
        try:
            value = self.fn(items, **params)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            return _check(value)
        except Exception as exc:
            return exc

    async def aclose(self) -> None:
        """Dispatch whatever is pending on this loop and wait for in-flight batches."""
        loop = asyncio.get_running_loop()
        for key in list(self._async_pending.get(loop, {})):
            self._flush(loop, key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
