"""VectorIndex against numpy brute force, on real hnswlib: recall, updates, deletes, growth,
rebuilds, persistence, bad input and concurrent use."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from stratacache.errors import ConfigurationError
from stratacache.semantic._index import RWLock, VectorIndex

DIM = 32


def clustered(n: int, *, seed: int = 0, centres: int = 40, noise: float = 0.12) -> np.ndarray:
    """Unit vectors around a few dozen directions: dense neighbourhoods like text embeddings,
    which is where a graph index can confuse near-duplicates."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * noise
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def near(x: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = (
        x[rng.integers(0, len(x), count)]
        + rng.standard_normal((count, DIM)).astype(np.float32) * 0.05
    )
    out: np.ndarray = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return out


def ids_for(n: int, start: int = 0) -> list[str]:
    return [f"id-{i}" for i in range(start, start + n)]


def brute_top1(x: np.ndarray, ids: list[str], q: np.ndarray) -> list[str]:
    return [ids[i] for i in np.argmax(q @ x.T, axis=1)]


def recall_at_1(index: VectorIndex, x: np.ndarray, ids: list[str], q: np.ndarray) -> float:
    truth = brute_top1(x, ids, q)
    hits = sum(index.search(qv, 1)[0][0] == t for qv, t in zip(q, truth, strict=True))
    return hits / len(q)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(2000)


@pytest.fixture(scope="module")
def hnsw_index(data: np.ndarray) -> VectorIndex:
    index = VectorIndex(DIM, flat_limit=50)
    index.upsert(ids_for(len(data)), data)
    return index


# -- configuration and input validation -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"dim": True},
        {"dim": 8, "flat_limit": -1},
        {"dim": 8, "M": 1},
        {"dim": 8, "ef": 0},
        {"dim": 8, "ef_construction": 0},
        {"dim": 8, "rebuild_ratio": 0.0},
        {"dim": 8, "rebuild_ratio": 1.5},
        {"dim": 8, "rebuild_ratio": "0.2"},
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        VectorIndex(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("flat_limit", [10_000, 0])
def test_bad_vectors_are_refused(flat_limit: int) -> None:
    index = VectorIndex(DIM, flat_limit=flat_limit)
    good = clustered(3)
    with pytest.raises(ValueError, match="zero vector"):
        index.upsert(["a"], np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError, match="shape"):
        index.upsert(["a"], np.ones((1, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.upsert(["a"], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match="3 ids but 2"):
        index.upsert(["a", "b", "c"], good[:2])
    with pytest.raises(ValueError, match="single string"):
        index.upsert("abc", good)
    index.upsert(["a", "b", "c"], good)
    index.upsert([], np.empty((0, DIM), np.float32))
    assert "a" in index
    assert ["a"] not in index
    assert 1 not in index
    with pytest.raises(ValueError, match="zero vector"):
        index.search(np.zeros(DIM, np.float32), 1)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.ones(DIM - 1, np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(good[0], 0)
    # A refused write leaves the index as it was.
    assert sorted(index.ids()) == ["a", "b", "c"]
    assert index.search(good[1], 1)[0][0] == "b"


def test_unnormalised_input_is_normalised() -> None:
    index = VectorIndex(DIM)
    x = clustered(20)
    index.upsert(ids_for(20), x * 7.5)
    best, sim = index.search(x[3] * 0.01, 1)[0]
    assert best == "id-3"
    assert sim == pytest.approx(1.0, abs=1e-5)


# -- exact path ----------------------------------------------------------------------------


def test_flat_search_matches_brute_force_exactly(data: np.ndarray) -> None:
    index = VectorIndex(DIM)
    ids = ids_for(len(data))
    index.upsert(ids, data)
    assert index.kind == "flat"
    q = near(data, 50)
    for qv in q:
        got = index.search(qv, 5)
        sims = data @ qv
        order = np.argsort(-sims)[:5]
        assert [g[0] for g in got] == [ids[i] for i in order]
        assert [g[1] for g in got] == pytest.approx(sims[order].tolist(), abs=1e-5)
    assert len(index.search(q[0], 10_000)) == len(data)


def test_flat_remove_swaps_with_last_and_keeps_everything_findable() -> None:
    x = clustered(200, seed=3)
    index = VectorIndex(DIM)
    ids = ids_for(200)
    index.upsert(ids, x)
    removed = set(ids[::3])
    index.remove([*removed, "never-there"])
    assert len(index) == 200 - len(removed)
    for i, id_ in enumerate(ids):
        assert (id_ in index) == (id_ not in removed)
        hits = [h for h, _ in index.search(x[i], 5)]
        assert not removed & set(hits)
        if id_ not in removed:
            assert hits[0] == id_
    index.remove(ids)
    assert len(index) == 0
    assert index.search(x[0], 3) == []


def test_flat_matrix_grows_amortised() -> None:
    index = VectorIndex(DIM)
    x = clustered(300, seed=4)
    capacities = set()
    for i in range(300):
        index.upsert([f"id-{i}"], x[i : i + 1])
        capacities.add(index.capacity)
    assert len(index) == 300
    # Doubling: a handful of reallocations for 300 single-row appends, not 300.
    assert len(capacities) <= 4


# -- both paths --------------------------------------------------------------------------


@pytest.mark.parametrize("flat_limit", [10_000, 0])
def test_upsert_replaces_an_existing_id(flat_limit: int) -> None:
    x = clustered(300, seed=5)
    index = VectorIndex(DIM, flat_limit=flat_limit)
    index.upsert(ids_for(300), x)
    kind = index.kind
    index.upsert(["id-7"], x[100:101])
    assert len(index) == 300
    assert index.kind == kind
    top = index.search(x[100], 2)
    assert {top[0][0], top[1][0]} == {"id-7", "id-100"}
    assert top[1][1] == pytest.approx(1.0, abs=1e-4)
    # Its old vector no longer leads anywhere.
    assert all(h != "id-7" for h, _ in index.search(x[7], 1))
    # A repeated id in one call keeps the last vector.
    index.upsert(["dup", "dup"], x[[10, 20]])
    assert index.search(x[20], 2)[1][0] == "dup" or index.search(x[20], 2)[0][0] == "dup"
    assert len(index) == 301


@pytest.mark.parametrize("flat_limit", [10_000, 0])
def test_similarities_are_cosines_best_first(flat_limit: int) -> None:
    x = clustered(500, seed=6)
    index = VectorIndex(DIM, flat_limit=flat_limit)
    index.upsert(ids_for(500), x)
    q = near(x, 20, seed=7)
    for qv in q:
        got = index.search(qv, 10)
        assert len(got) == 10
        sims = [s for _, s in got]
        assert sims == sorted(sims, reverse=True)
        for id_, sim in got:
            expected = float(x[int(id_.split("-")[1])] @ qv)
            assert sim == pytest.approx(expected, abs=1e-4)
            assert -1.0 <= sim <= 1.0


# -- hnsw path ----------------------------------------------------------------------------


def test_hnsw_recall_at_1(hnsw_index: VectorIndex, data: np.ndarray) -> None:
    assert hnsw_index.kind == "hnsw"
    assert recall_at_1(hnsw_index, data, ids_for(len(data)), near(data, 400)) >= 0.98


def test_flat_recall_at_1_is_exact(data: np.ndarray) -> None:
    index = VectorIndex(DIM)
    index.upsert(ids_for(len(data)), data)
    assert recall_at_1(index, data, ids_for(len(data)), near(data, 400)) == 1.0


def test_crossing_flat_limit_converts_once_and_keeps_every_id() -> None:
    x = clustered(400, seed=8)
    ids = ids_for(400)
    index = VectorIndex(DIM, flat_limit=100)
    index.upsert(ids[:100], x[:100])
    assert index.kind == "flat"
    index.upsert(ids[100:101], x[100:101])
    assert index.kind == "hnsw"
    assert sorted(index.ids()) == sorted(ids[:101])
    for i in range(101):
        assert index.search(x[i], 1)[0][0] == ids[i]
    # Hysteresis: dropping back under the limit does not convert back...
    index.remove(ids[:10])
    assert index.kind == "hnsw"
    index.upsert(ids[101:], x[101:])
    assert len(index) == 390
    assert set(index.ids()) == set(ids[10:])


def test_a_batch_that_crosses_the_limit_lands_in_hnsw() -> None:
    x = clustered(500, seed=9)
    index = VectorIndex(DIM, flat_limit=100)
    index.upsert(ids_for(50), x[:50])
    index.upsert(ids_for(450, start=50), x[50:])
    assert index.kind == "hnsw"
    assert len(index) == 500
    assert recall_at_1(index, x, ids_for(500), near(x, 100)) >= 0.98


def test_hnsw_capacity_doubles_when_full() -> None:
    x = clustered(3000, seed=10)
    index = VectorIndex(DIM, flat_limit=0)
    index.upsert(ids_for(1000), x[:1000])
    first = index.capacity
    assert first >= 1000
    for start in range(1000, 3000, 250):
        index.upsert(ids_for(250, start=start), x[start : start + 250])
    assert index.capacity >= 3000
    assert index.capacity in {first * 2, first * 4}
    assert len(index) == 3000
    assert recall_at_1(index, x, ids_for(3000), near(x, 200)) >= 0.98


def test_removed_ids_are_never_returned_and_slots_are_reused() -> None:
    x = clustered(1500, seed=11)
    ids = ids_for(1500)
    index = VectorIndex(DIM, flat_limit=0, rebuild_ratio=1.0)
    index.upsert(ids, x)
    removed = set(ids[:200])
    index.remove(removed)
    assert index.tombstones == 200
    q = near(x, 300, seed=12)
    for qv in q:
        assert not removed & {h for h, _ in index.search(qv, 20)}
    for i in range(200):  # the removed vectors themselves lead to live neighbours
        hits = index.search(x[i], 5)
        assert hits
        assert not removed & {h for h, _ in hits}
    capacity = index.capacity
    index.upsert(ids_for(150, start=5000), x[:150])
    assert index.tombstones == 50
    assert index.capacity == capacity
    assert index.search(x[3], 1)[0][0] == "id-5003"
    # Replacing a live id while tombstones exist must not leave a ghost copy behind.
    index.upsert(["id-600"], x[700:701])
    near_700 = [h for h, _ in index.search(x[700], 5)]
    assert near_700.count("id-600") == 1
    assert all(h != "id-600" for h, _ in index.search(x[600], 1))


def test_many_removes_trigger_a_rebuild() -> None:
    x = clustered(2000, seed=13)
    ids = ids_for(2000)
    index = VectorIndex(DIM, flat_limit=50, rebuild_ratio=0.25)
    index.upsert(ids, x)
    index.remove(ids[:400])
    assert index.tombstones == 400  # 400 / 2000 = 0.2: not yet
    index.remove(ids[400:600])
    assert index.tombstones == 0  # 600 / 2000 = 0.3: rebuilt from the live vectors
    assert index.kind == "hnsw"
    assert len(index) == 1400
    assert set(index.ids()) == set(ids[600:])
    removed = set(ids[:600])
    for i in range(0, 2000, 7):
        hits = index.search(x[i], 10)
        assert not removed & {h for h, _ in hits}
        if i >= 600:
            assert hits[0][0] == ids[i]
    # The rebuilt graph still takes inserts and updates.
    index.upsert(ids[:10], x[:10])
    assert index.search(x[5], 1)[0][0] == ids[5]


def test_a_rebuild_of_a_small_remainder_returns_to_the_exact_path() -> None:
    x = clustered(300, seed=14)
    ids = ids_for(300)
    index = VectorIndex(DIM, flat_limit=100)
    index.upsert(ids, x)
    assert index.kind == "hnsw"
    index.remove(ids[:260])
    assert index.kind == "flat"
    assert set(index.ids()) == set(ids[260:])
    for i in range(260, 300):
        best, sim = index.search(x[i], 1)[0]
        assert best == ids[i]
        assert sim == pytest.approx(1.0, abs=1e-5)


def test_heavy_deletion_without_rebuild_never_raises() -> None:
    """hnswlib raises when it finds fewer than k live elements; the index must absorb it."""
    x = clustered(1200, seed=15)
    ids = ids_for(1200)
    index = VectorIndex(DIM, flat_limit=0, M=2, ef_construction=8, ef=1, rebuild_ratio=1.0)
    index.upsert(ids, x)
    index.remove(ids[:1180])
    live = set(ids[1180:])
    for qv in near(x, 50, seed=16):
        got = index.search(qv, 20)
        # The graph is too sparse to reach all 20 survivors; the exact rescue scan does.
        assert {h for h, _ in got} == live
        sims = np.array([x[int(h.split("-")[1])] @ qv for h, _ in got])
        assert [s for _, s in got] == pytest.approx(sims.tolist(), abs=1e-5)
        assert list(sims) == sorted(sims, reverse=True)


def test_memory_estimate_tracks_size() -> None:
    x = clustered(3000, seed=17)
    small, big = VectorIndex(DIM, flat_limit=0), VectorIndex(DIM, flat_limit=0)
    small.upsert(ids_for(100), x[:100])
    big.upsert(ids_for(3000), x)
    assert small.memory_bytes() >= 100 * 4 * DIM
    assert big.memory_bytes() >= 3000 * (4 * DIM + 16 * 2 * 4)
    assert big.memory_bytes() > 2 * small.memory_bytes()
    flat = VectorIndex(DIM)
    flat.upsert(ids_for(100), x[:100])
    assert flat.memory_bytes() >= 100 * 4 * DIM


# -- persistence ---------------------------------------------------------------------------


@pytest.mark.parametrize("flat_limit", [10_000, 50])
def test_save_load_round_trip(tmp_path: Path, flat_limit: int) -> None:
    x = clustered(1000, seed=18)
    ids = ids_for(1000)
    index = VectorIndex(DIM, flat_limit=flat_limit, ef=40, rebuild_ratio=0.5)
    index.upsert(ids, x)
    index.remove(ids[:100])
    q = near(x, 50, seed=19)
    before = [index.search(qv, 5) for qv in q]
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    assert loaded.kind == index.kind
    assert loaded.dim == DIM
    assert len(loaded) == 900
    assert sorted(loaded.ids()) == sorted(ids[100:])
    assert loaded.tombstones == index.tombstones
    after = [loaded.search(qv, 5) for qv in q]
    for b, a in zip(before, after, strict=True):
        assert [h for h, _ in a] == [h for h, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)
    # The loaded index is fully writable: tombstones are reused, new ids get fresh labels.
    loaded.upsert(["new"], x[:1])
    loaded.remove(["id-500"])
    assert loaded.search(x[0], 1)[0][0] == "new"
    assert "id-500" not in loaded


def test_save_replaces_the_previous_copy(tmp_path: Path) -> None:
    x = clustered(200, seed=20)
    index = VectorIndex(DIM, flat_limit=0)
    index.upsert(ids_for(100), x[:100])
    index.save(tmp_path)
    index.upsert(ids_for(100, start=100), x[100:])
    index.save(tmp_path)
    assert len(VectorIndex.load(tmp_path)) == 200
    assert len(list(tmp_path.glob("vectors-*"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_an_interrupted_save_leaves_the_old_copy_readable(tmp_path: Path) -> None:
    x = clustered(100, seed=21)
    index = VectorIndex(DIM)
    index.upsert(ids_for(50), x[:50])
    index.save(tmp_path)
    # What a crash before the sidecar swap leaves behind: a new data file and a temp sidecar.
    (tmp_path / "vectors-deadbeef.npy").write_bytes(b"half a file")
    (tmp_path / ".index.json.deadbeef.tmp").write_text("{")
    loaded = VectorIndex.load(tmp_path)
    assert len(loaded) == 50
    assert loaded.search(x[7], 1)[0][0] == "id-7"
    # The next save clears the debris.
    loaded.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "index.json"
    assert len(list(tmp_path.iterdir())) == 2


def test_missing_directory_or_sidecar_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no saved vector index"):
        VectorIndex.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"index\.json missing"):
        VectorIndex.load(tmp_path)


@pytest.mark.parametrize("flat_limit", [10_000, 0])
def test_corrupt_files_are_a_clear_error(tmp_path: Path, flat_limit: int) -> None:
    x = clustered(100, seed=22)
    index = VectorIndex(DIM, flat_limit=flat_limit)
    index.upsert(ids_for(100), x)
    index.save(tmp_path)
    meta_path = tmp_path / "index.json"
    meta = json.loads(meta_path.read_text())
    data = tmp_path / meta["data_file"]
    raw = data.read_bytes()

    data.write_bytes(raw[: len(raw) // 2])  # truncated: never handed to hnswlib
    with pytest.raises(ValueError, match="checksum"):
        VectorIndex.load(tmp_path)
    data.unlink()
    with pytest.raises(ValueError, match="missing or unreadable"):
        VectorIndex.load(tmp_path)
    data.write_bytes(raw)
    assert len(VectorIndex.load(tmp_path)) == 100

    meta_path.write_text('{"format": "stratacache.vector_index", "vers')
    with pytest.raises(ValueError, match="corrupt vector index metadata"):
        VectorIndex.load(tmp_path)
    for broken in (
        {**meta, "version": 99},
        {**meta, "dim": -1},
        {**meta, "ids": meta["ids"][:-1]},
        {k: v for k, v in meta.items() if k != "params"},
    ):
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="vector index"):
            VectorIndex.load(tmp_path)


# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("flat_limit", [300, 0])
def test_concurrent_searches_and_writes(flat_limit: int) -> None:
    """Real threads: writers upsert and remove (crossing the flat limit, resizing and
    rebuilding) while readers search. Nothing may raise; every hit must be an id that was
    live at some point, with a cosine in [-1, 1]."""
    x = clustered(3000, seed=23)
    ids = ids_for(3000)
    index = VectorIndex(DIM, flat_limit=flat_limit, rebuild_ratio=0.3)
    index.upsert(ids[:200], x[:200])
    errors: list[BaseException] = []
    stop = threading.Event()
    # Ids are recorded before their upsert starts, so a hit outside this set is an id that
    # was never live (a stale label, a label mapped to the wrong id).
    ever_live = set(ids[:200])
    searches = [0]

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for step in range(60):
                start = rng.randrange(0, 2900)
                batch = list(range(start, start + rng.randint(1, 100)))
                ever_live.update(ids[i] for i in batch)
                index.upsert([ids[i] for i in batch], x[batch])
                if step % 2:
                    index.remove(rng.sample(ids, 150))  # mostly unknown ids: ignored
                if step % 10 == 9:  # a purge: enough tombstones to force a rebuild
                    live = index.ids()
                    index.remove(rng.sample(live, len(live) // 2))
        except BaseException as exc:
            errors.append(exc)

    def reader(seed: int) -> None:
        q = near(x, 200, seed=seed)
        try:
            while not stop.is_set():
                for qv in q[:50]:
                    for id_, sim in index.search(qv, 5):
                        assert id_ in ever_live
                        assert -1.0 <= sim <= 1.0
                        # ids[i] only ever holds x[i]: the similarity proves the label->id
                        # map and the vector agreed at the moment of the search.
                        assert abs(sim - float(x[int(id_[3:])] @ qv)) < 1e-4
                    searches[0] += 1
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    readers = [threading.Thread(target=reader, args=(100 + s,)) for s in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors
    assert searches[0] > 0
    # The final state is consistent: membership, search and len agree.
    live = index.ids()
    assert len(live) == len(index) == len(set(live))
    for id_ in live[:100]:
        i = int(id_.split("-")[1])
        assert index.search(x[i], 1)[0][1] == pytest.approx(1.0, abs=1e-3)


def test_rwlock_readers_share_it() -> None:
    lock = RWLock()
    other_inside = threading.Event()

    def second_reader() -> None:
        with lock.read():
            other_inside.set()

    with lock.read():
        t = threading.Thread(target=second_reader)
        t.start()
        # Would time out if readers excluded each other.
        assert other_inside.wait(10)
    t.join(timeout=10)


def test_rwlock_is_exclusive_for_writers() -> None:
    lock = RWLock()
    readers_inside = [0]
    writers_inside = [0]
    violations: list[str] = []
    guard = threading.Lock()
    barrier = threading.Barrier(4)

    def reader() -> None:
        barrier.wait()
        for _ in range(300):
            with lock.read():
                with guard:
                    readers_inside[0] += 1
                    if writers_inside[0]:
                        violations.append("reader with writer")
                with guard:
                    readers_inside[0] -= 1

    def writer() -> None:
        barrier.wait()
        for _ in range(300):
            with lock.write():
                with guard:
                    writers_inside[0] += 1
                    if readers_inside[0] or writers_inside[0] > 1:
                        violations.append("writer not alone")
                with guard:
                    writers_inside[0] -= 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    threads += [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert violations == []


def test_rwlock_prefers_a_waiting_writer() -> None:
    lock = RWLock()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def first_reader() -> None:
        with lock.read():
            reader_in.set()
            release_reader.wait(10)
            order.append("reader1-out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader2")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    assert reader_in.wait(10)
    tw = threading.Thread(target=writer)
    tw.start()
    while not lock._writers_waiting:  # the writer is queued behind reader 1
        threading.Event().wait(0.001)
    t2 = threading.Thread(target=late_reader)
    t2.start()
    t2.join(timeout=0.2)
    assert t2.is_alive()  # a waiting writer holds new readers back
    release_reader.set()
    for t in (t1, tw, t2):
        t.join(timeout=10)
    assert order == ["reader1-out", "writer", "reader2"]
