"""``python -m stratacache.testing [--rpm N] [--tpm N] [--port P]``: serve until interrupted.

Prints the base URL on the first line, so a parent process can read it. Running the provider
in its own process keeps its work off the client's GIL, which matters for throughput figures.
Counters are at ``GET /stratacache/stats``.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from stratacache.testing import OpenAICompatServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stratacache.testing")
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--tpm", type=float, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with OpenAICompatServer(
        rpm=args.rpm, tpm=args.tpm, port=args.port, latency=args.latency
    ) as server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
