"""A loopback TCP proxy that delays replies: a slow or partitioned network, for real.

SIGSTOP and ``DEBUG SLEEP`` make the server itself slow, for every client at once. A proxy
slows one client's path only, which is what a partition between one application host and a
healthy Redis looks like: other processes (connected directly) keep working, and can clear a
namespace that the partitioned one cannot hear about.

Replies are held back by ``delay`` seconds each, measured from when the server sent them, so
a delay is a latency and not a throughput limit. ``delay`` may change while connections are
open: setting it to 0 heals the path, and bytes already held go out at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque

__all__ = ["DelayProxy"]

_TICK = 0.01


class DelayProxy:
    """``127.0.0.1:<port>`` forwarding to ``127.0.0.1:<upstream>`` with a settable reply delay."""

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, query: str = "") -> str:
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            held: deque[tuple[float, bytes]] = deque()
            ready = threading.Condition()
            for target, args in (
                (self._pump, (client, upstream)),  # requests: on time
                (self._hold, (upstream, held, ready)),  # replies: stamped...
                (self._release, (client, upstream, held, ready)),  # ...and sent when due
            ):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        _close(src, dst)

    @staticmethod
    def _hold(
        src: socket.socket, held: deque[tuple[float, bytes]], ready: threading.Condition
    ) -> None:
        try:
            while chunk := src.recv(65536):
                with ready:
                    held.append((time.monotonic(), chunk))
                    ready.notify()
        except OSError:
            pass
        with ready:
            held.append((0.0, b""))  # end of stream
            ready.notify()

    def _release(
        self,
        dst: socket.socket,
        src: socket.socket,
        held: deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        while True:
            with ready:
                while not held:
                    ready.wait()
                sent_at, chunk = held[0]
            if not chunk:
                break
            # Re-read the delay while waiting, so that healing releases held bytes at once.
            while time.monotonic() < sent_at + self.delay and not self._closed.is_set():
                time.sleep(_TICK)
            with ready:
                held.popleft()
            try:
                dst.sendall(chunk)
            except OSError:
                break
        _close(src, dst)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)
        for thread in self._threads[1:]:
            thread.join(5)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
