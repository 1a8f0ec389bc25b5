"""TieredCache: read-through, write-through, promotion, single-flight, scoped clear.

The policy is written once, as plans: generators that yield the tier calls they need
(:class:`_Call`), a sleep (:class:`_Sleep`) or the user's compute (:class:`_Compute`), and
receive the results. A sync driver and an async driver execute those steps. The two flavours
therefore cannot drift apart; only "how to call a tier" differs between them.

Failure semantics live in the drivers: any exception from a tier is counted, logged once per
outage, fed to that tier's circuit breaker and handed to the plan as :data:`_FAILED`, which
plans treat like a miss. Nothing a tier does can raise into the caller.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from stratacache._breaker import CircuitBreaker
from stratacache._config import default_dir, parse_duration, parse_size, tier_from_url
from stratacache._stats import TierStats
from stratacache.codec import (
    DEFAULT_COMPRESS_THRESHOLD,
    DecodeError,
    DecodeMemo,
    decode,
    encode,
)
from stratacache.errors import (
    CacheClosedError,
    ConfigurationError,
    SerializationError,
    TierError,
    ValueTooLargeError,
)
from stratacache.keys import check_namespace
from stratacache.tiers.base import (
    DATA_PREFIX,
    META_PREFIX,
    MISS,
    LeaseSupport,
    SetEntry,
    Tier,
    TierBusy,
)

if TYPE_CHECKING:
    import asyncio

# asyncio, inspect, uuid and dataclasses are not imported here: together they are most of a
# 100 ms import budget, and sync users never need them. Async methods import asyncio lazily.

__all__ = ["TieredCache"]

logger = logging.getLogger("stratacache")
T = TypeVar("T")

#: Keys longer than this are stored under their sha256: Redis and SQLite index long keys
#: poorly, and "k:"/"h:" prefixes keep the two forms from ever colliding. Keys that a backend
#: cannot store as text (a lone surrogate from os.fsdecode, a NUL) are hashed too.
_MAX_RAW_KEY = 200
_GEN_SUFFIX = ":gen"
#: Lease tokens remembered per cache for reuse (see TieredCache._orphan).
_MAX_ORPHANS = 1024
#: How long other callers trust a generation refresh in flight (see _known_prefix) before
#: making their own: longer than any shared tier's timeout, so it only matters for a refresh
#: that was abandoned (its caller cancelled) without clearing its mark.
_REFRESH_PATIENCE = 5.0
#: Seconds without a failure after which a tier's next failure is a new outage, warned of.
_CALM = 10.0
#: Default bound on one value's serialized size. LLM answers and embeddings are kilobytes; a
#: value of this size already costs a quarter of the default memory tier, and Redis refuses
#: bulk strings over 512 MB outright. Readers apply the same bound (see :func:`decode`).
DEFAULT_MAX_VALUE_BYTES: Final = 64 * 1024**2
_SPLIT_URLS = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


class _Failed(enum.Enum):
    FAILED = "FAILED"
    UNUSABLE = "UNUSABLE"


_FAILED: Final = _Failed.FAILED
#: What :meth:`TieredCache._head` hands the plan for an entry it judged corrupt or expired.
_UNUSABLE: Final = _Failed.UNUSABLE


class _Call:
    """Ask the driver to call ``tiers[tier].<method>(*args)`` (or its async twin)."""

    __slots__ = ("args", "meta", "method", "tier")

    def __init__(self, tier: int, method: str, args: tuple[Any, ...], meta: bool = False) -> None:
        self.tier = tier
        self.method = method
        self.args = args
        #: Bookkeeping call (generation counter, lease): kept out of hit/miss counts.
        self.meta = meta


class _Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class _Compute:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


_Step = _Call | _Sleep | _Compute
Plan = Generator[_Step, Any, T]


class _Health:
    __slots__ = ("breaker", "failed_at", "failing", "stats")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.stats = TierStats()
        #: A warning was logged for the current trouble; the next one comes after _CALM
        #: seconds without a failure.
        self.failing = False
        self.failed_at = 0.0


class _Flight:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


_LIVE: weakref.WeakSet[TieredCache] = weakref.WeakSet()


class TieredCache:
    """A cache over ordered tiers, fastest first.

    * ``get`` reads the tiers in order; a hit in a slower tier is copied into the faster ones
      with the time it has left (the expiry travels inside the stored envelope).
    * ``set`` writes every tier; each tier's own ``ttl`` caps the entry's lifetime there.
    * ``get_or_set`` runs ``compute`` once for N concurrent misses in this process, and once
      across processes when a shared tier (Redis, else disk) can hold a short lease.
    * ``clear`` bumps the namespace's generation counter, an O(1) write: old entries become
      unreachable at once in this process and within ``generation_refresh`` seconds in
      others. It then deletes that namespace's older generations from the shared tiers (a
      scan of its exact key prefix only), so entries without a TTL cannot pile up in Redis.
      It never flushes a database, and a clear that misses a shared tier raises TierError.
    * A tier that raises or times out is a miss, counted in :meth:`stats`, logged once per
      outage, and skipped by its circuit breaker until a probe succeeds.

    Values are bytes or JSON-compatible. Use :meth:`from_urls` or :meth:`default` to build one.

    Example::

        cache = TieredCache.from_urls("memory://?max_bytes=64MB", "disk:///tmp/app",
                                      namespace="app", ttl="1d")
        cache.set("greeting", {"text": "hi"})
        cache.get("greeting")    # {'text': 'hi'}
    """

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        namespace: str = "default",
        ttl: float | str | None = None,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        max_value_bytes: int | str = DEFAULT_MAX_VALUE_BYTES,
        generation_refresh: float = 1.0,
        lock_timeout: float = 60.0,
        breaker_threshold: int = 3,
        breaker_backoff: float = 1.0,
        breaker_max_backoff: float = 2.0,
    ) -> None:
        if not tiers:
            raise ConfigurationError("TieredCache needs at least one tier")
        if not all(isinstance(t, Tier) for t in tiers):
            raise ConfigurationError("every tier must be a stratacache.tiers.Tier instance")
        finite = all(
            math.isfinite(x)
            for x in (generation_refresh, lock_timeout, breaker_backoff, breaker_max_backoff)
        )
        # inf/nan would overflow a lease's PX or never let the breaker probe again.
        if (
            not finite
            or generation_refresh < 0
            or not 0 < lock_timeout <= 86400
            or breaker_threshold < 1
            or breaker_backoff < 0
            or breaker_max_backoff < 0
        ):
            raise ConfigurationError(
                "generation_refresh must be >= 0, lock_timeout > 0 (at most a day), "
                "breaker_threshold >= 1 and the breaker back-offs >= 0, all finite"
            )
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int | str):
            raise ConfigurationError(
                f"max_value_bytes must be a number of bytes or a size like '16MB', "
                f"got {max_value_bytes!r}"
            )
        #: Bound on one value's serialized size: over it, ``set`` raises ValueTooLargeError,
        #: ``get_or_set`` and the adapters return the value uncached, readers see a miss.
        self.max_value_bytes = parse_size(max_value_bytes, "max_value_bytes")
        self.namespace = check_namespace(namespace)
        self.ttl = parse_duration(ttl)
        self.tiers: tuple[Tier, ...] = tuple(tiers)
        self.compress_threshold = compress_threshold
        self.generation_refresh = generation_refresh
        self.lock_timeout = lock_timeout
        self._health = [
            _Health(CircuitBreaker(breaker_threshold, breaker_backoff, breaker_max_backoff))
            for _ in self.tiers
        ]
        self._shared = tuple(i for i, t in enumerate(self.tiers) if t.shared)
        # Slowest shared tier that can lease: the widest audience for cross-process locks.
        self._lease_tier = next(
            (i for i in reversed(self._shared) if isinstance(self.tiers[i], LeaseSupport)), None
        )
        self._gens: dict[str, tuple[int, float]] = {}
        #: namespace -> when a caller began reading its generation afresh (_known_prefix)
        self._refreshing: dict[str, float] = {}
        #: ``too_large``/``unstorable``: writes refused because the value was over
        #: max_value_bytes / not serializable (raised to a ``set`` caller, skipped otherwise).
        self._requests = {"hits": 0, "misses": 0, "too_large": 0, "unstorable": 0}
        #: Framework adapters' views skip a value that cannot be stored instead of raising.
        self._skip_unstorable = False
        self._warned: set[str] = set()
        #: clear() calls per namespace made through this cache and its views (metrics)
        self._clears: dict[str, int] = {}
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._flights_lock = threading.Lock()
        self._aflights: dict[tuple[int, str, str], asyncio.Future[Any]] = {}
        #: lease key -> token of a lease maybe taken and not released (see _orphan)
        self._orphans: dict[str, str] = {}
        #: Shared with every with_namespace() view: closing one closes the tiers of all.
        self._closed = threading.Event()
        #: How to build this cache again in another process: ``(urls or None for default(),
        #: options)``; None for a cache built from tier objects, which cannot be pickled.
        self._recipe: tuple[tuple[str, ...] | None, dict[str, Any]] | None = None
        _LIVE.add(self)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_urls(cls, *urls: str, **options: Any) -> TieredCache:
        """Build from tier URLs in lookup order, fastest first.

        ``memory://?max_bytes=256MB&ttl=5m``, ``disk:///path?max_bytes=10GB``,
        ``redis://host:6379/0``, ``rediss://…`` (TLS), ``redis+cluster://h1:p1,h2:p2``.
        Keyword options are those of :class:`TieredCache` (``namespace``, ``ttl``, …).
        """
        if not urls:
            raise ConfigurationError("from_urls needs at least one tier URL, e.g. 'memory://'")
        if len(urls) == 1 and _SPLIT_URLS.search(urls[0]):
            urls = tuple(u.strip() for u in _SPLIT_URLS.split(urls[0]))
        cache = cls([tier_from_url(u) for u in urls], **options)
        cache._recipe = (tuple(urls), dict(options))
        return cache

    @classmethod
    def default(cls, **options: Any) -> TieredCache:
        """The embedded default: memory + disk under ``$STRATACACHE_DIR`` or the user cache dir.

        ``$STRATACACHE_URLS`` (comma-separated URLs) replaces the tiers without code changes.
        If the disk directory cannot be opened, the cache runs in memory and says so once.
        """
        env = os.environ.get("STRATACACHE_URLS", "").strip()
        if env:
            return cls.from_urls(
                *(u.strip() for u in _SPLIT_URLS.split(env) if u.strip()), **options
            )
        from stratacache.tiers.disk import DiskTier
        from stratacache.tiers.memory import MemoryTier

        memory = MemoryTier(256 * 1024**2)
        try:
            disk = DiskTier(default_dir() / "disk", 1024**3)
        except ConfigurationError as exc:
            logger.warning("stratacache: %s; running with the memory tier only", exc)
            cache = cls([memory], **options)
        else:
            cache = cls([memory, disk], **options)
        cache._recipe = (None, dict(options))
        return cache

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by configuration, not by content: a worker process (multiprocessing,
        IngestionPipeline workers) re-opens the same shared tiers and starts an empty memory
        tier. Only caches built by :meth:`from_urls` or :meth:`default` know how."""
        if self._recipe is None:
            raise TypeError(
                "a TieredCache built from tier objects cannot be pickled; build it with "
                "TieredCache.from_urls(...) or TieredCache.default() to use it in other processes"
            )
        urls, options = self._recipe
        return (_rebuild, (urls, {**options, "namespace": self.namespace}))

    def with_namespace(self, namespace: str) -> TieredCache:
        """A view of the same tiers under another namespace (shares tiers, stats, breakers)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)  # not copy.copy: that would go through __reduce__
        view.namespace = check_namespace(namespace)
        return view

    def _lenient(self) -> TieredCache:
        """A view (same namespace) whose writes skip a value that cannot be stored (too large,
        not serializable), counting and logging it, instead of raising.

        For framework adapters: their caller is the user's chain, which must never fail
        because an answer did not fit in the cache. ``get_or_set`` behaves so on every view.
        """
        view = self.with_namespace(self.namespace)
        view._skip_unstorable = True
        return view

    # -- keys and generations ----------------------------------------------------------------

    def _gen_key(self, namespace: str) -> str:
        return f"{META_PREFIX}{namespace}:gen"

    def _refresh_generation(self, namespace: str) -> Plan[int]:
        """Read the namespace generation from every shared tier; the highest one wins and is
        written back to tiers that lag (a restarted Redis, a disk that missed a clear)."""
        started = time.monotonic()
        self._refreshing[namespace] = started
        try:
            return (yield from self._read_generation(namespace))
        finally:
            if self._refreshing.get(namespace) == started:
                del self._refreshing[namespace]

    def _read_generation(self, namespace: str) -> Plan[int]:
        known = self._gens.get(namespace, (0, 0.0))[0]
        key = self._gen_key(namespace)
        seen: dict[int, int] = {}
        for i in self._shared:
            raw = yield _Call(i, "get", (key,), meta=True)
            if raw is _FAILED:
                continue
            try:
                seen[i] = int(raw) if isinstance(raw, bytes) else -1
            except ValueError:
                seen[i] = -1
        gen = max([known, *seen.values()])
        for i, value in seen.items():
            if value < 0:
                # First use of the namespace in this tier: the generation key is also its
                # registry entry (see _namespaces_plan). Set-if-absent, so that a clear()
                # racing with us in another process is never undone.
                yield _Call(i, "add", (key, str(gen).encode()), meta=True)
            elif value < gen:
                yield _Call(i, "set", (key, str(gen).encode(), None), meta=True)
        self._gens[namespace] = (gen, time.monotonic())
        return gen

    def _known_prefix(self) -> str | None:
        """The key prefix when the cached generation is still fresh: the hit path's case,
        answered without entering a plan."""
        ns = self.namespace
        entry = self._gens.get(ns)
        if entry is None:
            return None
        if not self._shared or time.monotonic() - entry[1] < self.generation_refresh:
            return f"{DATA_PREFIX}{ns}:{entry[0]}:"
        # Due for a refresh that another caller is already making: go on with the known
        # generation rather than queue behind it on a slow shared tier. One caller per
        # refresh waits (at most the tier's timeout, and nobody once the breaker is open);
        # the others see another process's clear() at most that much later.
        started = self._refreshing.get(ns)
        if started is not None and time.monotonic() - started < _REFRESH_PATIENCE:
            return f"{DATA_PREFIX}{ns}:{entry[0]}:"
        return None

    def _prefix(self) -> Plan[str]:
        prefix = self._known_prefix()
        if prefix is None:
            gen = yield from self._refresh_generation(self.namespace)
            prefix = f"{DATA_PREFIX}{self.namespace}:{gen}:"
        return prefix

    def _pkey(self, key: str) -> Plan[str]:
        storage_key = self._storage_key(key)
        prefix = self._known_prefix() or (yield from self._prefix())
        return prefix + storage_key

    @staticmethod
    def _storage_key(key: str) -> str:
        if not isinstance(key, str):
            raise SerializationError(f"cache keys must be str, got {type(key).__name__!r}")
        if len(key) <= _MAX_RAW_KEY and "\x00" not in key:
            if key.isascii():
                return "k:" + key
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                pass  # a lone surrogate: SQLite and redis-py would raise on every call
            else:
                return "k:" + key
        # surrogatepass is injective on every str, so distinct keys keep distinct hashes.
        return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    # -- plans -------------------------------------------------------------------------------

    def _tier_ttl(self, i: int, ttl: float | None) -> float | None:
        cap = self.tiers[i].ttl
        if ttl is None:
            return cap
        return ttl if cap is None else min(ttl, cap)

    def _resolve_ttl(self, ttl: float | str | None) -> float | None:
        return self.ttl if ttl is None else parse_duration(ttl)

    def _judge(self, i: int, data: bytes, now: float) -> tuple[Any, float | None]:
        """Decode a hit from tier ``i`` into ``(value, seconds left)``; ``(MISS, None)`` when
        it is corrupt, foreign or expired, and the caller deletes it.

        Entries of in-process tiers go through :data:`_DECODED`: a memory tier returns the
        object it stores, so a repeated hit skips the checksum and the payload copy. Bytes
        from shared tiers are fresh objects every time; for them the memo would only cost.
        """
        try:
            if self.tiers[i].shared:
                value, expires_at = decode(data, self.max_value_bytes)
            else:
                value, expires_at = _DECODED.peek(data) or _DECODED.decode(
                    data, self.max_value_bytes
                )
        except DecodeError as exc:
            stats = self._health[i].stats
            stats.corrupt += 1
            log = logger.warning if stats.corrupt == 1 else logger.debug
            log("stratacache: %s held an unusable entry (%s); deleted it", self.tiers[i].name, exc)
            return MISS, None
        if expires_at is None:
            return value, None
        if expires_at <= now:
            return MISS, None
        return value, expires_at - now

    def _get_plan(
        self, key: str, count: bool = True, head: tuple[str, Any] | None = None
    ) -> Plan[Any]:
        """Read-through lookup; ``count=False`` for the re-reads of single-flight, which are
        part of one request that was already counted. ``head`` is ``(storage key, what tier 0
        returned)`` when :meth:`_head` already read the fastest tier: the plan goes on from
        there, so that tier is neither read nor counted twice."""
        if head is None:
            storage_key = self._storage_key(key)
            pk = (self._known_prefix() or (yield from self._prefix())) + storage_key
        else:
            pk = head[0]
        now = time.time()
        for i in range(len(self.tiers)):
            if i == 0 and head is not None:
                data = head[1]
                if data is _UNUSABLE:
                    yield _Call(0, "delete", (pk,))
                    continue
            else:
                data = yield _Call(i, "get", (pk,))
            if type(data) is not bytes:
                continue
            value, remaining = self._judge(i, data, now)
            if value is MISS:
                yield _Call(i, "delete", (pk,))
                continue
            for j in range(i):  # promote with the time it has left, never a fresh TTL
                yield _Call(j, "set", (pk, data, self._tier_ttl(j, remaining)))
            if count:
                self._requests["hits"] += 1
            return value
        if count:
            self._requests["misses"] += 1
        return MISS

    def _get_many_plan(self, keys: Iterable[str]) -> Plan[dict[str, Any]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        prefix = yield from self._prefix()
        by_pk = dict(zip(_storage_keys(prefix, wanted), wanted, strict=True))
        pending = list(by_pk)
        found: dict[str, Any] = {}
        promote: dict[int, list[SetEntry]] = {}
        now = time.time()
        for i in range(len(self.tiers)):
            if not pending:
                break
            got = yield _Call(i, "get_many", (pending,))
            if got is _FAILED:
                continue
            for pk, data in got.items():
                value, remaining = self._judge(i, data, now)
                if value is MISS:
                    yield _Call(i, "delete", (pk,))
                    continue
                found[pk] = value
                for j in range(i):
                    promote.setdefault(j, []).append((pk, data, self._tier_ttl(j, remaining)))
            pending = [pk for pk in pending if pk not in found]
        for j, entries in promote.items():
            yield _Call(j, "set_many", (entries,))
        self._requests["hits"] += len(found)
        self._requests["misses"] += len(pending)
        return {by_pk[pk]: value for pk, value in found.items()}

    def _envelope(self, value: Any, ttl: float | None) -> bytes:
        return encode(
            value, time.time() + ttl if ttl else None, self.compress_threshold, self.max_value_bytes
        )

    def _storable(self, value: Any, ttl: float | None, strict: bool | None = None) -> bytes | None:
        """The envelope of ``value``; None, counted and logged, when it cannot be stored and
        the writer is not strict (``strict=None``: strict unless this is an adapter's view).

        Nothing is written or deleted for a refused value: the write simply did not happen,
        so a reader sees whatever it saw before, never part of the new value.

        :raises SerializationError: (ValueTooLargeError included) for a strict writer.
        """
        try:
            return self._envelope(value, ttl)
        except SerializationError as exc:
            kind = "too_large" if isinstance(exc, ValueTooLargeError) else "unstorable"
            self._requests[kind] += 1
            if strict if strict is not None else not self._skip_unstorable:
                raise
            first = kind not in self._warned
            self._warned.add(kind)
            (logger.warning if first else logger.debug)(
                "stratacache: namespace %r: value not cached: %s%s",
                self.namespace, exc,
                " (further ones are logged at DEBUG and counted in stats())" if first else "",
            )  # fmt: skip
            return None

    def _set_plan(
        self, key: str, value: Any, ttl: float | None, strict: bool | None = None
    ) -> Plan[None]:
        data = self._storable(value, ttl, strict)
        if data is None:
            return
        pk = yield from self._pkey(key)
        for i in range(len(self.tiers)):
            yield _Call(i, "set", (pk, data, self._tier_ttl(i, ttl)))

    def _set_many_plan(self, items: Mapping[str, Any], ttl: float | None) -> Plan[None]:
        if not items:
            return
        # A strict writer's error comes before anything is written: the batch is all or nothing.
        encoded = [(k, d) for k, v in items.items() if (d := self._storable(v, ttl)) is not None]
        if not encoded:
            return
        prefix = yield from self._prefix()
        for i in range(len(self.tiers)):
            tier_ttl = self._tier_ttl(i, ttl)
            entries = [(prefix + self._storage_key(k), d, tier_ttl) for k, d in encoded]
            yield _Call(i, "set_many", (entries,))

    def _add_plan(self, key: str, value: Any, ttl: float | None) -> Plan[bool]:
        """Set-if-absent. The slowest shared tier (or, with none, the last tier) decides
        atomically; the others are written only after it said yes, so two processes racing
        for one key never both win."""
        data = self._storable(value, ttl)
        if data is None:
            return False
        pk = yield from self._pkey(key)
        judge = self._shared[-1] if self._shared else len(self.tiers) - 1
        won = yield _Call(judge, "add", (pk, data, self._tier_ttl(judge, ttl)))
        if won is not True:
            return False
        for i in range(len(self.tiers)):
            if i != judge:
                yield _Call(i, "set", (pk, data, self._tier_ttl(i, ttl)))
        return True

    def _delete_plan(self, key: str) -> Plan[None]:
        pk = yield from self._pkey(key)
        for i in range(len(self.tiers)):
            yield _Call(i, "delete", (pk,))

    def _clear_plan(self, namespace: str) -> Plan[None]:
        """Bump the generation in every shared tier, then sweep the older generations.

        A shared tier that missed the bump keeps serving the old entries to other processes,
        so that is reported (TierError) rather than returned as success; this process still
        uses the new generation. The sweep is best effort: an entry it misses (a process still
        writing the old generation) is unreachable anyway and goes at the next clear.
        """
        gen = yield from self._refresh_generation(namespace)
        key = self._gen_key(namespace)
        missed = []
        for i in self._shared:
            done = yield _Call(i, "set", (key, str(gen + 1).encode(), None), meta=True)
            if done is _FAILED:
                missed.append(self.tiers[i].name)
        self._gens[namespace] = (gen + 1, time.monotonic())
        self._clears[namespace] = self._clears.get(namespace, 0) + 1
        if missed:
            raise TierError(
                f"clear({namespace!r}) could not reach tier(s) {', '.join(missed)}: other "
                "processes using them still see the old entries; retry when they are back"
            )
        prefix = f"{DATA_PREFIX}{namespace}:"
        for i in self._shared:
            keys = yield _Call(i, "scan", (prefix,), meta=True)
            if keys is _FAILED:
                continue
            old = [k for k in keys if _generation_of(k, prefix) < gen + 1]
            if old:
                yield _Call(i, "delete_many", (old,), meta=True)

    def _namespaces_plan(self) -> Plan[list[str]]:
        """Namespaces with a generation in a shared tier (every namespace used since this
        version), plus those this process used."""
        found = set(self._gens)
        for i in self._shared:
            keys = yield _Call(i, "scan", (META_PREFIX,), meta=True)
            if keys is _FAILED:
                continue
            for key in keys:
                name = key[len(META_PREFIX) : -len(_GEN_SUFFIX)]
                if key.endswith(_GEN_SUFFIX) and _valid_namespace(name):
                    found.add(name)
        return sorted(found)

    def _live_prefix(self, namespace: str) -> str:
        """``sc:<namespace>:<generation>:`` with the generation read afresh from the shared
        tiers, for ``stratacache export``: the entries under this exact prefix are the
        namespace's live ones; older generations are cleared entries awaiting their sweep."""
        gen = self._drive(self._refresh_generation(check_namespace(namespace)))
        return f"{DATA_PREFIX}{namespace}:{gen}:"

    def _restore(self, entries: Sequence[tuple[str, Any, float | None]]) -> list[str]:
        """``set_many`` for entries known by their storage key (``k:…`` or ``h:…``), for
        ``stratacache import``: an exported hashed key cannot be turned back into the key the
        caller passed, only into its storage form. Same envelope, generation and per-tier TTL
        caps as :meth:`set_many`; returns the names of the tiers that did not take the write,
        which ``set_many`` would swallow but an import must report."""
        return self._drive(self._restore_plan(entries))

    def _restore_plan(self, entries: Sequence[tuple[str, Any, float | None]]) -> Plan[list[str]]:
        # An entry this cache would refuse (over max_value_bytes) is skipped, not the import.
        encoded = [
            (skey, data, ttl)
            for skey, value, ttl in entries
            if (data := self._storable(value, ttl, strict=False)) is not None
        ]
        failed: list[str] = []
        if not encoded:
            return failed
        prefix = yield from self._prefix()
        for i in range(len(self.tiers)):
            batch = [(prefix + skey, data, self._tier_ttl(i, ttl)) for skey, data, ttl in encoded]
            done = yield _Call(i, "set_many", (batch,))
            if done is _FAILED:
                failed.append(self.tiers[i].name)
        return failed

    def _fill_plan(self, key: str, compute: Callable[[], Any], ttl: float | None) -> Plan[Any]:
        """After a miss: take the cross-process lease (or wait for its holder's value),
        compute, store, release."""
        lease = self._lease_tier
        token: str | None = None
        lease_key = ""
        if lease is not None:
            pk = yield from self._pkey(key)
            lease_key = f"{META_PREFIX}lease:{pk}"
            candidate = self._orphans.pop(lease_key, None) or os.urandom(16).hex()
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.005
            while True:
                got = yield _Call(
                    lease, "acquire_lease", (lease_key, candidate, self.lock_timeout), meta=True
                )
                if got is True:
                    token = candidate
                    break
                if got is _FAILED or time.monotonic() > deadline:
                    if got is _FAILED:  # the lease may have been taken, its reply lost
                        self._orphan(lease_key, candidate)
                    break  # lease tier down or holder too slow: compute ourselves
                yield _Sleep(delay)
                delay = min(delay * 2, 0.2)
                value = yield from self._get_plan(key, count=False)
                if value is not MISS:
                    return value
        try:
            if token is not None:
                # Another process may have computed, stored and released between our miss and
                # our lease: read again, or the key is computed twice.
                value = yield from self._get_plan(key, count=False)
                if value is not MISS:
                    return value
            value = yield _Compute(compute)
            # A value that cannot be stored is still the caller's answer: returned uncached.
            yield from self._set_plan(key, value, ttl, strict=False)
        finally:
            if token is not None and lease is not None:
                released = yield _Call(lease, "release_lease", (lease_key, token), meta=True)
                if released is _FAILED:
                    self._orphan(lease_key, token)
        return value

    def _orphan(self, lease_key: str, token: str) -> None:
        """Remember the token of a lease that may still be held (its release failed, or the
        reply to taking it was lost: the tier failed mid-fill). The next fill of the key here
        asks for the lease with the same token, which a tier that recognises its own token
        (Redis) grants at once; with a new one it waited ``lock_timeout`` (a minute) for a
        value nobody was computing."""
        with self._flights_lock:  # a failure path: the lock costs nothing on hits
            orphans = self._orphans
            orphans[lease_key] = token
            if len(orphans) > _MAX_ORPHANS:  # an outage of many keys: the oldest just expire
                del orphans[next(iter(orphans))]

    # -- drivers -----------------------------------------------------------------------------

    def _ok(self, call: _Call, result: Any, elapsed: float) -> None:
        health = self._health[call.tier]
        closed = health.breaker.success()
        if closed or health.failing:
            # A partial fault (a read-only directory fails only the writes of new files) mixes
            # successes and failures: the outage it causes ends after _CALM quiet seconds,
            # not at each success, or it would warn on every failed call.
            calm = time.monotonic() - health.failed_at >= _CALM
            if closed or calm:
                logger.info("stratacache: tier %s recovered", self.tiers[call.tier].name)
            if calm:
                health.failing = False
        if call.meta:
            return
        stats = health.stats
        method = call.method
        if method == "get":
            stats.read_latency.append(elapsed)
            if isinstance(result, bytes):
                stats.hits += 1
                stats.bytes_read += len(result)
            else:
                stats.misses += 1
        elif method == "get_many":
            stats.read_latency.append(elapsed)
            stats.hits += len(result)
            stats.misses += len(call.args[0]) - len(result)
            stats.bytes_read += sum(map(len, result.values()))
        elif method == "set":
            stats.write_latency.append(elapsed)
            stats.writes += 1
            stats.bytes_written += len(call.args[1])
        elif method == "set_many":
            stats.write_latency.append(elapsed)
            stats.writes += len(call.args[0])
            stats.bytes_written += sum(len(e[1]) for e in call.args[0])

    def _fail(self, call: _Call, exc: Exception) -> _Failed:
        health = self._health[call.tier]
        if isinstance(exc, TierBusy):
            # Saturated, not sick: a miss for this call, never a step towards opening the
            # breaker (see TierBusy).
            health.stats.busy += 1
            logger.debug("stratacache: tier %s busy: %s", self.tiers[call.tier].name, exc)
            return _FAILED
        health.stats.errors += 1
        health.failed_at = time.monotonic()
        # A key the backend cannot encode is that call's problem, not the tier's health: it
        # must not open the breaker and turn every valid key into a miss.
        opened = not isinstance(exc, UnicodeError) and health.breaker.failure(time.monotonic())
        name = self.tiers[call.tier].name
        if not health.failing:
            # Once per outage: a dead Redis must not write a warning per request.
            health.failing = True
            logger.warning(
                "stratacache: tier %s failed on %s (%s: %s); serving it as a miss and "
                "retrying it with back-off until it recovers",
                name, call.method, type(exc).__name__, exc,
            )  # fmt: skip
        else:
            logger.debug(
                "stratacache: tier %s failed again (breaker opened: %s): %r", name, opened, exc
            )
        return _FAILED

    def _skipped(self, call: _Call) -> _Failed:
        self._health[call.tier].stats.skipped += 1
        return _FAILED

    def _call_tier(self, call: _Call) -> Any:
        if not self._health[call.tier].breaker.allow():  # _skip, inlined on the hot path
            return self._skipped(call)
        start = time.perf_counter()
        try:
            result = getattr(self.tiers[call.tier], call.method)(*call.args)
        except Exception as exc:
            return self._fail(call, exc)
        self._ok(call, result, time.perf_counter() - start)
        return result

    async def _acall_tier(self, call: _Call) -> Any:
        if not self._health[call.tier].breaker.allow():
            return self._skipped(call)
        start = time.perf_counter()
        try:
            result = await getattr(self.tiers[call.tier], "a" + call.method)(*call.args)
        except Exception as exc:
            return self._fail(call, exc)
        self._ok(call, result, time.perf_counter() - start)
        return result

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise CacheClosedError(
                f"{self!r} was closed; build a new TieredCache (a closed cache does not reconnect)"
            )

    def _drive(self, plan: Plan[T]) -> T:
        self._check_open()
        try:
            step = next(plan)
            while True:
                try:
                    if type(step) is _Call:
                        result = self._call_tier(step)
                    elif type(step) is _Sleep:
                        time.sleep(step.seconds)
                        result = None
                    else:
                        assert isinstance(step, _Compute)
                        result = step.fn()
                except BaseException as exc:  # only the user's compute can raise here
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _adrive(self, plan: Plan[T]) -> T:
        import asyncio

        self._check_open()
        try:
            step = next(plan)
            while True:
                try:
                    if type(step) is _Call:
                        result = await self._acall_tier(step)
                    elif type(step) is _Sleep:
                        await asyncio.sleep(step.seconds)
                        result = None
                    else:
                        assert isinstance(step, _Compute)
                        result = step.fn()
                        if hasattr(result, "__await__"):
                            result = await result
                except BaseException as exc:
                    step = plan.throw(exc)
                else:
                    step = plan.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # -- public API: sync --------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` (pass ``stratacache.MISS`` to tell a stored
        ``None`` from a miss)."""
        value, head = self._head(key)
        if value is MISS:
            value = self._drive(self._get_plan(key, head=head))
        return default if value is MISS else value

    def _head(self, key: str) -> tuple[Any, tuple[str, Any] | None]:
        """The hit path's common case without a plan: the generation is fresh and the
        fastest tier holds a live entry. Returns ``(value, None)`` for that hit; otherwise
        ``(MISS, head)`` for :meth:`_get_plan` to go on from, where ``head`` is None when
        tier 0 was not read (the generation must be refreshed first).

        This is the first step of :meth:`_get_plan`, taken outside the generator: creating,
        driving and finishing a plan costs more than a memory tier's whole lookup. Everything
        else (misses, unusable entries, promotion, counting misses) stays in the plan.
        """
        pk = self._head_key(key)
        if pk is None:
            return MISS, None
        return self._head_judge(pk, self._call_tier(_Call(0, "get", (pk,))))

    async def _ahead(self, key: str) -> tuple[Any, tuple[str, Any] | None]:
        """:meth:`_head` for a fastest tier with a native async client (Redis)."""
        pk = self._head_key(key)
        if pk is None:
            return MISS, None
        return self._head_judge(pk, await self._acall_tier(_Call(0, "get", (pk,))))

    def _head_key(self, key: str) -> str | None:
        self._check_open()
        prefix = self._known_prefix()
        return None if prefix is None else prefix + self._storage_key(key)

    def _head_judge(self, pk: str, data: Any) -> tuple[Any, tuple[str, Any] | None]:
        if type(data) is bytes:
            value, _ = self._judge(0, data, time.time())
            if value is not MISS:
                self._requests["hits"] += 1
                return value, None
            data = _UNUSABLE  # judged (and counted) once: the plan only deletes it
        return MISS, (pk, data)

    def set(self, key: str, value: Any, ttl: float | str | None = None) -> None:
        """Store ``value`` in every tier; ``ttl`` overrides the cache default.

        :raises SerializationError: if ``value`` is neither bytes nor JSON-compatible (nothing
            is written; an entry already under ``key`` stays).
        :raises ValueTooLargeError: if its serialized form is over ``max_value_bytes``.
        """
        self._drive(self._set_plan(key, value, self._resolve_ttl(ttl)))

    def delete(self, key: str) -> None:
        self._drive(self._delete_plan(key))

    def add(self, key: str, value: Any, ttl: float | str | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent in the deciding (slowest shared) tier;
        True if this call stored it. A failing deciding tier counts as "not stored"."""
        return self._drive(self._add_plan(key, value, self._resolve_ttl(ttl)))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The found keys only, each read from the fastest tier that has it."""
        return self._drive(self._get_many_plan(keys))

    def set_many(self, mapping: Mapping[str, Any], ttl: float | str | None = None) -> None:
        self._drive(self._set_many_plan(mapping, self._resolve_ttl(ttl)))

    def get_or_set(self, key: str, compute: Callable[[], T], ttl: float | str | None = None) -> T:
        """The cached value, or ``compute()``'s result stored and returned.

        Concurrent callers that miss on the same key wait for one ``compute``; if it raises,
        they all see that exception and nothing is stored. A result that cannot be stored
        (over ``max_value_bytes``, not serializable) is still returned, uncached: counted in
        :meth:`stats` (``too_large``/``unstorable``) and logged once.
        """
        value = self.get(key, MISS)
        if value is not MISS:
            return value  # type: ignore[no-any-return]
        ttl_s = self._resolve_ttl(ttl)
        flight_key = (self.namespace, key)
        with self._flights_lock:
            flight = self._flights.get(flight_key)
            leader = flight is None
            if flight is None:
                flight = self._flights[flight_key] = _Flight()
        if not leader:
            flight.event.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[no-any-return]
        try:
            flight.value = self._drive(self._fill_plan(key, compute, ttl_s))
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._flights_lock:
                del self._flights[flight_key]
            flight.event.set()
        return flight.value  # type: ignore[no-any-return]

    def clear(self, namespace: str | None = None) -> None:
        """Invalidate one namespace (default: this cache's); other namespaces and whatever
        else shares the Redis database are untouched.

        :raises TierError: if a shared tier did not take the new generation (other processes
            would keep serving the old entries). Clearing is an admin action; retry it.
        """
        ns = check_namespace(namespace) if namespace else self.namespace
        self._drive(self._clear_plan(ns))

    def _namespaces(self) -> list[str]:
        """Every namespace stratacache has used in the shared tiers (for ``stratacache clear``)."""
        return self._drive(self._namespaces_plan())

    def close(self) -> None:
        """Release connections and files; the cache (and its with_namespace views) then
        raises CacheClosedError instead of reconnecting."""
        if self._closed.is_set():
            return
        self._closed.set()
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:  # closing a dead connection must not mask the caller's exit
                logger.debug("stratacache: closing %s failed: %r", tier.name, exc)

    def __enter__(self) -> TieredCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API: async -------------------------------------------------------------------

    async def aget(self, key: str, default: Any = None) -> Any:
        # A tier whose async twin is its sync code (memory, disk) is read in _head without a
        # coroutine; one with a native async client (Redis) is awaited in _ahead.
        if _sync_aget(self.tiers[0]):
            value, head = self._head(key)
        else:
            value, head = await self._ahead(key)
        if value is MISS:
            value = await self._adrive(self._get_plan(key, head=head))
        return default if value is MISS else value

    async def aset(self, key: str, value: Any, ttl: float | str | None = None) -> None:
        await self._adrive(self._set_plan(key, value, self._resolve_ttl(ttl)))

    async def aadd(self, key: str, value: Any, ttl: float | str | None = None) -> bool:
        return await self._adrive(self._add_plan(key, value, self._resolve_ttl(ttl)))

    async def adelete(self, key: str) -> None:
        await self._adrive(self._delete_plan(key))

    async def aget_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return await self._adrive(self._get_many_plan(keys))

    async def aset_many(self, mapping: Mapping[str, Any], ttl: float | str | None = None) -> None:
        await self._adrive(self._set_many_plan(mapping, self._resolve_ttl(ttl)))

    async def aget_or_set(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]] | Callable[[], T],
        ttl: float | str | None = None,
    ) -> T:
        """Async :meth:`get_or_set`; ``compute`` may be sync or async."""
        import asyncio

        while True:
            value = await self.aget(key, MISS)
            if value is not MISS:
                return value  # type: ignore[no-any-return]
            loop = asyncio.get_running_loop()
            flight_key = (id(loop), self.namespace, key)
            waiting = self._aflights.get(flight_key)
            if waiting is None:
                break
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if waiting.cancelled():
                    continue  # the leader was cancelled, not us: take over
                raise
        future: asyncio.Future[Any] = loop.create_future()
        self._aflights[flight_key] = future
        try:
            value = await self._adrive(self._fill_plan(key, compute, self._resolve_ttl(ttl)))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no waiter is not an error
            raise
        else:
            future.set_result(value)
        finally:
            self._aflights.pop(flight_key, None)
        return value  # type: ignore[no-any-return]

    async def aclear(self, namespace: str | None = None) -> None:
        ns = check_namespace(namespace) if namespace else self.namespace
        await self._adrive(self._clear_plan(ns))

    async def aclose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for tier in self.tiers:
            try:
                await tier.aclose()
            except Exception as exc:
                logger.debug("stratacache: closing %s failed: %r", tier.name, exc)

    async def __aenter__(self) -> TieredCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Request totals and, per tier: hits, misses, errors, corrupt entries, calls skipped
        by the breaker, calls that found the tier busy (a miss that is not an error), bytes,
        p50/p99 read/write latency in microseconds, and the tier's own contention counters
        (:meth:`Tier.load_stats`)."""
        tiers = []
        for tier, health in zip(self.tiers, self._health, strict=True):
            try:
                size = None if self._closed.is_set() else tier.size_bytes()
            except Exception:
                size = None
            tiers.append(
                {
                    "name": tier.name,
                    "kind": tier.kind,
                    "breaker": "open" if health.breaker.is_open else "closed",
                    "size_bytes": size,
                    **health.stats.summary(),
                    **tier.load_stats(),
                }
            )
        return {"namespace": self.namespace, **self._requests, "tiers": tiers}

    def __repr__(self) -> str:
        names = ", ".join(t.name for t in self.tiers)
        return f"<TieredCache namespace={self.namespace!r} tiers=[{names}]>"


#: Decoded bytes values of in-process tiers' entries (see :meth:`TieredCache._judge`): one
#: per process, as it is keyed by envelope content and so is right for every cache.
_DECODED: Final = DecodeMemo(32 * 1024**2)

_SYNC_AGET: dict[type[Tier], bool] = {}


def _sync_aget(tier: Tier) -> bool:
    """Does ``tier.aget`` just run ``tier.get`` (the :class:`Tier` default)?"""
    cls = type(tier)
    known = _SYNC_AGET.get(cls)
    if known is None:
        known = _SYNC_AGET[cls] = getattr(cls, "aget", None) is Tier.aget
    return known


def _storage_keys(prefix: str, keys: Sequence[str]) -> list[str]:
    """``prefix + _storage_key(k)`` for each key, with the common case (short ASCII, no NUL)
    inline: a batch of thousands of embedding keys would otherwise pay a call per key."""
    return [
        prefix + "k:" + k
        if type(k) is str and len(k) <= _MAX_RAW_KEY and k.isascii() and "\x00" not in k
        else prefix + TieredCache._storage_key(k)
        for k in keys
    ]


def _generation_of(key: str, prefix: str) -> int:
    """The generation in ``sc:<ns>:<gen>:…``; a huge number (never swept) if it has none."""
    head = key[len(prefix) :].split(":", 1)[0]
    return int(head) if head.isdigit() else 2**63


def _valid_namespace(name: str) -> bool:
    try:
        check_namespace(name)
    except ConfigurationError:
        return False
    return True


def _rebuild(urls: tuple[str, ...] | None, options: dict[str, Any]) -> TieredCache:
    return (
        TieredCache.default(**options) if urls is None else TieredCache.from_urls(*urls, **options)
    )


def live_caches() -> list[TieredCache]:
    """Every TieredCache not yet garbage-collected (for process-wide stats)."""
    return list(_LIVE)
