"""``stratacache._peers``: the side-by-side figures behind ``stratacache bench``.

These tests check behaviour (every side answered, the ratio is what it says, a missing
framework is a skipped row, the user's cache directory is left alone), never speed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from stratacache import _peers


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """One real quick run, with ``$STRATACACHE_DIR`` pointing at a directory to watch."""
    import litellm

    user_dir = tmp_path_factory.mktemp("user-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRATACACHE_DIR", str(user_dir))
        before = (litellm.cache, list(litellm.success_callback), list(litellm.input_callback))
        rows = _peers.run_peers(quick=True)
        after = (litellm.cache, list(litellm.success_callback), list(litellm.input_callback))
    assert after == before, "litellm's global cache set-up was not restored"
    return rows, user_dir


def measured(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["skipped"] is None]


@pytest.mark.slow
def test_quick_run_measures_langchain_and_litellm(
    quick_run: tuple[list[dict[str, Any]], Path],
) -> None:
    rows, _ = quick_run
    pairs = {(r["framework"], r["peer"], r["stratacache"]) for r in measured(rows)}
    assert ("langchain", "InMemoryCache", "LLMCache(memory)") in pairs
    assert ("langchain", "InMemoryCache", "LLMCache(memory+disk)") in pairs
    assert ("langchain", "SQLiteCache", "LLMCache(memory+disk)") in pairs
    embeddings = [("CacheBackedEmbeddings(InMemoryByteStore)", "CachedEmbeddings(memory)"),
                  ("CacheBackedEmbeddings(LocalFileStore)", "CachedEmbeddings(disk)")]  # fmt: skip
    for peer, ours in embeddings:
        assert ("langchain", peer, ours) in pairs
    assert ("litellm", "Cache() (local)", "stratacache memory") in pairs
    assert ("litellm", "Cache() (local)", "stratacache memory+disk") in pairs
    # litellm's disk cache exists in some releases only: measured or a skipped row, never absent
    disk = [r for r in rows if r["framework"] == "litellm" and r["peer"] == "Cache(type='disk')"]
    assert len(disk) == 1
    assert disk[0]["skipped"] is not None or disk[0]["stratacache"] == "stratacache disk"


@pytest.mark.slow
def test_quick_run_timings_and_ratios(quick_run: tuple[list[dict[str, Any]], Path]) -> None:
    rows, _ = quick_run
    for row in measured(rows):
        assert row["peer_us"] > 0 and row["stratacache_us"] > 0, row
        assert row["ratio"] == pytest.approx(row["stratacache_us"] / row["peer_us"])
        assert row["unit"] in {"µs/call", "µs/text"}


@pytest.mark.slow
def test_quick_run_every_side_answered_the_same(
    quick_run: tuple[list[dict[str, Any]], Path],
) -> None:
    rows, _ = quick_run
    for row in measured(rows):
        assert row["peer_answer"] == row["stratacache_answer"], row
        answer = row["stratacache_answer"]
        if row["scenario"] == "model.invoke hit":
            assert answer == _peers.ANSWER  # not _peers.MISS: the model was not called again
        elif row["framework"] == "litellm":
            assert answer == _peers.LITELLM_ANSWER  # a cache hit (a miss is flagged as such)
        else:  # vectors at float32 precision, and no text re-embedded during the timed calls
            assert answer.endswith(tuple("0123456789abcdef")) and "re-embedded" not in answer
            assert answer.startswith("300x384 float32 sha256:")


@pytest.mark.slow
def test_quick_run_leaves_the_configured_cache_dir_alone(
    quick_run: tuple[list[dict[str, Any]], Path],
) -> None:
    _, user_dir = quick_run
    assert list(user_dir.iterdir()) == []


@pytest.mark.slow
def test_render_of_a_real_run(quick_run: tuple[list[dict[str, Any]], Path]) -> None:
    rows, _ = quick_run
    text = _peers.render_peers(rows)
    for row in measured(rows):
        assert row["scenario"] in text
        assert f"{row['ratio']:.2f}x" in text
    assert "!!" not in text  # no side answered differently


def test_missing_frameworks_are_skipped_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import X` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "langchain_core.caches", None)
    monkeypatch.setitem(sys.modules, "litellm", None)
    rows = _peers.run_peers(quick=True)
    assert [(r["framework"], r["peer"]) for r in rows] == [
        ("langchain", "LangChain"),
        ("litellm", "litellm"),
    ]
    for row in rows:
        assert "not installed" in row["skipped"]
        assert row["peer_us"] is None and row["stratacache_us"] is None and row["ratio"] is None
    text = _peers.render_peers(rows)
    assert text.count("skipped") >= 4  # two table cells, two notes with the reason
    assert "not installed" in text


def test_missing_peer_package_is_a_skipped_row_beside_measured_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_community.cache", None)
    monkeypatch.setitem(sys.modules, "langchain_classic.embeddings", None)
    monkeypatch.setitem(sys.modules, "litellm", None)
    rows = _peers.run_peers(quick=True)
    by_peer = {(r["scenario"], r["peer"]): r for r in rows if r["framework"] == "langchain"}
    sqlite = by_peer[("model.invoke hit", "SQLiteCache")]
    assert "langchain_community not installed" in sqlite["skipped"]
    emb = by_peer[("warm embedding hits", "CacheBackedEmbeddings")]
    assert "langchain_classic not installed" in emb["skipped"]
    memory = by_peer[("model.invoke hit", "InMemoryCache")]
    assert memory["skipped"] is None
    assert memory["peer_answer"] == memory["stratacache_answer"] == _peers.ANSWER


def test_render_aligns_rows_and_prints_ratios() -> None:
    rows: list[dict[str, Any]] = [
        {"framework": "langchain", "scenario": "model.invoke hit", "peer": "InMemoryCache",
         "stratacache": "LLMCache(memory)", "unit": "µs/call", "peer_us": 100.0,
         "stratacache_us": 50.0, "ratio": 0.5, "peer_answer": "Paris",
         "stratacache_answer": "Paris", "skipped": None},
        {"framework": "litellm", "scenario": "completion hit", "peer": "Cache() (local)",
         "stratacache": "stratacache memory", "unit": "µs/call", "peer_us": 1000.0,
         "stratacache_us": 1234.5, "ratio": 1.2345, "peer_answer": "x",
         "stratacache_answer": "y", "skipped": None},
        {"framework": "litellm", "scenario": "completion hit", "peer": "Cache(type='disk')",
         "stratacache": None, "unit": None, "peer_us": None, "stratacache_us": None,
         "ratio": None, "peer_answer": None, "stratacache_answer": None,
         "skipped": "not available in this litellm"},
    ]  # fmt: skip
    text = _peers.render_peers(rows)
    lines = text.splitlines()
    table = lines[: 2 + len(rows)]
    assert len({len(line) for line in table[:2]}) == 1  # header and rule line up
    ratio_end = table[0].index("ratio") + len("ratio")
    assert table[2][:ratio_end].endswith("0.50x")  # right-aligned under its header
    assert table[3][:ratio_end].endswith("1.23x")
    assert "model.invoke hit" in text and "completion hit" in text
    assert "skipped: litellm Cache(type='disk'): not available in this litellm" in text
    assert "!! completion hit: Cache() (local) answered 'x'" in text  # a mismatch is flagged
