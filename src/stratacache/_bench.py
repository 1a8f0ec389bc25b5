"""Concurrency benchmark: many callers reading one cache at once, async and threaded.

Used by ``stratacache bench`` (against the configured cache) and by
``benchmarks/bench_concurrency.py`` (against private memory, disk, Redis and Redis Cluster
tiers, next to redis-py used directly). Imported lazily by the CLI: never on ``import
stratacache``.

Every cell starts from a fresh client (a new cache, so no circuit-breaker state leaks from
one cell into the next) whose keys were all stored first with a long TTL, so that every miss
it reports is **spurious**: the load itself, not the data, made the cache answer "not found".
Each row records throughput, per-call p50/p99 latency, spurious misses, wrong values, the
exceptions that reached the caller and, for a :class:`~stratacache.TieredCache`, its tiers'
``errors``/``busy``/``skipped`` counters, the breaker state and the warnings it logged; then
how many of a few sequential reads right after the burst still missed (a breaker opened by
the burst keeps serving misses for up to its back-off).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from stratacache.errors import StrataCacheError
from stratacache.tiered import TieredCache

__all__ = [
    "NAMESPACE",
    "CacheSubject",
    "Row",
    "Sizes",
    "Subject",
    "bench_key",
    "bench_value",
    "ratios",
    "render",
    "run_cache",
    "run_subject",
]

#: Every key the benchmark writes lives in this namespace, cleared at the end.
NAMESPACE = "stratacache-bench"
#: Distinct keys, and the size of the one batch read (``get_many``) of the baseline.
KEYS = 2000
#: Long enough that nothing expires during a run: every miss is spurious.
TTL = 3600.0
#: Sequential reads right after a cell: do misses outlast the burst?
AFTERMATH_READS = 20

ASYNC = "async"
THREADS = "threads"
BATCH_ASYNC = "aget_many"
BATCH_SYNC = "get_many"


def bench_key(i: int) -> str:
    return f"bench-{i:05d}"


def bench_value(i: int) -> str:
    """A 40-character value, distinct per key (a wrong answer is caught, not just a miss)."""
    return f"value-{i:05d}-".ljust(40, "x")


@dataclass(frozen=True)
class Sizes:
    """How many callers per cell and how many calls each makes."""

    async_callers: tuple[int, ...] = (1, 50, 200, 2000)
    thread_callers: tuple[int, ...] = (1, 50, 200, 256, 2000)
    #: Calls per cell at least; each caller makes ``max(min_per_caller, total/callers)``.
    total_calls: int = 4000
    min_per_caller: int = 3
    batch_repeats: int = 5

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(thread_callers=(1, 50, 200, 256), total_calls=1000, min_per_caller=2,
                       batch_repeats=3)  # fmt: skip
        return cls()

    def per_caller(self, callers: int) -> int:
        return max(self.min_per_caller, math.ceil(self.total_calls / callers))


class Subject(Protocol):
    """One fresh client per cell. ``get``/``aget`` return the stored str or None."""

    def populate(self, mapping: Mapping[str, str]) -> None: ...
    def get(self, key: str) -> str | None: ...
    async def aget(self, key: str) -> str | None: ...
    def get_many(self, keys: Sequence[str]) -> Mapping[str, str]: ...
    async def aget_many(self, keys: Sequence[str]) -> Mapping[str, str]: ...
    def counters(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...


class CacheSubject:
    """A :class:`TieredCache` as a benchmark subject (values are stored with a long TTL)."""

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache

    def populate(self, mapping: Mapping[str, str]) -> None:
        self.cache.set_many(mapping, ttl=TTL)

    def get(self, key: str) -> str | None:
        value = self.cache.get(key)
        return None if value is None else str(value)

    async def aget(self, key: str) -> str | None:
        value = await self.cache.aget(key)
        return None if value is None else str(value)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, str]:
        return self.cache.get_many(keys)

    async def aget_many(self, keys: Sequence[str]) -> Mapping[str, str]:
        return await self.cache.aget_many(keys)

    def counters(self) -> dict[str, Any]:
        tiers = self.cache.stats()["tiers"]
        return {
            "errors": sum(t["errors"] for t in tiers),
            "busy": sum(t["busy"] for t in tiers),
            "skipped": sum(t["skipped"] for t in tiers),
            "breaker": "open" if any(t["breaker"] == "open" for t in tiers) else "closed",
            "tiers": tiers,
        }

    def close(self) -> None:
        self.cache.close()

    async def aclose(self) -> None:
        await self.cache.aclose()


@dataclass
class Row:
    backend: str
    client: str
    #: ``async`` (concurrent aget), ``threads`` (concurrent get), or a single batch read.
    mode: str
    callers: int
    calls: int
    seconds: float
    throughput: float
    #: Calls that returned the stored value, per second (misses are often much faster).
    hit_throughput: float
    #: Per call; for a batch row, of the whole batch.
    p50_us: float
    p99_us: float
    misses: int
    wrong: int = 0
    #: Exceptions that reached the caller (redis-py raises; a TieredCache must not).
    raised: int = 0
    errors: int | None = None
    busy: int | None = None
    skipped: int | None = None
    breaker: str | None = None
    #: Misses among AFTERMATH_READS sequential reads right after the cell.
    aftermath_misses: int | None = None
    notes: list[str] = field(default_factory=list)
    tiers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tally:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.latencies: list[float] = []
        self.misses = 0
        self.wrong = 0
        self.raised = 0
        self.first_exception: str | None = None

    def record(self, key: str, value: str | None, elapsed: float) -> None:
        self.latencies.append(elapsed)
        if value is None:
            self.misses += 1
        elif value != self.values[key]:
            self.wrong += 1

    def fail(self, exc: Exception, elapsed: float) -> None:
        self.latencies.append(elapsed)
        self.misses += 1
        self.note(exc)

    def note(self, exc: Exception) -> None:
        self.raised += 1
        if self.first_exception is None:
            self.first_exception = f"{type(exc).__name__}: {exc}"[:160]


class _Warnings(logging.Handler):
    """Collects the distinct warnings stratacache logs during a cell (a tier failing)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # "stratacache: tier redis failed on get (X: y); serving it as a miss…" -> the cause.
        message = record.getMessage().removeprefix("stratacache: ").split("; ")[0][:160]
        if message not in self.messages and len(self.messages) < 3:
            self.messages.append(message)


@contextmanager
def _quiet_timed() -> Iterator[_Warnings]:
    """GC off during the timed part (as pytest-benchmark does), stratacache warnings captured
    for the row instead of printed in the middle of the table."""
    handler = _Warnings()
    logger = logging.getLogger("stratacache")
    logger.addHandler(handler)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield handler
    finally:
        if enabled:
            gc.enable()
        logger.removeHandler(handler)


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _keys_for(caller: int, callers: int, per_caller: int, keys: Sequence[str]) -> list[str]:
    # Interleaved: at any moment the callers ask for distinct keys.
    return [keys[(caller + j * callers) % len(keys)] for j in range(per_caller)]


async def _async_load(
    subject: Subject, keys: Sequence[str], tally: _Tally, callers: int, per_caller: int
) -> float:
    perf = time.perf_counter

    async def caller(c: int) -> None:
        for key in _keys_for(c, callers, per_caller, keys):
            start = perf()
            try:
                value = await subject.aget(key)
            except Exception as exc:
                tally.fail(exc, perf() - start)
            else:
                tally.record(key, value, perf() - start)

    start = perf()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return perf() - start


def _thread_load(
    subject: Subject, keys: Sequence[str], tally: _Tally, callers: int, per_caller: int
) -> float:
    perf = time.perf_counter
    barrier = threading.Barrier(callers + 1)

    def caller(c: int) -> None:
        todo = _keys_for(c, callers, per_caller, keys)
        barrier.wait()
        for key in todo:
            start = perf()
            try:
                value = subject.get(key)
            except Exception as exc:
                tally.fail(exc, perf() - start)
            else:
                tally.record(key, value, perf() - start)

    threads = [threading.Thread(target=caller, args=(c,), daemon=True) for c in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = perf()
    for thread in threads:
        thread.join()
    return perf() - start


def _aftermath_sync(subject: Subject, keys: Sequence[str], values: Mapping[str, str]) -> int:
    misses = 0
    for key in keys[:AFTERMATH_READS]:
        try:
            misses += subject.get(key) != values[key]
        except Exception:
            misses += 1
    return misses


async def _aftermath_async(subject: Subject, keys: Sequence[str], values: Mapping[str, str]) -> int:
    misses = 0
    for key in keys[:AFTERMATH_READS]:
        try:
            misses += await subject.aget(key) != values[key]
        except Exception:
            misses += 1
    return misses


def _row(
    backend: str,
    client: str,
    mode: str,
    callers: int,
    tally: _Tally,
    seconds: float,
    calls: int,
    counters: dict[str, Any],
    aftermath: int | None,
    warnings: list[str],
) -> Row:
    ordered = sorted(tally.latencies)
    row = Row(
        backend=backend,
        client=client,
        mode=mode,
        callers=callers,
        calls=calls,
        seconds=round(seconds, 6),
        throughput=round(calls / seconds, 1) if seconds > 0 else math.inf,
        hit_throughput=(
            round((calls - tally.misses - tally.wrong) / seconds, 1) if seconds > 0 else math.inf
        ),
        p50_us=round(_percentile(ordered, 0.5) * 1e6, 1),
        p99_us=round(_percentile(ordered, 0.99) * 1e6, 1),
        misses=tally.misses,
        wrong=tally.wrong,
        raised=tally.raised,
        errors=counters.get("errors"),
        busy=counters.get("busy"),
        skipped=counters.get("skipped"),
        breaker=counters.get("breaker"),
        aftermath_misses=aftermath,
        tiers=list(counters.get("tiers", [])),
    )
    if tally.first_exception:
        row.notes.append(f"raised {tally.raised}x, first: {tally.first_exception}")
    row.notes.extend(f"logged: {m}" for m in warnings)
    return row


def _concurrent_cell(
    make: Callable[[], Subject],
    backend: str,
    client: str,
    mode: str,
    callers: int,
    sizes: Sizes,
) -> Row:
    keys = [bench_key(i) for i in range(KEYS)]
    values = {key: bench_value(i) for i, key in enumerate(keys)}
    per_caller = sizes.per_caller(callers)
    tally = _Tally(values)
    subject = make()
    try:
        subject.populate(values)
        if mode == ASYNC:

            async def cell() -> tuple[float, dict[str, Any], int, list[str]]:
                try:
                    await subject.aget(keys[0])  # the loop's client and one connection
                    with _quiet_timed() as logged:
                        seconds = await _async_load(subject, keys, tally, callers, per_caller)
                        counters = subject.counters()
                        aftermath = await _aftermath_async(subject, keys, values)
                    return seconds, counters, aftermath, logged.messages
                finally:
                    await subject.aclose()

            seconds, counters, aftermath, warnings = asyncio.run(cell())
        else:
            subject.get(keys[0])
            with _quiet_timed() as logged:
                seconds = _thread_load(subject, keys, tally, callers, per_caller)
                counters = subject.counters()
                aftermath = _aftermath_sync(subject, keys, values)
            warnings = logged.messages
    finally:
        subject.close()
    return _row(
        backend, client, mode, callers, tally, seconds, callers * per_caller, counters,
        aftermath, warnings,
    )  # fmt: skip


def _batch_cell(
    make: Callable[[], Subject], backend: str, client: str, mode: str, sizes: Sizes
) -> Row:
    keys = [bench_key(i) for i in range(KEYS)]
    values = {key: bench_value(i) for i, key in enumerate(keys)}
    tally = _Tally(values)
    durations: list[float] = []
    perf = time.perf_counter

    def account(found: Mapping[str, str], elapsed: float) -> None:
        durations.append(elapsed)
        for key in keys:
            value = found.get(key)
            if value is None:
                tally.misses += 1
            elif value != values[key]:
                tally.wrong += 1

    subject = make()
    try:
        subject.populate(values)
        if mode == BATCH_ASYNC:

            async def cell() -> tuple[dict[str, Any], list[str]]:
                try:
                    await subject.aget(keys[0])
                    with _quiet_timed() as logged:
                        for _ in range(sizes.batch_repeats):
                            start = perf()
                            try:
                                found = await subject.aget_many(keys)
                            except Exception as exc:
                                tally.note(exc)
                                found = {}
                            account(found, perf() - start)
                        counters = subject.counters()
                    return counters, logged.messages
                finally:
                    await subject.aclose()

            counters, warnings = asyncio.run(cell())
        else:
            subject.get(keys[0])
            with _quiet_timed() as logged:
                for _ in range(sizes.batch_repeats):
                    start = perf()
                    try:
                        found = subject.get_many(keys)
                    except Exception as exc:
                        tally.note(exc)
                        found = {}
                    account(found, perf() - start)
                counters = subject.counters()
            warnings = logged.messages
    finally:
        subject.close()
    tally.latencies = durations
    median = _percentile(sorted(durations), 0.5)
    row = _row(
        backend, client, mode, 1, tally, median * sizes.batch_repeats,
        KEYS * sizes.batch_repeats, counters, None, warnings,
    )  # fmt: skip
    row.notes.insert(0, f"one call for {KEYS} keys; latency is per batch, median of "
                        f"{sizes.batch_repeats}")  # fmt: skip
    return row


def run_subject(
    make: Callable[[], Subject],
    *,
    backend: str,
    client: str,
    sizes: Sizes,
    modes: Sequence[str] = (ASYNC, THREADS),
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every cell for one subject: concurrent aget and/or get at each caller count, then one
    batch read of all keys as the baseline. ``make`` returns a fresh subject per cell."""
    rows: list[Row] = []

    def done(row: Row) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    if ASYNC in modes:
        for callers in sizes.async_callers:
            done(_concurrent_cell(make, backend, client, ASYNC, callers, sizes))
        done(_batch_cell(make, backend, client, BATCH_ASYNC, sizes))
    if THREADS in modes:
        for callers in sizes.thread_callers:
            done(_concurrent_cell(make, backend, client, THREADS, callers, sizes))
        done(_batch_cell(make, backend, client, BATCH_SYNC, sizes))
    return rows


def run_cache(
    make_cache: Callable[[], TieredCache],
    *,
    backend: str,
    client: str = "stratacache",
    sizes: Sizes,
    modes: Sequence[str] = (ASYNC, THREADS),
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """:func:`run_subject` for caches built by ``make_cache`` (one per cell), each viewed
    under :data:`NAMESPACE`; that namespace is cleared at the end, also on an error."""

    def make() -> Subject:
        return CacheSubject(make_cache().with_namespace(NAMESPACE))

    try:
        return run_subject(
            make, backend=backend, client=client, sizes=sizes, modes=modes, progress=progress
        )
    finally:
        with make_cache() as cache:
            try:
                cache.clear(NAMESPACE)
            except StrataCacheError as exc:  # a shared tier that is down: say so, do not mask
                logging.getLogger("stratacache").warning(
                    "stratacache bench: could not clear namespace %r: %s", NAMESPACE, exc
                )


# -- report ------------------------------------------------------------------------------------

_MODE_LABEL = {
    ASYNC: "aget x N",
    THREADS: "get, N threads",
    BATCH_ASYNC: "one aget_many",
    BATCH_SYNC: "one get_many",
}


def _hits_per_s(rows: Sequence[Row], backend: str, client: str, mode: str, callers: int) -> float:
    for row in rows:
        if (row.backend, row.client, row.mode, row.callers) == (backend, client, mode, callers):
            return row.hit_throughput
    return math.nan


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per backend and client: the headline ratios of issue #14, on hits/s (a spurious miss
    is fast, so a ratio of calls/s would reward the failure it measures)."""
    out: list[dict[str, Any]] = []
    seen: list[tuple[str, str]] = []
    for row in rows:
        if (row.backend, row.client) not in seen:
            seen.append((row.backend, row.client))
    for backend, client in seen:

        def thr(mode: str, callers: int, b: str = backend, c: str = client) -> float:
            return _hits_per_s(rows, b, c, mode, callers)

        pairs = [
            ("2000 concurrent aget / one aget_many(2000)", thr(ASYNC, 2000), thr(BATCH_ASYNC, 1)),
            ("200 concurrent aget / sequential aget", thr(ASYNC, 200), thr(ASYNC, 1)),
            ("256 threads get / sequential get", thr(THREADS, 256), thr(THREADS, 1)),
            ("256 threads get / one get_many(2000)", thr(THREADS, 256), thr(BATCH_SYNC, 1)),
        ]
        for name, num, den in pairs:
            if not (math.isnan(num) or math.isnan(den)) and den > 0:
                out.append({"backend": backend, "client": client, "ratio": name,
                            "value": round(num / den, 3)})  # fmt: skip
    return out


def _fmt_rate(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "-"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _fmt_us(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value / 1000:.1f} ms" if value >= 10_000 else f"{value:.0f}"


def _opt(value: int | str | None) -> str:
    return "-" if value is None else str(value)


_HEADERS = (
    "backend", "client", "mode", "N", "calls", "calls/s", "hits/s", "vs redis-py", "p50 us",
    "p99 us",
    "spurious misses", "errors", "busy", "skipped", "breaker", "after", "notes",
)  # fmt: skip


def _cells(row: Row, rows: Sequence[Row]) -> list[str]:
    direct = _hits_per_s(rows, row.backend, "redis-py", row.mode, row.callers)
    versus = ""
    if row.client != "redis-py" and direct > 0:  # NaN when there is no redis-py row
        versus = f"{row.hit_throughput / direct:.2f}x"
    misses = f"{row.misses}/{row.calls}" if row.misses else "0"
    if row.wrong:
        misses += f" !! {row.wrong} WRONG"
    errors = row.errors if row.errors is not None else row.raised
    notes = [n for n in row.notes if not n.startswith("one call for")]
    if row.raised and row.client != "redis-py":
        notes.insert(0, f"!! {row.raised} exceptions reached the caller")
    return [
        row.backend, row.client, _MODE_LABEL.get(row.mode, row.mode),
        str(row.callers) if row.mode in (ASYNC, THREADS) else "-", str(row.calls),
        _fmt_rate(row.throughput), _fmt_rate(row.hit_throughput), versus, _fmt_us(row.p50_us),
        _fmt_us(row.p99_us), misses,
        str(errors), _opt(row.busy), _opt(row.skipped), _opt(row.breaker),
        "-" if row.aftermath_misses is None else f"{row.aftermath_misses}/{AFTERMATH_READS}",
        "; ".join(notes),
    ]  # fmt: skip


def render(rows: Sequence[Row], *, width: int = 220) -> str:
    """The table and the ratios as text (rich when it is installed, else plain columns)."""
    headers = list(_HEADERS)
    body = [_cells(row, rows) for row in rows]
    if not any(row.client == "redis-py" for row in rows):
        drop = headers.index("vs redis-py")
        del headers[drop]
        for cells in body:
            del cells[drop]
    lines: list[str] = []
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers[:-1])]
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)))
        for cells in body:
            text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
            lines.append(f"{text}  {cells[-1]}".rstrip())
    else:
        import io

        table = Table(show_lines=False)
        for header in headers:
            numeric = header not in ("backend", "client", "mode", "notes")
            table.add_column(
                header,
                justify="right" if numeric else "left",
                overflow="fold",
                max_width=60 if header == "notes" else None,
            )
        previous = None
        for row, cells in zip(rows, body, strict=True):
            if previous is not None and (row.backend, row.client) != previous:
                table.add_section()
            previous = (row.backend, row.client)
            table.add_row(*cells)
        buffer = io.StringIO()
        Console(file=buffer, width=width, color_system=None, legacy_windows=False).print(table)
        lines.append(buffer.getvalue().rstrip())
    lines.append("")
    lines.extend([
        "'spurious misses': every key was stored first with a 1 h TTL, so every miss is the "
        "load's doing. 'hits/s' counts only calls",
        "that returned the stored value ('calls/s' also counts misses, which are fast when a "
        "tier fails or is skipped). 'skipped': calls",
        "the circuit breaker kept from the tier; 'breaker': its state at the end of the cell; "
        f"'after': misses among {AFTERMATH_READS} sequential",
        "reads right after the burst.",
    ])  # fmt: skip
    if "vs redis-py" in headers:
        lines[-1] += " 'vs redis-py': hits/s over redis-py's in the same cell."
    found = ratios(rows)
    if found:
        lines.append("")
        lines.append("ratios (of hits/s):")
        for item in found:
            lines.append(f"  {item['backend']:<8} {item['client']:<26} {item['ratio']:<44} "
                         f"{item['value']:>8.3f}")  # fmt: skip
    return "\n".join(lines)
