"""Real redis-server processes for the tests: a standalone server and a 3-node cluster.

Each server gets free loopback ports and a temporary directory, keeps nothing on disk, and is
shut down by the fixture that started it. The machine's own Redis on 6379 is never touched.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

#: Set by .ci/run: a test that needs redis-server fails instead of skipping when it is missing.
REQUIRE_REDIS = os.environ.get("STRATACACHE_REQUIRE_REDIS") == "1"
REDIS_SERVER = shutil.which("redis-server")


def require_binary(name: str) -> str:
    """The path of ``name``; a skip on a laptop without it, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH"
        if REQUIRE_REDIS:
            pytest.fail(f"{message} and STRATACACHE_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(message)
    return path


def require_redis_binary() -> str:
    return REDIS_SERVER or require_binary("redis-server")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, a free bus port at +10000)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and (not cluster_bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port found")


def client_count(redis_url: str) -> int:
    """Connections the test server has open, not counting the one asking."""
    import redis

    client = redis.Redis.from_url(redis_url)
    count = len(client.client_list()) - 1
    client.close()
    return count


class RedisProcess:
    """One redis-server on 127.0.0.1 that a test can kill and restart on the same port."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        self.binary = require_redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pick_port = port is None
        self.port = port or free_port(cluster_bus="--cluster-enabled" in extra)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        for _ in range(5):
            try:
                return self._start()
            except RuntimeError as exc:
                # Another process took the free port between our check and the bind (tests
                # and benchmarks run side by side): pick another one, unless pinned.
                if not self._pick_port or "Address already in use" not in str(exc):
                    raise
                self.port = free_port(cluster_bus="--cluster-enabled" in self.extra)
        return self._start()

    def _start(self) -> RedisProcess:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            "--protected-mode", "no", "--loglevel", "warning", *self.extra,
        ]  # fmt: skip
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


class RedisClusterProcesses:
    """Three primaries sharing the 16384 slots, optionally each with ``replicas`` replicas.

    Without replicas (the default) it is enough for routing tests. With them, a killed
    primary is replaced by its replica after ``node_timeout`` ms plus an election, which is
    what the failover tests measure (:meth:`kill_primary`, :meth:`wait_promoted`).
    """

    def __init__(self, directory: Path, replicas: int = 0, node_timeout: int = 2000) -> None:
        self.replicas = replicas
        # A (re)started replica syncs at once instead of after the 5 s diskless-sync delay,
        # and may always be promoted however long its primary has been gone.
        extra = (
            ("--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")
            if replicas
            else ()
        )
        self.nodes = [
            RedisProcess(
                directory / f"node{i}",
                None,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout),
                *extra,
            )
            for i in range(3 * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisClusterProcesses:
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        bounds = [0, 5461, 10923, 16384]
        for i, client in enumerate(clients[:3]):
            client.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        total = str(len(self.nodes))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            infos = [c.cluster("INFO") for c in clients]
            if all(
                i.get("cluster_state") == "ok" and str(i.get("cluster_known_nodes")) == total
                for i in infos
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"cluster did not converge: {infos}")
        if self.replicas:
            ids = [c.execute_command("CLUSTER MYID") for c in clients[:3]]
            for i, client in enumerate(clients[3:]):
                primary = ids[i % 3]
                _retry_until(lambda c=client, p=primary: c.execute_command("CLUSTER REPLICATE", p))
            self.wait_replicated()
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    # -- failover ----------------------------------------------------------------------------

    def live(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None]

    def topology(self) -> dict[int, tuple[str, bool, bool]]:
        """port -> (node id, is primary, is failing), as a live node sees it."""
        import redis

        for node in self.live():
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                nodes = client.execute_command("CLUSTER NODES")  # parsed by redis-py
            except redis.RedisError:
                continue
            finally:
                client.close()
            out = {}
            for address, fields in nodes.items():
                port = int(address.split("@")[0].rsplit(":", 1)[1] or 0)
                flags = fields["flags"].split(",")
                failing = "fail" in flags or "fail?" in flags or not fields["connected"]
                out[port] = (fields["node_id"], "master" in flags, failing)
            return out
        raise RuntimeError("no live cluster node answered CLUSTER NODES")

    def primaries(self) -> list[RedisProcess]:
        topology = self.topology()
        return [n for n in self.live() if topology[n.port][1] and topology[n.port][0]]

    def primary_of(self, key: str) -> RedisProcess:
        """The node serving ``key``'s slot now."""
        import redis

        client = redis.Redis(port=self.live()[0].port)
        try:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise RuntimeError(f"slot of {key!r} is not served")

    def kill_primary(self, node: RedisProcess) -> None:
        """SIGKILL a primary (its replica takes over once the cluster marks it failed)."""
        node.kill()

    def wait_promoted(self, node: RedisProcess, timeout: float = 20.0) -> float:
        """Poll until a replica has taken over every slot of the dead ``node`` and every live
        node reports ``cluster_state:ok``; returns the seconds waited."""
        import redis

        started = time.monotonic()
        deadline = started + timeout
        dead = f"127.0.0.1:{node.port}"
        while time.monotonic() < deadline:
            try:
                served = True
                for live in self.live():
                    client = redis.Redis(port=live.port, socket_timeout=1)
                    try:
                        info = client.cluster("INFO")
                        slots = client.execute_command("CLUSTER SLOTS")
                    finally:
                        client.close()
                    owners = {f"{_text(s[2][0])}:{int(s[2][1])}" for s in slots}
                    covered = sum(int(s[1]) - int(s[0]) + 1 for s in slots)
                    if info.get("cluster_state") != "ok" or dead in owners or covered != 16384:
                        served = False
                        break
                if served:
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"no replica took over from {dead} within {timeout} s")

    def node_id(self, node: RedisProcess) -> str:
        return self.topology()[node.port][0]

    def migrate_slot(self, slot: int, target: RedisProcess, pause: float = 0.0) -> int:
        """Move ``slot`` to the primary ``target`` the way ``redis-cli --cluster reshard`` does:
        IMPORTING/MIGRATING (clients get ASK for keys already moved), MIGRATE a few keys at a
        time with ``pause`` between batches, then SETSLOT NODE everywhere (clients with the old
        map get MOVED). Returns the number of keys moved."""
        import redis

        source = next(n for n in self.primaries() if _serves(n, slot))
        src, dst = redis.Redis(port=source.port), redis.Redis(port=target.port)
        moved = 0
        try:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_id(source))
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_id(target))
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 5):
                src.migrate("127.0.0.1", target.port, keys, 0, 5000)
                moved += len(keys)
                time.sleep(pause)
            owner = self.node_id(target)
            dst.execute_command("CLUSTER SETSLOT", slot, "NODE", owner)
            src.execute_command("CLUSTER SETSLOT", slot, "NODE", owner)
            for node in self.primaries():
                if node not in (source, target):
                    other = redis.Redis(port=node.port)
                    try:
                        other.execute_command("CLUSTER SETSLOT", slot, "NODE", owner)
                    finally:
                        other.close()
        finally:
            src.close()
            dst.close()
        return moved

    def revive(self, node: RedisProcess) -> None:
        """Restart a killed node: it rejoins as a replica of the primary that replaced it."""
        node.start()
        self.wait_replicated()

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Every node known and healthy, every primary with ``replicas`` in-sync replicas."""
        import redis

        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            try:
                topology = self.topology()
                state = topology
                primaries = [n for n in self.nodes if topology[n.port][1]]
                ok = len(primaries) == 3 and not any(t[2] for t in topology.values())
                for node in self.nodes:
                    if not ok:
                        break
                    client = redis.Redis(port=node.port, socket_timeout=1)
                    try:
                        info = client.info("replication")
                        cluster = client.cluster("INFO")
                    finally:
                        client.close()
                    state = (node.port, info, cluster)
                    if cluster.get("cluster_state") != "ok":
                        ok = False
                    elif info["role"] == "master":
                        ok = info.get("connected_slaves", 0) == self.replicas
                    else:
                        ok = info.get("master_link_status") == "up"
                if ok:
                    return
            except (redis.RedisError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cluster replicas did not sync: {state}")


def _serves(node: RedisProcess, slot: int) -> bool:
    import redis

    client = redis.Redis(port=node.port)
    try:
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1]) == node.port
        return False
    finally:
        client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _retry_until(call: Any, timeout: float = 10.0) -> Any:
    """``call()`` until it stops raising (a node learns about its peers asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
