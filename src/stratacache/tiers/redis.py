"""Redis tier on redis-py: plain Redis 7 / Valkey, TLS, and Redis Cluster.

Only plain string commands are used (GET, SET PX, MGET, UNLINK, one compare-and-delete
script), so any Redis-compatible server works without modules. Every key is independent,
which keeps the tier Cluster-safe without hash tags: multi-key reads use MGET on a single
node and one single-slot MGET per slot, pipelined, on a cluster.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlunsplit

from stratacache._config import TLS_OPTIONS, parse_bool, redact_url, split_url
from stratacache.errors import CacheClosedError, ConfigurationError, missing_extra
from stratacache.tiers import _pipeline as pl
from stratacache.tiers._loops import LoopClients
from stratacache.tiers.base import (
    DATA_PREFIX,
    META_PREFIX,
    LeaseSupport,
    Miss,
    SetEntry,
    Tier,
    TierBusy,
)

__all__ = ["RedisTier"]

_SCHEMES = {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}
_DB_PATH = re.compile(r"^/?\d*$")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
#: Keys per UNLINK pipeline when clearing or sweeping.
_UNLINK_BATCH = 500


def _px(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))


def _cluster_nodes(netloc: str) -> list[tuple[str, int]]:
    nodes = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"bad cluster node {part!r}: write redis+cluster://host:port,host:port"
            )
        nodes.append((host.strip("[]"), int(port)))
    return nodes


class RedisTier(Tier, LeaseSupport):
    """Entries in Redis (or a Redis Cluster) with ``SET ... PX`` expiry.

    ``timeout`` is short on purpose: a cache that waits seconds for a sick server is worse than
    no cache. Clients retry a failed connection once without back-off (enough to replace a
    connection that a server restart closed) but never a timeout; longer outages are handled
    by the tiered cache's circuit breaker.
    Connections are opened on first use, so a server that is down at start-up is a miss, not
    a crash. Async calls use a client per event loop, because redis-py's asyncio connections
    belong to the loop that opened them; each is closed when its loop shuts down, so repeated
    ``asyncio.run`` calls do not accumulate connection pools. After :meth:`close` the tier
    raises :class:`~stratacache.errors.CacheClosedError` rather than reconnecting.
    """

    kind = "redis"
    shared = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        ttl: float | None = None,
        timeout: float = 0.5,
        connect_timeout: float = 0.5,
        max_connections: int = 64,
        pipeline: bool = True,
        tls: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(ttl=ttl, name=name)
        parts = split_url(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"unsupported Redis URL scheme {parts.scheme!r}; use one of {sorted(_SCHEMES)}"
            )
        if not (0 < timeout < float("inf") and 0 < connect_timeout < float("inf")) or (
            max_connections <= 0
        ):
            raise ConfigurationError(
                "Redis timeout, connect_timeout and max_connections must be > 0 and finite"
            )
        self.cluster = parts.scheme.endswith("+cluster")
        self._nodes = _cluster_nodes(parts.netloc) if self.cluster else []
        if parts.scheme != "unix":
            _check_address(parts.netloc, parts.path, url, self.cluster)
        scheme = parts.scheme.removesuffix("+cluster")
        self._url = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
            "max_connections": max_connections,
        }
        if tls or scheme == "rediss":
            self._options.update(_tls_options(scheme, tls or {}, url))
        if self.cluster:
            self._options["ssl"] = scheme == "rediss"
            if parts.password:
                self._options["password"] = parts.password
            if parts.username:
                self._options["username"] = parts.username
        self.timeout = timeout
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._client: Any = None
        self._lane: pl.SyncLane | None = None
        self._lane_stats = pl.LaneStats()
        self._closed = False
        self._aclients: LoopClients[_AsyncClient] = LoopClients(
            self._new_async_client, _aclose_client
        )
        _TIERS.add(self)
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise missing_extra("redis", "redis") from exc

    # -- clients ---------------------------------------------------------------------------

    def _retry(self, asynchronous: bool) -> Any:
        # Retry only a refused/reset connection (a restarted server closed our pooled socket);
        # a timeout is not retried, so a hung server costs one timeout per call, not two.
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        if asynchronous:
            from redis.asyncio.retry import Retry as AsyncRetry

            return AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        from redis.retry import Retry

        return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))

    def _sync(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise CacheClosedError(f"{self.name} tier was closed; open a new one")
            if self._client is None:
                if self.cluster:
                    from redis.cluster import ClusterNode, RedisCluster

                    self._client = RedisCluster(
                        startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],  # type: ignore[no-untyped-call]
                        retry=self._retry(False),
                        **self._options,
                    )
                else:
                    import redis

                    self._client = _blocking_client(
                        redis.Redis,
                        redis.BlockingConnectionPool,
                        self._url,
                        self._pool_options() | {"retry": self._retry(False)},
                    )
            return self._client

    def _pool_options(self) -> dict[str, Any]:
        # A blocking pool: a caller that finds every connection taken waits (up to the
        # timeout) instead of failing with MaxConnectionsError, which fed the breaker.
        return {**self._options, "timeout": self.timeout}

    def _sync_lane(self) -> pl.SyncLane:
        client = self._sync()
        with self._lock:
            if self._closed:
                raise CacheClosedError(f"{self.name} tier was closed; open a new one")
            if self._lane is None:
                keyslot = client.keyslot if self.cluster else None
                most = self._options["max_connections"]
                self._lane = pl.SyncLane(
                    lambda op: _send_one(client, op, keyslot),
                    lambda ops: _send_many(client, ops, keyslot),
                    # Each slot holds one connection; with coalescing the rest of the pool
                    # stays free for scans, and more slots would only shrink the batches.
                    slots=max(1, min(8, most // 2)) if self.pipeline else most,
                    wait=self.timeout,
                    stats=self._lane_stats,
                    coalesce=self.pipeline,
                )
            return self._lane

    def _after_fork(self) -> None:
        # A child forked while parent threads were mid-call inherits their taken slots and
        # maybe a held lock: it would wait for threads that do not exist in it. redis-py
        # notices the fork itself and opens fresh connections.
        self._lock = threading.Lock()
        self._lane = None

    def _call(self, kind: str, *args: Any) -> Any:
        lane = self._lane or self._sync_lane()
        return lane.submit(pl.Op(kind, args))

    async def _acall(self, kind: str, *args: Any) -> Any:
        if self._closed:
            raise CacheClosedError(f"{self.name} tier was closed; open a new one")
        conn = self._aclients.get()
        op = pl.Op(kind, args)
        if self.pipeline:
            return await conn.lane.submit(op)
        # Without coalescing: one round trip per call, at most max_connections in flight
        # (redis-py's async cluster client fails past that instead of waiting).
        slots = conn.slots
        if slots.locked():
            import asyncio

            self._lane_stats.waits += 1
            try:
                await asyncio.wait_for(slots.acquire(), self.timeout)
            except TimeoutError:
                raise TierBusy(f"no Redis connection came free within {self.timeout:g} s") from None
        else:
            await slots.acquire()
        try:
            return await conn.send_one(op)
        finally:
            slots.release()

    def _async(self) -> Any:
        if self._closed:
            raise CacheClosedError(f"{self.name} tier was closed; open a new one")
        return self._aclients.get().client

    def _new_async_client(self) -> _AsyncClient:
        if self.cluster:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            client = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],
                retry=self._retry(True),
                **self._options,
            )
            _fetch_commands_once(client)
        else:
            import redis.asyncio

            client = _blocking_client(
                redis.asyncio.Redis,
                redis.asyncio.BlockingConnectionPool,
                self._url,
                self._pool_options() | {"retry": self._retry(True)},
            )
        return _AsyncClient(
            client, self.cluster, self._lane_stats, self._options["max_connections"]
        )

    def load_stats(self) -> dict[str, int]:
        return self._lane_stats.summary()

    # -- sync ------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | Miss:
        return self._call(pl.GET, key)  # type: ignore[no-any-return]

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self._call(pl.SET, key, data, _px(ttl))

    def delete(self, key: str) -> None:
        self._call(pl.UNLINK, (key,))

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self._call(pl.MGET, list(keys)) if keys else {}

    def set_many(self, entries: Iterable[SetEntry]) -> None:
        batch = [(key, data, _px(ttl)) for key, data, ttl in entries]
        if batch:
            self._call(pl.MSET, batch)

    def clear(self) -> None:
        """Unlink every key stratacache wrote (``sc:…``, ``scmeta:…``), matched by the exact
        prefix with its delimiter so another application's ``scores:…`` is never touched;
        never FLUSHDB."""
        self.delete_many([*self.scan(DATA_PREFIX), *self.scan(META_PREFIX)])

    def add(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        return self._call(pl.SETNX, key, data, _px(ttl))  # type: ignore[no-any-return]

    def scan(self, prefix: str) -> list[str]:
        match = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
        return [_text(k) for k in self._sync().scan_iter(match=match, count=1000)]

    def delete_many(self, keys: Sequence[str]) -> None:
        # One multi-key UNLINK per batch; on a cluster redis-py splits it by slot.
        client = self._sync()
        for start in range(0, len(keys), _UNLINK_BATCH):
            client.unlink(*keys[start : start + _UNLINK_BATCH])

    def close(self) -> None:
        """Close the connections; using the tier afterwards raises CacheClosedError instead of
        silently opening new ones. Async clients of other, still running loops close with
        their loop."""
        with self._lock:
            self._closed = True
            self._lane = None
            if self._client is not None:
                self._client.close()
                self._client = None
        self._aclients.forget_closed()

    def acquire_lease(self, key: str, token: str, ttl: float) -> bool:
        if self._call(pl.SETNX, key, token, _px(ttl)):
            return True
        return _mine(self._call(pl.GET, key), token)

    def release_lease(self, key: str, token: str) -> None:
        self._call(pl.RELEASE, key, token)

    # -- async -----------------------------------------------------------------------------

    async def aget(self, key: str) -> bytes | Miss:
        if self.pipeline and not self._closed:  # the hot path, one coroutine shorter
            return await self._aclients.get().lane.submit(pl.Op(pl.GET, (key,)))  # type: ignore[no-any-return]
        return await self._acall(pl.GET, key)  # type: ignore[no-any-return]

    async def aset(self, key: str, data: bytes, ttl: float | None) -> None:
        await self._acall(pl.SET, key, data, _px(ttl))

    async def adelete(self, key: str) -> None:
        await self._acall(pl.UNLINK, (key,))

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return await self._acall(pl.MGET, list(keys)) if keys else {}

    async def aset_many(self, entries: Iterable[SetEntry]) -> None:
        batch = [(key, data, _px(ttl)) for key, data, ttl in entries]
        if batch:
            await self._acall(pl.MSET, batch)

    async def aadd(self, key: str, data: bytes, ttl: float | None = None) -> bool:
        return await self._acall(pl.SETNX, key, data, _px(ttl))  # type: ignore[no-any-return]

    async def ascan(self, prefix: str) -> list[str]:
        match = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
        return [_text(k) async for k in self._async().scan_iter(match=match, count=1000)]

    async def adelete_many(self, keys: Sequence[str]) -> None:
        client = self._async()
        for start in range(0, len(keys), _UNLINK_BATCH):
            await client.unlink(*keys[start : start + _UNLINK_BATCH])

    async def aclose(self) -> None:
        await self._aclients.aclose()
        self.close()

    async def aacquire_lease(self, key: str, token: str, ttl: float) -> bool:
        if await self._acall(pl.SETNX, key, token, _px(ttl)):
            return True
        return _mine(await self._acall(pl.GET, key), token)

    async def arelease_lease(self, key: str, token: str) -> None:
        await self._acall(pl.RELEASE, key, token)


_TIERS: weakref.WeakSet[RedisTier] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for tier in list(_TIERS):
        tier._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_reset_after_fork)


def _mine(holder: bytes | Miss, token: str) -> bool:
    """Is the lease that made SET NX fail our own? redis-py sends a command again when its
    connection died before the reply (a primary killed mid-call, then the promoted replica):
    the first SET NX may have landed and replicated, so the retry finds our token. Taken for
    someone else's, the fill waited ``lock_timeout`` (a minute) for a lease nobody held."""
    return holder == token.encode()


def _text(key: str | bytes) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


class _AsyncClient:
    """One event loop's redis-py client and the lane that coalesces its calls."""

    __slots__ = ("client", "lane", "send_one", "slots")

    def __init__(
        self, client: Any, cluster: bool, stats: pl.LaneStats, max_connections: int
    ) -> None:
        import asyncio

        self.client = client
        self.slots = asyncio.Semaphore(max_connections)
        keyslot = client.keyslot if cluster else None
        self.send_one: Callable[[pl.Op], Awaitable[Any]] = lambda op: _asend_one(
            client, op, keyslot
        )
        self.lane = pl.AsyncLane(
            self.send_one, lambda ops: _asend_many(client, ops, keyslot), stats
        )


def _pipe(client: Any, keyslot: Any) -> Any:
    return client.pipeline() if keyslot else client.pipeline(transaction=False)


def _alone_in_a_pipeline(op: pl.Op, keyslot: Any) -> bool:
    # MSET is a batch of its own. So is a cluster MGET: redis-py's mget_nonatomic pins each
    # slot's node when the call starts, so its retry after a failover went back to the dead
    # primary and failed; our pipeline routes by key and follows the refreshed slot map.
    return op.kind == pl.MSET or (op.kind == pl.MGET and keyslot is not None)


def _send_one(client: Any, op: pl.Op, keyslot: Any) -> Any:
    if _alone_in_a_pipeline(op, keyslot):
        _send_many(client, [op], keyslot)
        return op.outcome()
    return pl.finish_direct(op, pl.direct_call(client, op, keyslot is not None))


async def _asend_one(client: Any, op: pl.Op, keyslot: Any) -> Any:
    if _alone_in_a_pipeline(op, keyslot):
        await _asend_many(client, [op], keyslot)
        return op.outcome()
    return pl.finish_direct(op, await pl.direct_call(client, op, keyslot is not None))


def _prepare(client: Any, ops: list[pl.Op], keyslot: Any) -> tuple[Any, Any] | None:
    """A pipeline holding ``ops`` and the function that hands out its replies; None (and every
    op failed) if the batch cannot even be built, e.g. a key the cluster cannot hash: that
    fails the batch, not the lane."""
    try:
        pipe = _pipe(client, keyslot)
        return pipe, pl.fill(pipe, ops, keyslot)
    except Exception as exc:
        for op in ops:
            op.error = exc
        return None


def _send_many(client: Any, ops: list[pl.Op], keyslot: Any) -> None:
    prepared = _prepare(client, ops, keyslot)
    if prepared is None:
        return
    pipe, finish = prepared
    try:
        replies = pipe.execute(raise_on_error=False)
    except Exception as exc:
        replies = exc
    finish(replies)


async def _asend_many(client: Any, ops: list[pl.Op], keyslot: Any) -> None:
    prepared = _prepare(client, ops, keyslot)
    if prepared is None:
        return
    pipe, finish = prepared
    try:
        replies = await pipe.execute(raise_on_error=False)
    except Exception as exc:
        replies = exc
    else:
        if keyslot is not None:
            _refresh_if_lost(client, replies)
    finish(replies)


def _refresh_if_lost(client: Any, replies: list[Any]) -> None:
    """A node of an async cluster pipeline died mid-batch: have the slot map read again.

    redis-py's async cluster pipeline hands a connection lost while reading back as that
    command's result without refreshing the slot map (the sync one retries such commands,
    and both refresh when the error is raised). Until some later call raised, every batch
    went back to the dead primary, failing and feeding the breaker after its replica had
    already been promoted."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    lost = (RedisConnectionError, RedisTimeoutError)
    if any(isinstance(reply, lost) for reply in replies) and hasattr(client, "_initialize"):
        client._initialize = True


def _blocking_client(cls: Any, pool_cls: Any, url: str, options: dict[str, Any]) -> Any:
    client = cls(connection_pool=pool_cls.from_url(url, **options))
    client.auto_close_connection_pool = True  # as Redis.from_url does: close() closes the pool
    return client


def _fetch_commands_once(client: Any) -> None:
    """Stop redis-py's async cluster client from fetching and parsing ``COMMAND`` (thousands of
    reply lines, parsed in Python) again at every slot-map refresh, i.e. after every
    connection error: during a failover that held the event loop 0.1-0.4 s per refresh and
    delayed the first successful call after the promotion by as much. The command table
    does not change when a node fails; the node used for key lookups still follows."""
    from redis._parsers.commands import AsyncCommandsParser

    if type(getattr(client, "commands_parser", None)) is AsyncCommandsParser:
        client.commands_parser = _commands_once()()


@functools.cache
def _commands_once() -> Any:
    from redis._parsers.commands import AsyncCommandsParser

    class CommandsOnce(AsyncCommandsParser):
        __slots__ = ()

        async def initialize(self, node: Any = None) -> None:
            if node:
                self.node = node
            if not self.commands:
                await super().initialize(node)

    return CommandsOnce


async def _aclose_client(conn: _AsyncClient) -> None:
    await conn.client.aclose()


_CERT_REQS = ("required", "optional", "none")


def _tls_options(scheme: str, tls: Mapping[str, Any], url: str) -> dict[str, Any]:
    """redis-py's ``ssl_*`` options, checked now: a missing CA file or a typo must fail when
    the cache is built, not as a stream of handshake errors (each one a miss) later.

    Verification is on unless turned off explicitly: the certificate must chain to the CA
    (``ssl_ca_certs``, else the system store) and name the host (``ssl_check_hostname``).
    """
    where = redact_url(url)
    if scheme != "rediss":
        raise ConfigurationError(f"TLS options need a rediss:// URL, not {where!r}")
    unknown = set(tls) - TLS_OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown TLS option(s) {sorted(unknown)} for {where!r}")
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = tls.get(name)
        if path is None:
            continue
        try:
            with open(os.path.expanduser(str(path)), "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigurationError(
                f"{name} {str(path)!r} for {where!r} cannot be read: {exc.strerror}"
            ) from None
        options[name] = os.path.expanduser(str(path))
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ConfigurationError(f"ssl_keyfile without ssl_certfile for {where!r}")
    reqs = str(tls.get("ssl_cert_reqs", "required")).lower()
    if reqs not in _CERT_REQS:
        raise ConfigurationError(f"ssl_cert_reqs must be one of {_CERT_REQS} for {where!r}")
    options["ssl_cert_reqs"] = reqs
    check = parse_bool(tls.get("ssl_check_hostname", True), f"ssl_check_hostname for {where!r}")
    options["ssl_check_hostname"] = check and reqs != "none"
    return options


def _check_address(netloc: str, path: str, url: str, cluster: bool) -> None:
    """A bad port or database fails here, not as a stream of connection errors later."""
    if not cluster:
        try:
            port = split_url(f"redis://{netloc}").port
        except (ConfigurationError, ValueError) as exc:
            raise ConfigurationError(f"bad Redis address in {redact_url(url)!r}: {exc}") from None
        if port == 0:
            raise ConfigurationError(f"bad Redis port 0 in {redact_url(url)!r}")
    if not _DB_PATH.match(path) or (cluster and path.strip("/") not in ("", "0")):
        raise ConfigurationError(
            f"bad Redis database {path!r} in {redact_url(url)!r}: write /0, /1, … "
            "(a cluster has database 0 only)"
        )
