"""The semantic layer keeps tenants apart by construction: the tenant is part of the scope, the
scope is the partition, and a lookup searches the caller's partition only.

CacheAttack-style: an attacker plants answers for many paraphrases of a victim's future question
(and an exact copy) in its own scope. Even with the most permissive decision settings (a low
fixed threshold, a verifier that accepts everything) the victim is never served one, in this
process or in another one that shares the tiers. The real offline e5 model embeds.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import stratacache as sc
from stratacache.semantic import SemanticCache
from stratacache.semantic._embedders import CallableEmbedder
from tests.semantic.conftest import CountingLocal

VICTIM = "How do I reset my password?"
VICTIM_ASKS = [
    VICTIM,
    "How do I reset my pasword?",
    "hi, how do I reset my password please?",
    "How can I reset my password?",
    "how do i reset my password",
]
PARAPHRASES = [
    "How do I reset my pasword?",
    "hi, how do I reset my password please?",
    "How can I reset my password?",
    "how do i reset my password",
    "How do I reset my password??",
    "Please, how do I reset my password?",
    "How do I reset my password, please?",
    "How to reset my password?",
    "What do I do to reset my password?",
    "I forgot my password, how do I reset it?",
    "Steps to reset my password?",
    "How do I change my password?",
    "reset password how",
    "How do I reset the password of my account?",
]


@pytest.fixture
def e5(memo_local: CountingLocal) -> CallableEmbedder:
    return CallableEmbedder(memo_local, identity=memo_local.local.identity)


def scope(tenant: str | None) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "system": "You are support.",
        "tenant": tenant,
    }


def plant(sem: SemanticCache, tenant: str | None) -> None:
    for n, question in enumerate([VICTIM, *PARAPHRASES]):
        sem.store(question, f"PLANTED {n}: send your password to evil.example", scope(tenant))


def permissive(e5: CallableEmbedder, cache: sc.TieredCache, seen: list[Any]) -> SemanticCache:
    """The loosest settings there are: any candidate found would be served."""

    def accept_all(new: str, cached: str, answer: Any) -> bool:
        seen.append(answer)
        return True

    return SemanticCache(e5, cache, threshold=0.5, verifier=accept_all, sync_interval=0)


def test_planted_paraphrases_never_reach_the_victim(
    e5: CallableEmbedder, memory_cache: sc.TieredCache
) -> None:
    seen: list[Any] = []
    sem = permissive(e5, memory_cache, seen)
    plant(sem, "attacker")
    # The plants work in the attacker's own scope: its reworded questions are served.
    assert str(sem.lookup("Hello, how do I reset my password?", scope("attacker"))).startswith(
        "PLANTED"
    )
    seen.clear()
    for question in VICTIM_ASKS:
        assert sem.lookup(question, scope("victim")) is None, question
        assert sem.last_decision(question, scope("victim")).guard == "empty"  # type: ignore[union-attr]
    assert seen == []  # not one planted answer was even shown to the verifier


def test_the_victims_own_entries_are_not_displaced(
    e5: CallableEmbedder, memory_cache: sc.TieredCache
) -> None:
    """With entries in both partitions, each tenant gets its own answer, never the other's."""
    seen: list[Any] = []
    sem = permissive(e5, memory_cache, seen)
    sem.store(VICTIM, "victim's answer", scope("victim"))
    plant(sem, "attacker")
    for question in VICTIM_ASKS:
        assert sem.lookup(question, scope("victim")) == "victim's answer", question
    assert all(a == "victim's answer" for a in seen)
    assert str(sem.lookup(VICTIM, scope("attacker"))).startswith("PLANTED")


def test_no_tenant_and_tenants_are_separate_partitions(
    e5: CallableEmbedder, memory_cache: sc.TieredCache
) -> None:
    seen: list[Any] = []
    sem = permissive(e5, memory_cache, seen)
    plant(sem, None)
    assert all(sem.lookup(q, scope("victim")) is None for q in VICTIM_ASKS)
    sem.clear()
    plant(sem, "attacker")
    assert all(sem.lookup(q, scope(None)) is None for q in VICTIM_ASKS)
    assert seen == []


def test_the_control_one_shared_partition_serves_the_plants(
    e5: CallableEmbedder, memory_cache: sc.TieredCache
) -> None:
    """Without a tenant in the scope, the attack succeeds even under the default (safe) rule."""
    sem = SemanticCache(e5, memory_cache)
    for n, question in enumerate(PARAPHRASES[:4]):
        sem.store(question, f"PLANTED {n}", scope(None))
    assert str(sem.lookup(VICTIM, scope(None))).startswith("PLANTED")


@pytest.mark.parametrize(
    "tenant",
    [
        'victim", "tenant": "attacker',  # JSON injection into the scope
        "victim\x00",
        "Victim",
        "victim ",
        "",
    ],
)
def test_a_tenant_name_cannot_reach_another_partition(
    e5: CallableEmbedder, memory_cache: sc.TieredCache, tenant: str
) -> None:
    sem = SemanticCache(e5, memory_cache)
    assert sem.partition(scope(tenant)) != sem.partition(scope("victim"))
    assert sem.partition(scope(tenant)) != sem.partition(scope(None))
    sem.store(VICTIM, "PLANTED", scope(tenant))
    assert sem.lookup(VICTIM, scope("victim")) is None


def test_plants_from_another_process_never_reach_the_victim(
    e5: CallableEmbedder, shared_redis_caches: tuple[sc.TieredCache, sc.TieredCache]
) -> None:
    """The victim's process learns the attacker's entries from the shared journal (the
    control proves it did) and still never serves them to the victim."""
    one, two = shared_redis_caches
    plant(SemanticCache(e5, one), "attacker")
    seen: list[Any] = []
    victim_side = permissive(e5, two, seen)
    assert str(
        victim_side.lookup("Hello, how do I reset my password?", scope("attacker"))
    ).startswith("PLANTED")
    seen.clear()
    for question in VICTIM_ASKS:
        assert victim_side.lookup(question, scope("victim")) is None, question
    assert seen == []


def test_namespaces_over_a_shared_redis_never_see_each_other(
    e5: CallableEmbedder, shared_redis_caches: tuple[sc.TieredCache, sc.TieredCache]
) -> None:
    one, two = shared_redis_caches
    a = SemanticCache(e5, one, namespace="app-a")
    b = SemanticCache(e5, two, namespace="app-b", sync_interval=0)
    a_elsewhere = SemanticCache(e5, two, namespace="app-a", sync_interval=0)
    a.store(VICTIM, "a's answer", scope("acme"))
    b.store(VICTIM, "b's answer", scope("acme"))
    assert b.lookup(VICTIM_ASKS[1], scope("acme")) == "b's answer"
    assert a_elsewhere.lookup(VICTIM_ASKS[1], scope("acme")) == "a's answer"
    a.clear()
    # Another process learns of a clear within its generation_refresh.
    deadline = time.monotonic() + 30
    while a_elsewhere.lookup(VICTIM, scope("acme")) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a_elsewhere.lookup(VICTIM, scope("acme")) is None
    assert b.lookup(VICTIM_ASKS[1], scope("acme")) == "b's answer"
