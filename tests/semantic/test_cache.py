"""SemanticCache behaviour: exact first, lexical guards, scopes, sharing, failures, learning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.errors import ConfigurationError
from stratacache.semantic import SemanticCache
from stratacache.semantic import _cache as semantic_cache
from stratacache.semantic._cache import _Calibration
from stratacache.semantic._embedders import CallableEmbedder
from stratacache.tiers import DiskTier, MemoryTier, RedisTier
from tests.redis_procs import RedisProcess
from tests.semantic.conftest import CountingLocal

SCOPE = {"model": "gpt-x", "temperature": 0, "tenant": "acme"}


@pytest.fixture
def counting(memo_local: CountingLocal) -> CountingLocal:
    memo_local.calls = 0
    return memo_local


@pytest.fixture
def embedder(counting: CountingLocal) -> CallableEmbedder:
    return CallableEmbedder(counting, identity=counting.local.identity)


@pytest.fixture
def cache() -> Iterator[sc.TieredCache]:
    built = sc.TieredCache([MemoryTier()])
    yield built
    built.close()


@pytest.fixture
def sem(embedder: CallableEmbedder, cache: sc.TieredCache) -> SemanticCache:
    s = SemanticCache(embedder, cache, sync_interval=0)
    s.store("How do I reset my password?", "Settings > Security > Reset", SCOPE)
    s.store("Where is my order 48213?", {"status": "shipped"}, SCOPE)
    s.store("Is the call-out fee included in the quote?", "yes, included", SCOPE)
    return s


@pytest.mark.parametrize(
    "question",
    [
        "How do I reset my password?",
        "how can i reset my password",
        "Hi, quick one: how do I reset my password? Thanks!",
        "How do I reset my pasword?",
        "  HOW DO I RESET MY PASSWORD??  ",
    ],
)
def test_the_same_question_in_other_words_is_served(sem: SemanticCache, question: str) -> None:
    assert sem.lookup(question, SCOPE) == "Settings > Security > Reset"
    decision = sem.last_decision(question, SCOPE)
    assert decision is not None and decision.hit
    assert decision.guard in {"exact", "lexical"}


@pytest.mark.parametrize(
    ("question", "guard"),
    [
        ("Where is my order 48231?", "numbers"),
        ("Is the call-out fee excluded from the quote?", "antonym"),
        ("How do I not reset my password?", "negation"),
        ("How do I reset your password?", "roles"),
        ("How do I reset my username?", "content_words"),
    ],
)
def test_look_alike_questions_with_other_answers_miss(
    sem: SemanticCache, question: str, guard: str
) -> None:
    assert sem.lookup(question, SCOPE) is None
    decision = sem.last_decision(question, SCOPE)
    assert decision is not None and not decision.hit
    assert decision.guard == guard
    assert decision.similarity is not None and decision.similarity > 0.8


def test_scope_must_match_exactly(sem: SemanticCache) -> None:
    for other in (
        {**SCOPE, "tenant": "globex"},
        {**SCOPE, "temperature": 0.7},
        {**SCOPE, "history": [{"role": "user", "content": "hi"}]},
        None,
    ):
        assert sem.lookup("How do I reset my password?", other) is None


def test_stored_values_round_trip_and_none_is_not_stored(sem: SemanticCache) -> None:
    assert sem.lookup("where is my order 48213", SCOPE) == {"status": "shipped"}
    sem.store("Send me the logo", b"\x89PNG\x00", SCOPE)
    assert sem.lookup("send me the logo please", SCOPE) == b"\x89PNG\x00"
    sem.store("What is left?", None, SCOPE)
    assert sem.lookup("What is left?", SCOPE) is None


def test_query_embeddings_are_cached_in_the_tiers(
    sem: SemanticCache, counting: CountingLocal
) -> None:
    sem.lookup("how can i reset my password", SCOPE)
    calls = counting.calls
    for _ in range(3):
        assert sem.lookup("how can i reset my password", SCOPE) is not None
    assert counting.calls == calls
    assert sem.stats()["embedding_hits"] >= 3


def test_stats_count_hits_misses_and_the_deciding_guard(sem: SemanticCache) -> None:
    sem.lookup("how can i reset my password", SCOPE)
    sem.lookup("Where is my order 48231?", SCOPE)
    stats = sem.stats()
    assert stats["hits"] == 1 and stats["misses"] == 1
    assert stats["hit:lexical"] == 1 and stats["refused:numbers"] == 1
    assert stats["entries"] == 3 and stats["partitions"] == 1
    assert 0.8 < stats["similarity_p50"] <= 1.0


def test_async_twins(embedder: CallableEmbedder, cache: sc.TieredCache) -> None:
    async def main() -> None:
        s = SemanticCache(embedder, cache, sync_interval=0)
        await s.astore("How do I cancel my subscription?", "Account > Plan > Cancel", SCOPE)
        assert await s.alookup("how do i cancel my subscription", SCOPE) == (
            "Account > Plan > Cancel"
        )
        assert await s.alookup("How do I pause my subscription?", SCOPE) is None

    asyncio.run(main())


def test_entries_are_shared_through_the_tiers(
    embedder: CallableEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two caches on one disk directory stand for two processes: the second learns the
    first's entries from the journal at start (warm-up) and later (incremental sync)."""
    monkeypatch.setattr(semantic_cache, "_JOURNAL_BATCH", 4)  # cross several batches
    first = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    second = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    a = SemanticCache(embedder, first, sync_interval=0)
    for i in range(15):
        a.store(f"What is the price of product {i}?", i, SCOPE)
    b = SemanticCache(embedder, second, sync_interval=0)
    assert b.lookup("what's the price of product 14", SCOPE) == 14
    assert b.lookup("what's the price of product 7", SCOPE) == 7
    assert b.stats()["entries"] == 15
    a.store("How do I reset my password?", "reset", SCOPE)
    assert b.lookup("how can i reset my password", SCOPE) == "reset"
    first.close()
    second.close()


@pytest.mark.parametrize("server", ["redis_url", "cluster_url"])
def test_shared_through_redis(
    embedder: CallableEmbedder, server: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue(server)
    one = sc.TieredCache([MemoryTier(), RedisTier(redis_url)], namespace="semtest")
    # generation_refresh=0: see another process's clear() at once, not within the second
    two = sc.TieredCache(
        [MemoryTier(), RedisTier(redis_url)], namespace="semtest", generation_refresh=0
    )
    a = SemanticCache(embedder, one, sync_interval=0)
    b = SemanticCache(embedder, two, sync_interval=0)
    a.store("Do you deliver to Northern Ireland?", "yes", SCOPE)
    assert b.lookup("do you deliver to northern ireland", SCOPE) == "yes"
    b.store("Do you deliver on Sundays?", "no", SCOPE)
    assert a.lookup("Hey, do you deliver on Sundays?", SCOPE) == "no"
    a.clear()
    fresh = SemanticCache(embedder, two, sync_interval=0)
    assert fresh.lookup("Do you deliver to Northern Ireland?", SCOPE) is None
    one.close()
    two.close()


def test_redis_down_is_a_miss_not_an_error(
    embedder: CallableEmbedder, private_redis: RedisProcess
) -> None:
    cache = sc.TieredCache([RedisTier(private_redis.url)], breaker_backoff=0.05)
    s = SemanticCache(embedder, cache, sync_interval=0)
    s.store("How do I reset my password?", "reset", SCOPE)
    private_redis.kill()
    assert s.lookup("how can i reset my password", SCOPE) is None
    s.store("Another question?", "x", SCOPE)  # no exception
    cache.close()


def test_failing_embedder_is_a_miss(cache: sc.TieredCache) -> None:
    def broken(texts: list[str]) -> Any:
        raise RuntimeError("provider down")

    s = SemanticCache(CallableEmbedder(broken, identity="broken"), cache, sync_interval=0)
    s.store("How do I reset my password?", "reset", SCOPE)
    assert s.lookup("How do I reset my password?", SCOPE) is None
    assert s.stats()["store_error"] == 1


def test_corrupt_entries_are_misses(sem: SemanticCache) -> None:
    decision_before = sem.lookup("how can i reset my password", SCOPE)
    assert decision_before is not None
    eid = sem.last_decision("how can i reset my password", SCOPE).entry  # type: ignore[union-attr]
    sem.cache.set(f"e:{eid}", b"SCSEM1\x00\x00\x00\xffgarbage")
    assert sem.lookup("how can i reset my pasword", SCOPE) is None
    assert sem.lookup("How do I reset my password?", SCOPE) is None


def test_wrong_feedback_stops_that_entry_at_that_similarity(sem: SemanticCache) -> None:
    question = "how can i reset my password"
    assert sem.lookup(question, SCOPE) is not None
    sem.feedback(question, False, SCOPE)
    assert sem.lookup(question, SCOPE) is None
    decision = sem.last_decision(question, SCOPE)
    assert decision is not None and decision.guard == "reported_wrong"
    assert sem.stats()["feedback_wrong"] == 1


def test_verifier_decides_candidates_the_words_rule_refuses(
    embedder: CallableEmbedder, cache: sc.TieredCache
) -> None:
    seen: list[tuple[str, str, Any]] = []

    def verifier(new: str, cached: str, answer: Any) -> bool:
        seen.append((new, cached, answer))
        return "shop" in new

    s = SemanticCache(embedder, cache, sync_interval=0, verifier=verifier)
    s.store("How do I find my nearest store?", "store finder", SCOPE)
    assert s.lookup("How do I find my nearest shop?", SCOPE) == "store finder"
    decision = s.last_decision("How do I find my nearest shop?", SCOPE)
    assert decision is not None and decision.guard == "verifier"
    assert seen == [
        ("How do I find my nearest shop?", "How do I find my nearest store?", "store finder")
    ]
    # hard guards run before the verifier: it is never asked about another order number
    s.store("Where is order 48213?", "shipped", SCOPE)
    assert s.lookup("Where is order 48231?", SCOPE) is None
    assert len(seen) == 1
    assert s.stats()["verdicts"] == 1


def test_async_verifier(embedder: CallableEmbedder, cache: sc.TieredCache) -> None:
    async def verifier(new: str, cached: str, answer: Any) -> bool:
        await asyncio.sleep(0)
        return False

    s = SemanticCache(embedder, cache, sync_interval=0, verifier=verifier)
    s.store("How do I find my nearest store?", "store finder", SCOPE)
    assert asyncio.run(s.alookup("How do I find my nearest shop?", SCOPE)) is None
    with pytest.raises(ConfigurationError):
        s.lookup("How do I find my nearest shop?", SCOPE)


def test_explicit_threshold_relaxes_words_but_not_hard_guards(
    embedder: CallableEmbedder, cache: sc.TieredCache
) -> None:
    s = SemanticCache(embedder, cache, threshold=0.9, sync_interval=0)
    s.store("How do I find my nearest store?", "store finder", SCOPE)
    s.store("Where is order 48213?", "shipped", SCOPE)
    assert s.lookup("How do I find my nearest shop?", SCOPE) == "store finder"
    assert s.lookup("Where is order 48231?", SCOPE) is None


def test_calibration_opens_only_on_evidence() -> None:
    cal = _Calibration(0.02)
    for _ in range(100):
        cal.add(0.9, True)
    assert cal.threshold is None  # 100 right answers cannot bound the error below 2%
    for _ in range(200):
        cal.add(0.9, True)
    assert cal.threshold == pytest.approx(0.9)
    for _ in range(30):
        cal.add(0.85, False)
    assert cal.threshold == pytest.approx(0.9)
    for _ in range(5000):  # plenty of right verdicts above do not open a wrong band
        cal.add(0.95, True)
    assert cal.threshold == pytest.approx(0.9)


def test_stored_answers_teach_the_calibration(
    embedder: CallableEmbedder, cache: sc.TieredCache
) -> None:
    s = SemanticCache(embedder, cache, sync_interval=0)
    s.store("How do I find my nearest store?", "Use the store finder.", SCOPE)
    assert s.lookup("How do I find my nearest shop?", SCOPE) is None
    s.store("How do I find my nearest shop?", "use the store finder", SCOPE)
    assert s.stats()["verdicts"] == 1
    assert s._calibration(SCOPE).verdicts[-1][1] is True


def test_each_tenant_learns_its_own_threshold(
    embedder: CallableEmbedder, cache: sc.TieredCache
) -> None:
    """A tenant whose questions all get the same answer ("reply OK") teaches the cache that
    looser matches are right; that lesson must not loosen what other tenants are served."""
    s = SemanticCache(embedder, cache, sync_interval=0, error_budget=0.2)
    teacher = {**SCOPE, "tenant": "teacher"}
    for _ in range(60):
        s._calibration(teacher).add(0.5, True)
    assert s._calibration(teacher).threshold is not None
    assert s._calibration({**SCOPE, "tenant": "victim"}).threshold is None
    assert s._calibration(SCOPE).threshold is None
    assert set(s.stats()["learned_thresholds"]) == {'"teacher"'}


def test_bad_configuration_is_refused(embedder: CallableEmbedder) -> None:
    for kwargs in (
        {"threshold": 1.5},
        {"threshold": 0},
        {"error_budget": 0},
        {"error_budget": 1},
        {"verifier": "yes"},
        {"candidates": 0},
        {"sync_interval": -1},
    ):
        with pytest.raises(ConfigurationError):
            SemanticCache(embedder, sc.TieredCache([MemoryTier()]), **kwargs)
    with pytest.raises(ConfigurationError):
        SemanticCache(object(), sc.TieredCache([MemoryTier()]))
    s = SemanticCache(embedder, sc.TieredCache([MemoryTier()]))
    with pytest.raises(TypeError):
        s.lookup(b"bytes", SCOPE)  # type: ignore[arg-type]


def test_indexes_are_saved_next_to_the_disk_tier(
    embedder: CallableEmbedder, tmp_path: Path
) -> None:
    first = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    a = SemanticCache(embedder, first, sync_interval=0)
    assert a.index_dir == tmp_path / "semantic-index" / "semantic"
    a.store("How do I reset my password?", "reset", SCOPE)
    a.store("Where is my order 48213?", "shipped", SCOPE)
    a.close()
    assert (tmp_path / "semantic-index" / "semantic" / "state.json").exists()
    first.close()

    second = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    b = SemanticCache(embedder, second, sync_interval=0)
    assert b.lookup("how can i reset my password", SCOPE) == "reset"
    assert b.stats()["index_loaded"] == 1 and b.stats()["entries"] == 2
    b.clear()  # a new epoch: the saved index describes entries that are gone
    b.close()
    second.close()

    third = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    c = SemanticCache(embedder, third, sync_interval=0)
    assert c.lookup("how can i reset my password", SCOPE) is None
    assert "index_loaded" not in c.stats()
    third.close()


def test_a_corrupt_saved_index_falls_back_to_the_journal(
    embedder: CallableEmbedder, tmp_path: Path
) -> None:
    first = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    a = SemanticCache(embedder, first, sync_interval=0)
    a.store("How do I reset my password?", "reset", SCOPE)
    a.close()
    first.close()
    for path in (tmp_path / "semantic-index" / "semantic").rglob("*"):
        if path.is_file() and path.name != "state.json":
            path.write_bytes(b"garbage")
    second = sc.TieredCache([MemoryTier(), DiskTier(tmp_path)])
    b = SemanticCache(embedder, second, sync_interval=0)
    assert b.lookup("how can i reset my password", SCOPE) == "reset"
    assert b.stats()["index_load"] == 1
    second.close()


def test_another_embedder_never_sees_these_entries(
    sem: SemanticCache, cache: sc.TieredCache, counting: CountingLocal
) -> None:
    other = SemanticCache(
        CallableEmbedder(counting, identity="another-model-same-dimension"), cache, sync_interval=0
    )
    assert other.lookup("How do I reset my password?", SCOPE) is None
    assert sem.lookup("How do I reset my password?", SCOPE) is not None
