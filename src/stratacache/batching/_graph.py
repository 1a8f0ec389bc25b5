"""Bounded concurrency: ``gather_limited`` for flat fan-out, ``run_graph`` for pipelines."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stratacache.batching._retry import Retry
from stratacache.errors import ConfigurationError, GraphCycleError, StrataCacheError

__all__ = ["DependencyFailed", "GraphResult", "Task", "gather_limited", "run_graph"]

T = TypeVar("T")


async def gather_limited(
    limit: int, *aws: Awaitable[T], return_exceptions: bool = False
) -> list[T | BaseException]:
    """Like :func:`asyncio.gather`, with at most ``limit`` awaitables running at once.

    Results keep argument order. On the first error (without ``return_exceptions``) the
    running ones are cancelled and those not yet started are closed, never started: a
    failed fan-out must not keep spending budget.
    """
    if limit < 1:
        raise ConfigurationError(f"limit must be >= 1, not {limit}")
    results: list[Any] = [None] * len(aws)
    queue = list(enumerate(aws))
    queue.reverse()

    async def worker() -> None:
        while queue:
            index, aw = queue.pop()
            try:
                results[index] = await aw
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[index] = exc

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(aws)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for _, aw in queue:
            close = getattr(aw, "close", None)
            if callable(close):
                close()
        raise
    return results


class DependencyFailed(StrataCacheError):
    """A task was skipped because a task it depends on failed."""


@dataclass
class Task:
    """One node of a graph: ``fn(*results_of_deps)``, sync or async.

    ``fallback(exc, *results_of_deps)`` runs when every attempt failed; its value becomes the
    task's result. ``timeout`` bounds each attempt; ``retry`` overrides the graph's policy.
    """

    name: str
    fn: Callable[..., Any]
    deps: tuple[str, ...] = ()
    timeout: float | None = None
    retry: Retry | None = None
    fallback: Callable[..., Any] | None = None


@dataclass
class GraphResult:
    """Results by task name; failed (or skipped) tasks are in ``errors`` instead."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __getitem__(self, name: str) -> Any:
        if name in self.errors:
            raise self.errors[name]
        return self.results[name]


def _toposort(tasks: Mapping[str, Task]) -> list[str]:
    for task in tasks.values():
        for dep in task.deps:
            if dep not in tasks:
                raise ConfigurationError(f"task {task.name!r} depends on unknown task {dep!r}")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise GraphCycleError("task graph has a cycle: " + " -> ".join(cycle))
        state[name] = 1
        for dep in tasks[name].deps:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in tasks:
        visit(name, [])
    return order


async def _invoke(fn: Callable[..., Any], args: list[Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    value = await asyncio.to_thread(fn, *args)
    return await value if inspect.isawaitable(value) else value


async def run_graph(
    tasks: Iterable[Task] | Mapping[str, Callable[..., Any] | Task],
    max_concurrency: int = 8,
    timeout: float | None = None,  # noqa: ASYNC109 - a per-task default, not a deadline
    retry: Retry | None = None,
) -> GraphResult:
    """Run a dependency graph with bounded concurrency; one failure never stops other branches.

    Tasks start as soon as their dependencies are done (so the order is topological), at most
    ``max_concurrency`` at a time. ``timeout`` is the default per-attempt timeout; ``retry``
    the default policy (no retries unless given). A cycle or an unknown dependency raises
    :class:`~stratacache.errors.GraphCycleError` / ``ConfigurationError`` before anything runs.
    """
    if max_concurrency < 1:
        raise ConfigurationError(f"max_concurrency must be >= 1, not {max_concurrency}")
    if isinstance(tasks, Mapping):
        graph = {n: t if isinstance(t, Task) else Task(n, t) for n, t in tasks.items()}
    else:
        graph = {}
        for task in tasks:
            if task.name in graph:
                raise ConfigurationError(f"duplicate task name {task.name!r}")
            graph[task.name] = task
    _toposort(graph)
    policy = retry or Retry(attempts=1)
    outcome = GraphResult()
    gate = asyncio.Semaphore(max_concurrency)
    done: dict[str, asyncio.Event] = {name: asyncio.Event() for name in graph}

    async def attempt(task: Task, args: list[Any]) -> Any:
        async with gate:
            limit = task.timeout if task.timeout is not None else timeout
            if limit is None:
                return await _invoke(task.fn, args)
            async with asyncio.timeout(limit):
                return await _invoke(task.fn, args)

    async def run(task: Task) -> None:
        try:
            for dep in task.deps:
                await done[dep].wait()
            failed = [d for d in task.deps if d in outcome.errors]
            if failed:
                outcome.errors[task.name] = DependencyFailed(
                    f"task {task.name!r} skipped: {', '.join(failed)} failed"
                )
                return
            args = [outcome.results[d] for d in task.deps]
            rule = task.retry or policy
            for number in range(1, max(1, rule.attempts) + 1):
                try:
                    outcome.results[task.name] = await attempt(task, args)
                    return
                except Exception as exc:
                    last: Exception = exc
                    if number >= rule.attempts or not rule.retry_on(exc):
                        break
                    await asyncio.sleep(rule.delay(number, exc))
            if task.fallback is not None:
                try:
                    outcome.results[task.name] = await _invoke(task.fallback, [last, *args])
                    return
                except Exception as exc:
                    last = exc
            outcome.errors[task.name] = last
        finally:
            done[task.name].set()

    await asyncio.gather(*(run(t) for t in graph.values()))
    return outcome
