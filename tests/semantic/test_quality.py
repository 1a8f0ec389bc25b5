"""The default decision on a fixed sample of labelled pairs, through the real LocalEmbedder.

A CI-sized slice of what ``benchmarks/bench_semantic.py`` measures in full: fow-cache's
held-out half (read from the fow-cache wheel), the project's own unseen pairs and fow-cache's
multi-turn traps. The thresholds asserted are the issue's targets, not the measured figures.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import fow_cache.data as fow  # type: ignore[import-untyped]
import pytest

import stratacache as sc
from stratacache.semantic import SemanticCache
from stratacache.semantic._embedders import CallableEmbedder
from stratacache.tiers import MemoryTier
from tests.semantic.conftest import CountingLocal

UNSEEN = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "unseen_pairs.jsonl"


def _rank(item_id: str) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16)


def _sample(items: list[dict[str, Any]], key: str, per: int) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(items, key=lambda i: _rank(i["id"])):
        if len(groups[item[key]]) < per:
            groups[item[key]].append(item)
    return [i for g in groups.values() for i in g]


@pytest.fixture(scope="module")
def embedder(memo_local: CountingLocal) -> CallableEmbedder:
    return CallableEmbedder(memo_local, identity=memo_local.local.identity)


def _run(embedder: CallableEmbedder, pairs: list[dict[str, Any]]) -> tuple[int, int, int]:
    sem = SemanticCache(embedder, sc.TieredCache([MemoryTier()]), sync_interval=0)
    hits = wrong = right = 0
    for item in pairs:
        scope = {"pair": item["id"]}
        sem.store(item["a"], "answer", scope)
        if sem.lookup(item["b"], scope) is not None:
            hits += 1
            wrong += not item["same_answer"]
            right += item["same_answer"]
    return hits, wrong, right


def test_question_pairs_stay_within_the_error_budget(embedder: CallableEmbedder) -> None:
    held_out = [q for q in fow.load_questions() if _rank(q["id"]) % 2 == 1]
    with UNSEEN.open() as f:
        unseen = [json.loads(line) for line in f if line.strip()]
    pairs = _sample(held_out, "category", 8) + _sample(unseen, "category", 5)
    should = sum(p["same_answer"] for p in pairs)
    hits, wrong, right = _run(embedder, pairs)
    assert wrong <= 0.02 * hits
    assert right >= 0.10 * should


def test_multi_turn_traps_never_hit(embedder: CallableEmbedder) -> None:
    traps = [c for c in fow.load_conversations() if not c["same_answer"]]
    sample = sorted(traps, key=lambda c: _rank(c["id"]))[:24]
    sem = SemanticCache(embedder, sc.TieredCache([MemoryTier()]), sync_interval=0)
    for conv in sample:
        a, b = conv["a"], conv["b"]
        sem.store(a[-1]["content"], "answer", {"history": a[:-1]})
        assert sem.lookup(b[-1]["content"], {"history": b[:-1]}) is None
