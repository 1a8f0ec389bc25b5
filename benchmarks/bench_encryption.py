"""Encryption at rest: what ``?encrypt=1`` costs per get and set.

Usage::

    python benchmarks/bench_encryption.py            # full run, about two minutes
    python benchmarks/bench_encryption.py --quick    # smoke run, a few seconds
    python benchmarks/bench_encryption.py --json results.json

For 1 KB and 64 KB values it times ``TieredCache.get`` (a hit) and ``TieredCache.set`` on a
one-tier cache, with and without an :class:`~stratacache.tiers.encrypted.EncryptedTier`:

- over a memory tier, where the store itself costs almost nothing, so the difference is the
  encryption's own cost (AES-256-GCM, a random nonce, the header, one copy);
- over a disk tier (diskcache in a temporary directory), the tier encryption is meant for,
  where the same cost is set against SQLite and file I/O.

A bare seal + open of the same bytes is timed too, to tell the cipher from the wrapper. The
values are LLM-like text (JSON strings) and the caches use their default options, so the 64 KB
value is zlib-compressed before it is encrypted, as it would be in production.

Plain and encrypted runs alternate round by round, so a machine whose load changes during the
run slows both alike; each figure is the median over rounds of the mean time per call, in wall
time and in this process's CPU time (steady on a busy machine: time spent waiting for a core
is not counted). The ratio ``encrypted / plain`` is the headline; the added CPU microseconds
say the same in absolute terms. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import stratacache as sc
from stratacache.tiers import DiskTier, MemoryTier, Tier
from stratacache.tiers.encrypted import EncryptedTier, Keyring, generate_key

SIZES = {"1KB": 1024, "64KB": 64 * 1024}
WORDS = "the of cache model token answer prompt latency vector a to is in that for with as on request response stream embedding retrieval context window budget tier redis disk"  # noqa: E501


_WORDS = WORDS.split()


@dataclass(frozen=True)
class Budget:
    rounds: int
    calls: int  # per round and configuration for 1 KB values; an eighth of it for 64 KB
    keys: int


FULL = Budget(rounds=21, calls=400, keys=200)
QUICK = Budget(rounds=5, calls=80, keys=40)


@dataclass
class Row:
    """Per-call medians over rounds. Wall time is what a caller waits; CPU time (this
    process's own, ``time.process_time``) leaves out the time other processes held the CPU,
    so it stays readable on a busy machine, where the wall figures swing from round to round.
    Encryption is pure CPU work, so CPU time shows its cost best."""

    tier: str
    size: str
    op: str
    plain_us: float
    encrypted_us: float
    plain_cpu_us: float
    encrypted_cpu_us: float

    @property
    def ratio(self) -> float:
        return self.encrypted_us / self.plain_us

    @property
    def cpu_ratio(self) -> float:
        return self.encrypted_cpu_us / self.plain_cpu_us

    @property
    def added_cpu_us(self) -> float:
        return self.encrypted_cpu_us - self.plain_cpu_us


def text_of(size: int, seed: int) -> str:
    """LLM-like prose of ``size`` bytes (compressible, as real answers are)."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


@contextmanager
def caches(kind: str, directory: Path, key: str) -> Iterator[tuple[sc.TieredCache, sc.TieredCache]]:
    def build(sub: str) -> Tier:
        if kind == "memory":
            return MemoryTier(512 * 1024**2)
        return DiskTier(directory / sub, 4 * 1024**3)

    plain = sc.TieredCache([build("plain")], namespace="bench")
    sealed = sc.TieredCache([EncryptedTier(build("sealed"), key)], namespace="bench")
    try:
        yield plain, sealed
    finally:
        plain.close()
        sealed.close()


def per_call_us(run: Callable[[], object], calls: int) -> tuple[float, float]:
    """``(wall, cpu)`` microseconds per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


def measure(kind: str, size_name: str, budget: Budget, directory: Path, key: str) -> list[Row]:
    size = SIZES[size_name]
    values = [text_of(size, i) for i in range(budget.keys)]
    keys = [f"prompt-{i}" for i in range(budget.keys)]
    calls = budget.calls if size <= 1024 else max(1, budget.calls // 8)
    order = [i % budget.keys for i in range(calls)]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with caches(kind, directory / f"{kind}-{size_name}", key) as (plain, sealed):
        for cache in (plain, sealed):  # warm-up: files created, code paths hot
            cache.set_many(dict(zip(keys, values, strict=True)))
            for k in keys:
                assert cache.get(k) is not None
        for _ in range(budget.rounds):
            for label, cache in (("plain", plain), ("encrypted", sealed)):
                get, put = cache.get, cache.set

                def gets(get: Callable[[str], Any] = get) -> None:
                    for i in order:
                        get(keys[i])

                def sets(put: Callable[[str, Any], None] = put) -> None:
                    for i in order:
                        put(keys[i], values[i])

                results.setdefault(("get", label), []).append(per_call_us(gets, calls))
                results.setdefault(("set", label), []).append(per_call_us(sets, calls))
        stats = sealed.stats()["tiers"][0]
        assert stats["corrupt"] == 0 and stats["errors"] == 0, stats

    def median(op: str, label: str, which: int) -> float:
        return statistics.median(sample[which] for sample in results[(op, label)])

    return [
        Row(
            kind,
            size_name,
            op,
            median(op, "plain", 0),
            median(op, "encrypted", 0),
            median(op, "plain", 1),
            median(op, "encrypted", 1),
        )
        for op in ("get", "set")
    ]


def cipher_only(size_name: str, budget: Budget, key: str) -> dict[str, float]:
    """Seal + open of an already encoded value, without any tier: the cipher's share."""
    ring = Keyring(key)
    data = text_of(SIZES[size_name], 0).encode()
    n = budget.calls * 5
    seal_us, open_us = [], []
    blob = ring.seal("sc:bench:0:k:prompt", data)
    for _ in range(budget.rounds):
        seal_us.append(
            per_call_us(lambda: [ring.seal("sc:bench:0:k:prompt", data) for _ in range(n)], n)
        )
        open_us.append(
            per_call_us(lambda: [ring.open("sc:bench:0:k:prompt", blob) for _ in range(n)], n)
        )
    return {
        "seal_us": statistics.median(w for w, _ in seal_us),
        "open_us": statistics.median(w for w, _ in open_us),
        "seal_cpu_us": statistics.median(c for _, c in seal_us),
        "open_cpu_us": statistics.median(c for _, c in open_us),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    budget = QUICK if args.quick else FULL
    key = generate_key()
    rows: list[Row] = []
    cipher: dict[str, dict[str, float]] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="sc-bench-enc-") as tmp:
        for kind in ("memory", "disk"):
            for size_name in SIZES:
                rows.extend(measure(kind, size_name, budget, Path(tmp), key))
    for size_name in SIZES:
        cipher[size_name] = cipher_only(size_name, budget, key)
    took = time.time() - started

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"stratacache encryption overhead  python {platform.python_version()}  "
        f"{platform.machine()}  cpus={os.cpu_count()}  load={load[0]:.2f}  "
        f"rounds={budget.rounds} x {budget.calls} calls  ({took:.0f} s)"
    )
    print("µs per call, median of rounds: wall time | this process's CPU time")
    print(f"{'tier':<8}{'value':<7}{'op':<5}{'plain':>9}{'encrypted':>11}{'ratio':>8} |"
          f"{'plain':>9}{'encrypted':>11}{'added':>9}{'ratio':>8}")  # fmt: skip
    for r in rows:
        print(f"{r.tier:<8}{r.size:<7}{r.op:<5}{r.plain_us:>9.1f}{r.encrypted_us:>11.1f}"
              f"{r.ratio:>7.2f}x |{r.plain_cpu_us:>9.1f}{r.encrypted_cpu_us:>11.1f}"
              f"{r.added_cpu_us:>9.1f}{r.cpu_ratio:>7.2f}x")  # fmt: skip
    for size_name, c in cipher.items():
        cpu = f"seal {c['seal_cpu_us']:.1f} µs, open {c['open_cpu_us']:.1f} µs (CPU"
        print(f"cipher only {size_name:<5}: {cpu}; wall {c['seal_us']:.1f} / {c['open_us']:.1f})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "load_1m": load[0],
                    "budget": asdict(budget),
                    "rows": [
                        asdict(r)
                        | {
                            "ratio": r.ratio,
                            "cpu_ratio": r.cpu_ratio,
                            "added_cpu_us": r.added_cpu_us,
                        }
                        for r in rows
                    ],
                    "cipher_only": cipher,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
