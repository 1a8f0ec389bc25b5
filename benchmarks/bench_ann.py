"""ANN benchmark: stratacache's VectorIndex (hnswlib path) against numpy brute force.

    python benchmarks/bench_ann.py                 # 1M x 384-d (build takes many minutes)
    python benchmarks/bench_ann.py --n 100000 1000000
    python benchmarks/bench_ann.py --quick         # 20k, under a minute

The data imitate sentence embeddings: a few thousand gaussian cluster centres on the sphere,
each point a centre plus isotropic noise, normalised, so nearest-neighbour cosines sit around
0.8-0.9 (printed, so the claim can be checked). Queries are fresh noisy copies of indexed
points -- a paraphrase of a cached prompt. Ground truth is exact (numpy, in batches).

Per size it reports the build (one ``upsert`` per batch of 10k, vectors/s), single-row upsert
latency, ``memory_bytes()``, then for each ``ef`` the p50/p99 latency of 1000 single queries and
recall@1, next to numpy brute-force p50 for one query. Latency figures depend on the machine;
recall does not.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from stratacache.semantic._index import VectorIndex  # noqa: E402

Matrix = npt.NDArray[np.float32]

DIM = 384
CENTRES = 4000
# Per-dimension noise: a point's cosine to its centre is 1/sqrt(1 + DIM * sigma^2) ~ 0.89, and
# two points of one cluster meet at ~0.80; a query sits at ~0.90 from the point it paraphrases.
POINT_NOISE = 0.026
QUERY_NOISE = 0.025
BATCH = 10_000


@dataclass
class Row:
    n: int
    ef: int
    build_s: float
    insert_per_s: float
    upsert_p50_ms: float
    memory_mb: float
    p50_ms: float
    p99_ms: float
    recall: float
    brute_p50_ms: float


def unit(x: Matrix) -> Matrix:
    out: Matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def make_data(n: int, queries: int, seed: int) -> tuple[Matrix, Matrix, Matrix]:
    """Points, queries near random points, and extra points for single-row upserts."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((CENTRES, DIM), dtype=np.float32))
    points = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * POINT_NOISE
        points[start:stop] = unit(centres[rng.integers(0, CENTRES, stop - start)] + noise)
    sources = rng.integers(0, n, queries)
    noise = rng.standard_normal((queries, DIM), dtype=np.float32) * QUERY_NOISE
    q = unit(points[sources] + noise)
    extra_noise = rng.standard_normal((1000, DIM), dtype=np.float32) * POINT_NOISE
    extra = unit(centres[rng.integers(0, CENTRES, 1000)] + extra_noise)
    return points, q, extra


def ground_truth(points: Matrix, q: Matrix) -> tuple[npt.NDArray[np.int64], Matrix]:
    best = np.empty(len(q), dtype=np.int64)
    best_sim = np.empty(len(q), dtype=np.float32)
    for start in range(0, len(q), 50):
        sims = q[start : start + 50] @ points.T
        best[start : start + 50] = np.argmax(sims, axis=1)
        best_sim[start : start + 50] = np.max(sims, axis=1)
    return best, best_sim


def percentile_ms(samples: list[float], pct: float) -> float:
    return float(np.percentile(np.array(samples), pct) * 1e3)


def brute_force_p50(points: Matrix, q: Matrix, count: int) -> float:
    samples = []
    for qv in q[:count]:
        t = time.perf_counter()
        sims = points @ qv
        int(np.argmax(sims))
        samples.append(time.perf_counter() - t)
    return percentile_ms(samples, 50)


def run_size(
    n: int, efs: list[int], m: int, ef_construction: int, queries: int, brute_queries: int
) -> list[Row]:
    print(f"\n== n={n:,} dim={DIM} M={m} ef_construction={ef_construction}", flush=True)
    t = time.perf_counter()
    points, q, extra = make_data(n, queries, seed=n)
    truth, truth_sim = ground_truth(points, q)
    print(f"data + ground truth: {time.perf_counter() - t:.1f}s", flush=True)
    # Nearest-neighbour cosines of indexed points (a sample), to check the data look like
    # sentence embeddings rather than uniform noise (where every cosine is ~0).
    sample = points[:: max(1, n // 200)][:200]
    second = np.concatenate(
        [np.partition(part @ points.T, -2, axis=1)[:, -2] for part in np.split(sample, 4)]
    )  # [-1] is the point itself
    print(
        f"cosine of a point to its nearest other point: median {np.median(second):.3f} "
        f"(p10 {np.percentile(second, 10):.3f}, p90 {np.percentile(second, 90):.3f}); "
        f"query to its nearest point: median {np.median(truth_sim):.3f}",
        flush=True,
    )

    ids = [f"e{i}" for i in range(n)]
    index = VectorIndex(DIM, flat_limit=0, M=m, ef_construction=ef_construction, ef=efs[0])
    t = time.perf_counter()
    for start in range(0, n, BATCH):
        index.upsert(ids[start : start + BATCH], points[start : start + BATCH])
        if start and start % 100_000 == 0:
            rate = start / (time.perf_counter() - t)
            print(f"  {start:,} inserted ({rate:,.0f}/s)", flush=True)
    build_s = time.perf_counter() - t
    print(f"build: {build_s:.1f}s ({n / build_s:,.0f} vectors/s)", flush=True)

    upserts = []
    for i, row in enumerate(extra):
        t = time.perf_counter()
        index.upsert([f"x{i}"], row[None, :])
        upserts.append(time.perf_counter() - t)
    index.remove([f"x{i}" for i in range(len(extra))])  # back to exactly the n points
    memory_mb = index.memory_bytes() / 2**20

    brute = brute_force_p50(points, q, brute_queries)
    rows = []
    for ef in efs:
        index.ef = ef
        latencies = []
        hits = 0
        for i, qv in enumerate(q):
            t = time.perf_counter()
            found = index.search(qv, 1)
            latencies.append(time.perf_counter() - t)
            hits += bool(found) and found[0][0] == ids[truth[i]]
        rows.append(
            Row(
                n=n,
                ef=ef,
                build_s=build_s,
                insert_per_s=n / build_s,
                upsert_p50_ms=percentile_ms(upserts, 50),
                memory_mb=memory_mb,
                p50_ms=percentile_ms(latencies, 50),
                p99_ms=percentile_ms(latencies, 99),
                recall=hits / len(q),
                brute_p50_ms=brute,
            )
        )
        print(f"  ef={ef}: p50 {rows[-1].p50_ms:.3f} ms, recall@1 {rows[-1].recall:.4f}")
    return rows


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'n':>9} {'ef':>4} {'build s':>8} {'ins/s':>8} {'upsert p50':>10} {'mem MB':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'recall@1':>8} {'numpy p50':>9} {'speed-up':>8}"
    )
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.n:>9,} {r.ef:>4} {r.build_s:>8.1f} {r.insert_per_s:>8,.0f} "
            f"{r.upsert_p50_ms:>8.3f}ms {r.memory_mb:>8,.0f} {r.p50_ms:>7.3f} {r.p99_ms:>7.3f} "
            f"{r.recall:>8.4f} {r.brute_p50_ms:>7.2f}ms {r.brute_p50_ms / r.p50_ms:>7.0f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000], help="index sizes")
    parser.add_argument("--quick", action="store_true", help="20k only (< 1 minute)")
    parser.add_argument("--M", type=int, default=32, dest="m")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--brute-queries", type=int, default=200, help="single brute-force queries timed"
    )
    args = parser.parse_args()
    sizes = [20_000] if args.quick else args.n
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    rows: list[Row] = []
    for n in sizes:
        rows += run_size(n, args.ef, args.m, args.ef_construction, args.queries, args.brute_queries)
    print_table(rows)
    print(
        "\nTarget (issue #11): 1M x 384-d, p50 <= 1 ms with recall@1 >= 0.99 on 2 cores. "
        "speed-up = numpy brute-force p50 / index p50."
    )


if __name__ == "__main__":
    main()
