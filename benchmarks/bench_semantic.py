"""Semantic cache quality and speed: stratacache's default decision next to fixed thresholds.

Usage::

    python benchmarks/bench_semantic.py              # quality tables (~1-2 min: embeds ~2.5k texts)
    python benchmarks/bench_semantic.py --speed      # + lookup overhead at 100k entries
    python benchmarks/bench_semantic.py --json out.json

Quality. Each labelled pair (a, b) is run through the product path: a fresh scope, ``store(a)``,
then ``lookup(b)``. A hit on a pair whose answers differ is a wrong hit. Data:

* fow-cache's 600 question pairs (dev dependency; read from the wheel, never copied here),
  split by a hash of the pair id into a *calibration* half (what the guards' word lists and
  the cosine floor were looked at against) and a *held-out* half (never looked at);
* fow-cache's 240 multi-turn conversation pairs: the scope holds the earlier turns, the last
  user turn is looked up;
* ``benchmarks/data/unseen_pairs.jsonl``: 400 pairs written for this project by someone who
  had not seen the guards, with trap kinds fow-cache lacks (roles, word order, one-letter
  look-alikes, long questions).

Fixed thresholds (0.80 / 0.95 / 0.99, cosine on the same embedder, no guards) are what the
peers do (GPTCache, RedisVL, LangChain's semantic caches, LiteLLM's redis-semantic cache).

Speed. ``--speed`` fills one partition with 100k entries (clustered 384-d vectors), then
times lookups whose query embedding is already stored, i.e. what a lookup costs beyond the
embedding call; and the embedding call of LocalEmbedder itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stratacache import TieredCache
from stratacache.semantic import LocalEmbedder, SemanticCache
from stratacache.semantic._embedders import CallableEmbedder
from stratacache.tiers import MemoryTier

HERE = Path(__file__).resolve().parent
UNSEEN = HERE / "data" / "unseen_pairs.jsonl"
SHOULD_HIT = {"near_repeat", "paraphrase"}


def half(item_id: str) -> str:
    digest = int(hashlib.sha256(item_id.encode()).hexdigest(), 16)
    return "calibration" if digest % 2 == 0 else "held-out"


def load_pairs() -> dict[str, list[dict[str, Any]]]:
    import fow_cache.data as fow

    sets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in fow.load_questions():
        sets[f"fow {half(item['id'])}"].append(item)
    if UNSEEN.exists():
        with UNSEEN.open() as f:
            sets["unseen"] = [json.loads(line) for line in f if line.strip()]
    return dict(sets)


class VectorTable:
    """Every text embedded once with LocalEmbedder; the cache under test reads from here so
    that each method sees identical vectors (and the run takes one embedding pass)."""

    def __init__(self, texts: Sequence[str], saved: Path | None = None) -> None:
        unique = sorted(set(texts))
        local = LocalEmbedder()
        self.identity = local.identity
        self.rows: dict[str, np.ndarray] = {}
        if saved is not None and saved.exists():
            with np.load(saved, allow_pickle=False) as data:
                if str(data["identity"]) == self.identity:
                    self.rows = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
        todo = [t for t in unique if t not in self.rows]
        for i in range(0, len(todo), 64):
            self.rows.update(zip(todo[i : i + 64], local.embed(todo[i : i + 64]), strict=True))
        if saved is not None and todo:
            keys = sorted(self.rows)
            np.savez(
                saved,
                identity=np.array(self.identity),
                texts=np.array(keys),
                vectors=np.vstack([self.rows[k] for k in keys]),
            )

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.vstack([self.rows[t] for t in texts])

    def cos(self, a: str, b: str) -> float:
        return float(self.rows[a] @ self.rows[b])


def run_default(
    table: VectorTable, pairs: list[dict[str, Any]], **options: Any
) -> list[tuple[dict[str, Any], bool]]:
    embedder = CallableEmbedder(table, identity=table.identity)
    sem = SemanticCache(embedder, TieredCache([MemoryTier()]), sync_interval=0, **options)
    out = []
    for item in pairs:
        scope = {"pair": item["id"]}
        sem.store(item["a"], "answer", scope)
        out.append((item, sem.lookup(item["b"], scope) is not None))
    return out


def run_conversations(table: VectorTable, convs: list[dict[str, Any]]) -> dict[str, Any]:
    embedder = CallableEmbedder(table, identity=table.identity)
    sem = SemanticCache(embedder, TieredCache([MemoryTier()]), sync_interval=0)
    hits = wrong = should = 0
    naive_wrong = 0
    for item in convs:
        a, b = item["a"], item["b"]
        sem.store(a[-1]["content"], "answer", {"history": a[:-1]})
        hit = sem.lookup(b[-1]["content"], {"history": b[:-1]}) is not None
        hits += hit
        should += item["same_answer"]
        wrong += hit and not item["same_answer"]
        naive = table.cos(a[-1]["content"], b[-1]["content"]) >= 0.95
        naive_wrong += naive and not item["same_answer"]
    traps = len(convs) - should
    return {"pairs": len(convs), "traps": traps, "hits": hits, "wrong_hits": wrong,
            "last_turn_only_cos95_wrong": naive_wrong}  # fmt: skip


def summarise(decided: list[tuple[dict[str, Any], bool]]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    by_cat: dict[str, list[tuple[dict[str, Any], bool]]] = defaultdict(list)
    for item, hit in decided:
        by_cat[item["category"]].append((item, hit))
    for cat, got in sorted(by_cat.items()):
        rows[cat] = {"n": len(got), "hits": sum(h for _, h in got)}
    should = [(i, h) for i, h in decided if i["same_answer"]]
    traps = [(i, h) for i, h in decided if not i["same_answer"]]
    hits = sum(h for _, h in decided)
    wrong = sum(h for _, h in traps)
    rows["overall"] = {
        "recall": sum(h for _, h in should) / max(1, len(should)),
        "hits": hits,
        "wrong_hits": wrong,
        "wrong_share": wrong / hits if hits else 0.0,
        "trap_hit_rate": wrong / max(1, len(traps)),
    }
    return rows


def fixed(
    table: VectorTable, pairs: list[dict[str, Any]], t: float
) -> list[tuple[dict[str, Any], bool]]:
    return [(item, table.cos(item["a"], item["b"]) >= t) for item in pairs]


def ablation(table: VectorTable, pairs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """What each guard costs: the default's rule with one part changed, on ``pairs``.

    Decided with the guard functions directly (a pair has one candidate, so this is the
    lookup's decision); returns ``{variant: (should-hit served, wrong hits)}``."""
    from dataclasses import replace

    from stratacache.semantic._cache import DEFAULT_FLOOR
    from stratacache.semantic._guards import hard_conflicts, lexically_equivalent, signature

    def no_fronting(sig: Any) -> Any:
        return replace(sig, breaks=frozenset())

    variants: dict[str, Callable[[str, str, float], bool]] = {
        "default": lambda a, b, c: (
            c >= DEFAULT_FLOOR and lexically_equivalent(signature(a), signature(b))
        ),
        "no spelling slips": lambda a, b, c: (
            c >= DEFAULT_FLOOR and lexically_equivalent(signature(a), signature(b), slips=0)
        ),
        "no fronted phrase": lambda a, b, c: (
            c >= DEFAULT_FLOOR
            and lexically_equivalent(no_fronting(signature(a)), no_fronting(signature(b)))
        ),
        "cosine floor 0.95": lambda a, b, c: (
            c >= 0.95 and lexically_equivalent(signature(a), signature(b))
        ),
        "no cosine floor": lambda a, b, c: lexically_equivalent(signature(a), signature(b)),
        "threshold=0.95 (hard guards only)": lambda a, b, c: (
            (c >= DEFAULT_FLOOR and lexically_equivalent(signature(a), signature(b)))
            or (c >= 0.95 and not hard_conflicts(signature(a), signature(b)))
        ),
    }
    out = {}
    for name, decide in variants.items():
        served = wrong = 0
        for item in pairs:
            hit = decide(item["a"], item["b"], table.cos(item["a"], item["b"]))
            served += hit and item["same_answer"]
            wrong += hit and not item["same_answer"]
        out[name] = (served, wrong)
    return out


def print_table(name: str, methods: dict[str, dict[str, dict[str, float]]]) -> None:
    cats = sorted({c for m in methods.values() for c in m if c != "overall"})
    width = max(len(m) for m in methods) + 2
    print(f"\n== {name} ==")
    header = "method".ljust(width) + "".join(f"{c[:12]:>13}" for c in cats)
    print(header + f"{'recall':>9}{'hits':>6}{'wrong':>7}{'wrong%':>8}")
    for method, rows in methods.items():
        line = method.ljust(width)
        for c in cats:
            r = rows.get(c)
            line += f"{(str(int(r['hits'])) + '/' + str(int(r['n']))) if r else '-':>13}"
        o = rows["overall"]
        line += f"{o['recall']:>9.1%}{int(o['hits']):>6}{int(o['wrong_hits']):>7}"
        line += f"{o['wrong_share']:>8.1%}"
        print(line)
    print("(per category: hits/pairs; should-hit categories are near_repeat and paraphrase)")


def quality(saved: Path | None = None) -> dict[str, Any]:
    import fow_cache.data as fow

    sets = load_pairs()
    convs = fow.load_conversations()
    texts = [t for ps in sets.values() for p in ps for t in (p["a"], p["b"])]
    texts += [c[-1]["content"] for conv in convs for c in (conv["a"], conv["b"])]
    start = time.perf_counter()
    table = VectorTable(texts, saved)
    took = time.perf_counter() - start
    print(f"embedded {len(table.rows)} texts with LocalEmbedder in {took:.0f} s")
    results: dict[str, Any] = {}
    for name, pairs in sets.items():
        methods = {
            "cosine>=0.80": summarise(fixed(table, pairs, 0.80)),
            "cosine>=0.95": summarise(fixed(table, pairs, 0.95)),
            "cosine>=0.99": summarise(fixed(table, pairs, 0.99)),
            "stratacache default": summarise(run_default(table, pairs)),
            "stratacache threshold=0.95": summarise(run_default(table, pairs, threshold=0.95)),
        }
        print_table(name, methods)
        results[name] = methods
    calibration = sets["fow calibration"]
    should = sum(p["same_answer"] for p in calibration)
    print(f"\n== what each guard costs (fow calibration half, {should} should-hit pairs) ==")
    costs = ablation(table, calibration)
    for name, (served, wrong) in costs.items():
        print(f"{name:<36} served {served:>3}/{should}   wrong hits {wrong:>3}")
    results["ablation"] = costs
    conv = run_conversations(table, convs)
    print(
        f"\n== fow multi-turn ({conv['pairs']} pairs, {conv['traps']} traps) ==\n"
        f"stratacache default: {conv['hits']} hits, {conv['wrong_hits']} wrong; "
        f"last user turn only at cosine>=0.95: {conv['last_turn_only_cos95_wrong']} wrong"
    )
    results["multi-turn"] = conv
    return results


def speed(n: int = 100_000, queries: int = 500) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    dim = 384
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pick = rng.integers(0, len(centres), n)
    vecs = centres[pick] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    texts = [f"question number {i} about topic {pick[i]}" for i in range(n)]
    lookup_texts = [f"what about question number {i} on topic {pick[i]}" for i in range(queries)]
    qv = vecs[:queries] + 0.2 * rng.standard_normal((queries, dim)).astype(np.float32) / np.sqrt(
        dim
    )
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    rows = dict(zip(texts, vecs, strict=True)) | dict(zip(lookup_texts, qv, strict=True))

    def table(batch: list[str]) -> np.ndarray:
        return np.vstack([rows[t] for t in batch])

    embedder = CallableEmbedder(table, identity="bench-speed")
    cache = TieredCache([MemoryTier(max_bytes=2 << 30)])
    sem = SemanticCache(embedder, cache, sync_interval=3600, flat_limit=20_000)
    start = time.perf_counter()
    for i in range(n):
        sem.store(texts[i], {"answer": i}, "scope")
    fill = time.perf_counter() - start
    for t in lookup_texts:  # store each query embedding, so the timed lookups embed nothing
        sem.lookup(t, "scope")
    timings = []
    for t in lookup_texts:
        t0 = time.perf_counter()
        sem.lookup(t, "scope")
        timings.append(time.perf_counter() - t0)
    timings.sort()
    local = LocalEmbedder()
    local.embed(["warm up"])
    emb = []
    for t in lookup_texts[:50]:
        t0 = time.perf_counter()
        local.embed([t])
        emb.append(time.perf_counter() - t0)
    out = {
        "entries": n,
        "index": sem.stats()["entries"],
        "store_per_s": n / fill,
        "lookup_p50_ms": 1000 * statistics.median(timings),
        "lookup_p99_ms": 1000 * timings[int(0.99 * len(timings))],
        "local_embed_p50_ms": 1000 * statistics.median(emb),
    }
    print(
        f"\n== speed: one partition of {n} entries ==\n"
        f"store: {out['store_per_s']:.0f}/s; lookup beyond the embedding call: "
        f"p50 {out['lookup_p50_ms']:.3f} ms, p99 {out['lookup_p99_ms']:.3f} ms; "
        f"LocalEmbedder call p50 {out['local_embed_p50_ms']:.1f} ms"
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", action="store_true", help="also time lookups at 100k entries")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--vectors", type=Path, help="keep LocalEmbedder's vectors in this .npz between runs"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if not args.speed_only:
        results["quality"] = quality(args.vectors)
    if args.speed or args.speed_only:
        results["speed"] = speed(args.entries)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


_: Callable[..., Any] = main

if __name__ == "__main__":
    main()
