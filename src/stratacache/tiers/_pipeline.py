"""Automatic pipelining for the Redis tier: concurrent calls share round trips.

Without it, every concurrent ``aget`` takes its own pooled connection. A burst of 200 async
callers exhausted redis-py's pool (``MaxConnectionsError``), the tier counted that as a
failure, the breaker opened and the cache went dark exactly when the load made it most useful;
256 threads did the same. Here, as in ioredis' ``enableAutoPipelining`` or DataLoader, calls
that arrive while the tier is busy queue up and leave together as one pipeline, with
consecutive reads merged into ``MGET`` (one per hash slot on a cluster) and writes kept in
call order. Each call still gets its own result and its own failure.

The batching logic (which commands, how results map back) is written once as pure functions
over :class:`Op`; :class:`SyncLane` and :class:`AsyncLane` only decide *when* a batch leaves:

* **Async**: one batch in flight per event loop. The first call of an idle lane goes out
  alone, at once (an uncontended call costs what it did before); calls made meanwhile wait
  and leave together when it returns. One at a time per loop keeps a caller's writes in call
  order (two ``aset`` of one key in flight together could otherwise land in reverse).
* **Threads**: up to ``slots`` batches in flight (each holds one connection). A caller that
  finds every slot taken queues; the thread that frees a slot hands it, with everything
  queued so far, to the oldest waiter. Waiting is bounded by the tier's timeout, after which
  the call is a :class:`~stratacache.tiers.base.TierBusy` miss, which is back-pressure and
  never a step towards opening the circuit breaker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from stratacache.tiers.base import MISS, TierBusy

__all__ = ["AsyncLane", "LaneStats", "Op", "SyncLane", "direct_call", "fill", "finish_direct"]

# Operation kinds. Reads may be merged with their neighbours; writes never move.
GET: Final = "get"
MGET: Final = "mget"
SET: Final = "set"
SETNX: Final = "setnx"
MSET: Final = "mset"
UNLINK: Final = "unlink"
RELEASE: Final = "release"
_READS: Final = frozenset((GET, MGET))

RELEASE_LUA: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_QUEUED, _LEAD, _RUNNING, _DONE = range(4)


class Op:
    """One caller's call: what to send, and (once its batch returned) its outcome."""

    __slots__ = ("args", "error", "event", "future", "kind", "state", "value")

    def __init__(self, kind: str, args: tuple[Any, ...]) -> None:
        self.kind = kind
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.state = _QUEUED
        self.event: threading.Event | None = None
        self.future: asyncio.Future[Any] | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _bytes(value: Any) -> bytes:
    return value if type(value) is bytes else bytes(value)


# -- one call on its own ---------------------------------------------------------------------


def direct_call(client: Any, op: Op, cluster: bool) -> Any:
    """Send ``op`` alone; returns the raw reply, or an awaitable of it for an async client."""
    kind, args = op.kind, op.args
    if kind == GET:
        return client.get(args[0])
    if kind == SET:
        return client.set(args[0], args[1], px=args[2])
    if kind == SETNX:
        return client.set(args[0], args[1], nx=True, px=args[2])
    if kind == MGET:
        return client.mget_nonatomic(args[0]) if cluster else client.mget(args[0])
    if kind == UNLINK:
        return client.unlink(*args[0])
    if kind == RELEASE:
        return client.eval(RELEASE_LUA, 1, args[0], args[1])
    raise AssertionError(f"{kind} is always pipelined")  # pragma: no cover


def finish_direct(op: Op, raw: Any) -> Any:
    """Turn the raw reply of :func:`direct_call` into the tier's return value."""
    kind = op.kind
    if kind == GET:
        return MISS if raw is None else _bytes(raw)
    if kind == MGET:
        return {k: _bytes(v) for k, v in zip(op.args[0], raw, strict=True) if v is not None}
    if kind == SETNX:
        return bool(raw)
    return None


# -- many calls in one pipeline --------------------------------------------------------------


def fill(
    pipe: Any, ops: Sequence[Op], keyslot: Callable[[str], int] | None
) -> Callable[[list[Any] | BaseException], None]:
    """Queue the commands of ``ops`` on ``pipe`` (sync or async, single node or cluster: their
    command methods are all plain calls) and return the function that hands each op its part
    of the replies, or the whole batch's exception. ``keyslot`` is the cluster's slot function,
    None for a single node."""
    finishers: list[Callable[[list[Any]], None]] = []
    index = 0
    i = 0
    while i < len(ops):
        if ops[i].kind in _READS:
            j = i
            while j < len(ops) and ops[j].kind in _READS:
                j += 1
            run = ops[i:j]
            keys = list(dict.fromkeys(k for op in run for k in _read_keys(op)))
            groups = _by_slot(keyslot, keys) if keyslot else [keys]
            for group in groups:
                # execute_command: redis-py blocks .mget() on cluster pipelines, although a
                # single-slot MGET is what its own mget_nonatomic sends.
                pipe.execute_command("MGET", *group)
            finishers.append(_read_finisher(run, groups, index))
            index += len(groups)
            i = j
            continue
        op = ops[i]
        count = _queue_write(pipe, op, keyslot is not None)
        finishers.append(_write_finisher(op, index, count))
        index += count
        i += 1

    def finish(replies: list[Any] | BaseException) -> None:
        if isinstance(replies, BaseException):
            for op in ops:
                op.error = replies
            return
        for finisher in finishers:
            finisher(replies)

    return finish


def _read_keys(op: Op) -> Sequence[str]:
    return (op.args[0],) if op.kind == GET else op.args[0]


def _by_slot(keyslot: Callable[[str], int], keys: list[str]) -> list[list[str]]:
    # A cluster MGET must stay within one hash slot (redis-py's mget_nonatomic does the same).
    slots: dict[int, list[str]] = {}
    for key in keys:
        slots.setdefault(keyslot(key), []).append(key)
    return list(slots.values())


def _read_finisher(
    run: Sequence[Op], groups: list[list[str]], start: int
) -> Callable[[list[Any]], None]:
    def finish(replies: list[Any]) -> None:
        values: dict[str, Any] = {}
        for offset, group in enumerate(groups):
            reply = replies[start + offset]
            if isinstance(reply, BaseException):
                # One slot's MGET failed (e.g. its node is failing over): only the callers
                # that asked for those keys see the error.
                values.update(dict.fromkeys(group, reply))
            else:
                values.update(zip(group, reply, strict=True))
        for op in run:
            if op.kind == GET:  # the hot case: one key, checked without a generator
                value = values[op.args[0]]
                if value is None:
                    op.value = MISS
                elif type(value) is bytes:
                    op.value = value
                elif isinstance(value, BaseException):
                    op.error = value
                else:
                    op.value = bytes(value)
                continue
            keys = op.args[0]
            failed = next((v for k in keys if isinstance(v := values[k], BaseException)), None)
            if failed is not None:
                op.error = failed
            else:
                op.value = {k: _bytes(values[k]) for k in keys if values[k] is not None}

    return finish


def _queue_write(pipe: Any, op: Op, cluster: bool) -> int:
    kind, args = op.kind, op.args
    if kind == SET:
        pipe.set(args[0], args[1], px=args[2])
        return 1
    if kind == SETNX:
        pipe.set(args[0], args[1], nx=True, px=args[2])
        return 1
    if kind == MSET:
        for key, data, px in args[0]:
            pipe.set(key, data, px=px)
        return len(args[0])
    if kind == UNLINK:
        if cluster:  # multi-key commands must stay within one slot
            for key in args[0]:
                pipe.unlink(key)
            return len(args[0])
        pipe.unlink(*args[0])
        return 1
    if kind == RELEASE:
        # execute_command: redis-py's sync cluster pipeline refuses .eval() (a TypeError, so
        # every lease released under contention failed and was left to expire).
        pipe.execute_command("EVAL", RELEASE_LUA, 1, args[0], args[1])
        return 1
    raise AssertionError(f"unknown operation {kind!r}")  # pragma: no cover


def _write_finisher(op: Op, start: int, count: int) -> Callable[[list[Any]], None]:
    def finish(replies: list[Any]) -> None:
        mine = replies[start : start + count]
        failed = next((r for r in mine if isinstance(r, BaseException)), None)
        if failed is not None:
            op.error = failed
        elif op.kind == SETNX:
            op.value = bool(mine[0])

    return finish


# -- scheduling ------------------------------------------------------------------------------


class LaneStats:
    """Contention counters of one tier, summed over its lanes (updated under the GIL)."""

    __slots__ = ("pipelined_calls", "pipelines", "waits")

    def __init__(self) -> None:
        self.waits = 0
        self.pipelines = 0
        self.pipelined_calls = 0

    def summary(self) -> dict[str, int]:
        return {
            "waits": self.waits,
            "pipelines": self.pipelines,
            "pipelined_calls": self.pipelined_calls,
        }


class SyncLane:
    """Threads: at most ``slots`` batches in flight; see the module docstring. With
    ``coalesce=False`` every call goes alone, but still waits its turn for a connection."""

    def __init__(
        self,
        send_one: Callable[[Op], Any],
        send_many: Callable[[list[Op]], None],
        slots: int,
        wait: float,
        stats: LaneStats,
        coalesce: bool = True,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._coalesce = coalesce
        self._free = slots
        self._wait = wait
        self._queue: list[Op] = []
        self._lock = threading.Lock()
        self._stats = stats

    def submit(self, op: Op) -> Any:
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                lead = False
            else:
                op.event = threading.Event()
                self._queue.append(op)
                self._stats.waits += 1
                lead = None
        if lead is None:
            assert op.event is not None
            try:
                if not op.event.wait(self._wait):
                    with self._lock:
                        if op.state == _QUEUED:
                            self._queue.remove(op)
                            raise TierBusy(
                                f"no Redis connection came free within {self._wait:g} s "
                                f"({len(self._queue)} calls queued)"
                            )
                    op.event.wait()  # picked up meanwhile: bounded by the socket timeout
            except TierBusy:
                raise
            except BaseException:  # e.g. KeyboardInterrupt while waiting
                self._abandon(op)
                raise
            if op.state == _DONE:
                return op.outcome()
            # _LEAD: the thread that freed a slot handed it to us with the queue (we are its
            # head), or, without coalescing, just our own call.
            with self._lock:
                if self._coalesce:
                    batch, self._queue = self._queue, []
                else:
                    batch = [self._queue.pop(0)]
                for queued in batch:
                    queued.state = _RUNNING
        else:
            batch = [op]
        try:
            self._run(batch)
        finally:
            self._release()
        return op.outcome()

    def _run(self, batch: list[Op]) -> None:
        if len(batch) == 1:
            only = batch[0]
            try:
                only.value = self._send_one(only)
            except Exception as exc:
                only.error = exc
        else:
            self._stats.pipelines += 1
            self._stats.pipelined_calls += len(batch)
            self._send_many(batch)
        for done in batch:
            done.state = _DONE
            if done.event is not None:
                done.event.set()

    def _abandon(self, op: Op) -> None:
        """A waiter leaves early: take its call out of the queue, or pass on the slot it was
        handed, so that neither is lost. (A call already running completes without it.)"""
        with self._lock:
            if op.state == _QUEUED and op in self._queue:
                self._queue.remove(op)
                return
        if op.state == _LEAD:
            with self._lock:
                self._queue.remove(op)
            self._release()

    def _release(self) -> None:
        """Give the slot to the oldest waiter (with the queue), or back to the pool."""
        with self._lock:
            if self._queue:
                head = self._queue[0]
                head.state = _LEAD
                assert head.event is not None
                head.event.set()
            else:
                self._free += 1


class AsyncLane:
    """One event loop's lane: one batch in flight; see the module docstring."""

    def __init__(
        self,
        send_one: Callable[[Op], Awaitable[Any]],
        send_many: Callable[[list[Op]], Awaitable[None]],
        stats: LaneStats,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._queue: list[Op] = []
        self._busy = False
        self._stats = stats
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, op: Op) -> Any:
        if not self._busy:
            self._busy = True
            try:
                return await self._send_one(op)
            finally:
                self._next()
        op.future = asyncio.get_running_loop().create_future()
        self._queue.append(op)
        self._stats.waits += 1
        return await op.future

    def _next(self) -> None:
        if not self._queue:
            self._busy = False
            return
        # Keep a reference: the loop holds tasks weakly.
        self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[Op] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                if len(batch) == 1:
                    only = batch[0]
                    try:
                        only.value = await self._send_one(only)
                    except Exception as exc:
                        only.error = exc
                else:
                    self._stats.pipelines += 1
                    self._stats.pipelined_calls += len(batch)
                    await self._send_many(batch)
                _settle(batch)
                batch = []
        except BaseException:  # cancelled: the loop is shutting down, nobody may wait forever
            for op in batch + self._queue:
                if op.future is not None:
                    op.future.cancel()
            self._queue = []
            raise
        finally:
            self._busy = False
            self._drainer = None


def _settle(ops: list[Op]) -> None:
    for op in ops:
        future = op.future
        if future is None or future.done():  # its caller was cancelled: nobody to tell
            continue
        if op.error is not None:
            future.set_exception(op.error)
        else:
            future.set_result(op.value)
