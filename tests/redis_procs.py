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
    """Three master nodes sharing the 16384 slots; no replicas (enough for routing tests)."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisProcess(
                directory / f"node{i}",
                None,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for i in range(3)
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
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            infos = [c.cluster("INFO") for c in clients]
            if all(
                i.get("cluster_state") == "ok" and str(i.get("cluster_known_nodes")) == "3"
                for i in infos
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"cluster did not converge: {infos}")
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
