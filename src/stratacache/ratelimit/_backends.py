"""Where budgets live: this process (:class:`LocalBudget`) or a Redis server (:class:`RedisBudget`).

Both speak the same four operations (reserve, adjust, clamp, pause) over two budgets, requests
and tokens. Neither sleeps: waiting is the limiter's job, so the same budget serves threads
and coroutines alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stratacache._config import redact_url
from stratacache.errors import ConfigurationError, missing_extra
from stratacache.ratelimit import _gcra
from stratacache.ratelimit._gcra import Limit
from stratacache.ratelimit._lua import SCRIPT
from stratacache.tiers._loops import LoopClients

__all__ = ["LocalBudget", "RedisBudget"]

Limits = Sequence[Limit | None]


class LocalBudget:
    """Two TATs under a lock; every operation is a few float comparisons, so a thread lock is
    also safe to take from a coroutine."""

    def __init__(self) -> None:
        self._tats: list[float | None] = [None, None]
        self._pause_until = 0.0
        self._lock = threading.Lock()

    def reserve(
        self, limits: Limits, costs: Sequence[float], max_wait: float | None
    ) -> tuple[bool, float]:
        with self._lock:
            now = time.monotonic()
            wait, new = _gcra.reserve(self._tats, limits, costs, now, self._pause_until, max_wait)
            if new is None:
                return False, wait
            self._tats = new
            return True, wait

    def adjust(self, limits: Limits, amounts: Sequence[float]) -> None:
        with self._lock:
            now = time.monotonic()
            for i, (limit, amount) in enumerate(zip(limits, amounts, strict=True)):
                if limit is not None and amount:
                    self._tats[i] = _gcra.adjust(self._tats[i], limit, amount, now)

    def clamp(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        with self._lock:
            now = time.monotonic()
            for i, (limit, left) in enumerate(zip(limits, remaining, strict=True)):
                if limit is not None and left is not None:
                    self._tats[i] = _gcra.clamp(self._tats[i], limit, left, now)

    def drain(self, limits: Limits, empty_at: float) -> None:
        """Make both buckets empty at ``empty_at`` (or now, if later), keeping a schedule
        already further out.

        For a limiter that falls back here because its shared Redis budget failed: that
        budget's burst was most likely spent, and the grants it scheduled may still be
        waiting for their slots (``empty_at``, see :attr:`RedisBudget.granted_until`); a
        full local bucket would be a second burst on top of them.
        """
        with self._lock:
            start = max(time.monotonic(), empty_at)
            for i, limit in enumerate(limits):
                if limit is not None:
                    tat = self._tats[i]
                    full = start + limit.burst / limit.rate
                    self._tats[i] = full if tat is None else max(tat, full)

    def remaining(self, limits: Limits) -> list[float | None]:
        """What each bucket holds now, in units; negative when reservations are queued beyond
        an empty bucket (None for a budget without limit)."""
        with self._lock:
            now = time.monotonic()
            out: list[float | None] = []
            for tat, limit in zip(self._tats, limits, strict=True):
                if limit is None:
                    out.append(None)
                else:
                    used = 0.0 if tat is None else max(0.0, tat - now) * limit.rate
                    out.append(limit.burst - used)
            return out

    def pause(self, seconds: float) -> float:
        """Returns how far schedules moved (0 when an equal or longer pause was already on)."""
        with self._lock:
            now = time.monotonic()
            start = max(self._pause_until, now)
            until = max(self._pause_until, now + seconds)
            moved = until - start
            if moved > 0:
                self._tats = [_gcra.shift(t, now, moved) for t in self._tats]
                self._pause_until = until
            return moved

    async def areserve(
        self, limits: Limits, costs: Sequence[float], max_wait: float | None
    ) -> tuple[bool, float]:
        return self.reserve(limits, costs, max_wait)

    async def aadjust(self, limits: Limits, amounts: Sequence[float]) -> None:
        self.adjust(limits, amounts)

    async def aclamp(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        self.clamp(limits, remaining)

    async def apause(self, seconds: float) -> float:
        return self.pause(seconds)


def _pairs(limits: Limits, values: Sequence[float | None], missing: float) -> list[str]:
    args: list[str] = []
    for limit, value in zip(limits, values, strict=True):
        rate, burst = (limit.rate, limit.burst) if limit is not None else (0.0, 0.0)
        args += [repr(rate), repr(burst), repr(missing if value is None else float(value))]
    return args


class RedisBudget:
    """The same budgets in Redis, shared by every process that uses the same ``name``.

    Short socket timeouts and no retries: a limiter that waits on a sick Redis adds its timeout
    to every LLM call, so the limiter falls back to a :class:`LocalBudget` instead. On a
    cluster, one retry: redis-py reads the slot map again after a connection error, and the
    retry is what reaches a replica promoted in the meantime (its default of ten retries made
    a dead primary cost eleven connection attempts per call).
    """

    def __init__(self, url: str, name: str, timeout: float = 0.25) -> None:
        try:
            import redis
        except ImportError as exc:
            raise missing_extra("redis", "redis") from exc
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}:
            raise ConfigurationError(
                f"unsupported Redis URL scheme {scheme!r} in {redact_url(url)!r}"
            )
        self.cluster = scheme.endswith("+cluster")
        self._url = urlunsplit((scheme.removesuffix("+cluster"), parts.netloc, parts.path, "", ""))
        self._nodes: list[tuple[str, int]] = []
        if self.cluster:
            for node in parts.netloc.rsplit("@", 1)[-1].split(","):
                host, _, port = node.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ConfigurationError(f"bad cluster node {node!r} in {redact_url(url)!r}")
                self._nodes.append((host.strip("[]"), int(port)))
        self._password = parts.password
        self._username = parts.username
        self._ssl = scheme.startswith("rediss")
        self._timeout = timeout
        tag = "{" + name.replace("{", "").replace("}", "") + "}"
        self.keys = [f"stratacache:rl:{tag}:req", f"stratacache:rl:{tag}:tok",
                     f"stratacache:rl:{tag}:pause"]  # fmt: skip
        self.errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        )
        self._lock = threading.Lock()
        #: When the last slot granted by Redis comes (monotonic): a limiter falling back to
        #: a local budget lets these grants happen before granting any of its own.
        self.granted_until = 0.0
        self._client: Any = None
        self._script: Any = None
        # One client per event loop, closed when its loop shuts down (see LoopClients).
        self._aclients: LoopClients[tuple[Any, Any]] = LoopClients(
            self._new_async_client, _aclose_entry
        )

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
        }
        if self.cluster:
            options["ssl"] = self._ssl
            if self._password:
                options["password"] = self._password
            if self._username:
                options["username"] = self._username
        return options

    def _sync(self) -> Any:
        with self._lock:
            if self._script is None:
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                if self.cluster:
                    from redis.cluster import ClusterNode, RedisCluster

                    nodes = [ClusterNode(h, p) for h, p in self._nodes]  # type: ignore[no-untyped-call]
                    self._client = RedisCluster(
                        startup_nodes=nodes, retry=Retry(NoBackoff(), 1), **self._options()
                    )
                else:
                    import redis

                    self._client = redis.Redis.from_url(
                        self._url, retry=Retry(NoBackoff(), 0), **self._options()
                    )
                self._script = self._client.register_script(SCRIPT)
            return self._script

    def _async(self) -> Any:
        return self._aclients.get()[1]

    def _new_async_client(self) -> tuple[Any, Any]:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if self.cluster:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            from stratacache.tiers.redis import _fetch_commands_once

            nodes = [ClusterNode(h, p) for h, p in self._nodes]
            client: Any = RedisCluster(
                startup_nodes=nodes, retry=Retry(NoBackoff(), 1), **self._options()
            )
            _fetch_commands_once(client)
        else:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                self._url, retry=Retry(NoBackoff(), 0), **self._options()
            )
        return client, client.register_script(SCRIPT)

    # The argument lists are built once here and shared by the sync and async calls.

    @staticmethod
    def _reserve_args(limits: Limits, costs: Sequence[float], max_wait: float | None) -> list[str]:
        return [
            "reserve",
            *_pairs(limits, costs, 0.0),
            repr(-1.0 if max_wait is None else max_wait),
        ]

    @staticmethod
    def _parse(reply: Any) -> tuple[bool, float]:
        ok, value = reply
        return int(ok) == 1, float(value.decode() if isinstance(value, bytes) else value)

    def _granted(self, reply: Any) -> tuple[bool, float]:
        ok, wait = self._parse(reply)
        if ok:
            self.granted_until = max(self.granted_until, time.monotonic() + wait)
        return ok, wait

    @staticmethod
    def _rejoin_args(limits: Limits, remaining: Sequence[float | None]) -> list[list[str]]:
        # clamp only takes a bucket down to empty; local reservations queued beyond that
        # are charged on top, so that Redis schedules nothing in their slots.
        calls = [
            [
                "clamp",
                *_pairs(limits, [None if r is None else max(0.0, r) for r in remaining], -1.0),
            ]
        ]
        debt = [0.0 if r is None else max(0.0, -r) for r in remaining]
        if any(debt):
            calls.append(["adjust", *_pairs(limits, [-d for d in debt], 0.0)])
        return calls

    def rejoin(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        """Back from a local fallback whose buckets hold ``remaining``: the shared buckets
        must not hold more (they refilled while unused, or a promoted replica missed the
        last grants), or returning would grant a second burst."""
        for args in self._rejoin_args(limits, remaining):
            self._sync()(keys=self.keys, args=args)

    async def arejoin(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        for args in self._rejoin_args(limits, remaining):
            await self._async()(keys=self.keys, args=args)

    def reserve(
        self, limits: Limits, costs: Sequence[float], max_wait: float | None
    ) -> tuple[bool, float]:
        return self._granted(
            self._sync()(keys=self.keys, args=self._reserve_args(limits, costs, max_wait))
        )

    def adjust(self, limits: Limits, amounts: Sequence[float]) -> None:
        self._sync()(keys=self.keys, args=["adjust", *_pairs(limits, amounts, 0.0)])

    def clamp(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        self._sync()(keys=self.keys, args=["clamp", *_pairs(limits, remaining, -1.0)])

    def pause(self, seconds: float) -> float:
        return self._parse(self._sync()(keys=self.keys, args=["pause", repr(seconds)]))[1]

    async def areserve(
        self, limits: Limits, costs: Sequence[float], max_wait: float | None
    ) -> tuple[bool, float]:
        args = self._reserve_args(limits, costs, max_wait)
        return self._granted(await self._async()(keys=self.keys, args=args))

    async def aadjust(self, limits: Limits, amounts: Sequence[float]) -> None:
        await self._async()(keys=self.keys, args=["adjust", *_pairs(limits, amounts, 0.0)])

    async def aclamp(self, limits: Limits, remaining: Sequence[float | None]) -> None:
        await self._async()(keys=self.keys, args=["clamp", *_pairs(limits, remaining, -1.0)])

    async def apause(self, seconds: float) -> float:
        return self._parse(await self._async()(keys=self.keys, args=["pause", repr(seconds)]))[1]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._script = None
        self._aclients.forget_closed()

    async def aclose(self) -> None:
        await self._aclients.aclose()
        self.close()


async def _aclose_entry(entry: tuple[Any, Any]) -> None:
    await entry[0].aclose()
