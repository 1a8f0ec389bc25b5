"""The vector index behind one scope partition of the semantic cache.

Most partitions are small (one tenant, one model, one system prompt), and below a few tens of
thousands of rows an exact numpy scan is both faster to maintain and as fast to query as a
graph index (10k x 384 is ~0.4 ms a query on two cores) -- and it is exact, so a cache hit
never depends on graph luck. A partition that outgrows ``flat_limit`` is converted once to an
hnswlib HNSW graph (cosine space); it does not flip back on every small shrink.

hnswlib is compiled from source (no wheels on PyPI), so it is imported only when a partition
first needs it: the flat path and ``import stratacache.semantic`` work without it.

Concurrency: hnswlib's ``add_items`` and ``knn_query`` are not safe together and
``resize_index`` is safe with neither, so every index sits behind a writer-preferring
reader-writer lock: searches run in parallel, a write runs alone, and a steady stream of
searches cannot starve a writer.

Persistence never uses pickle: a cache directory may be shared or restored from a backup, and
unpickling it would execute whatever it contains. The data file is ``.npy`` (loaded with
``allow_pickle=False``) or hnswlib's own binary, checked against a SHA-256 recorded in a JSON
sidecar before hnswlib parses it (hnswlib trusts its input and can crash on a truncated file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stratacache.errors import ConfigurationError, missing_extra

__all__ = ["RWLock", "VectorIndex"]

Matrix = npt.NDArray[np.float32]

_FORMAT = "stratacache.vector_index"
_FORMAT_VERSION = 1
_META_FILE = "index.json"
_DATA_PREFIX = "vectors-"
# A hnswlib element carries, besides its vector and level-0 links: its label (8 bytes), the
# link-count header (4), a per-element std::mutex (40), its level and upper-layer pointer (12),
# and an entry in the label lookup table (~40). Our own id<->label maps add two dict entries,
# a boxed int and the id string (~200 with a short id). Estimates for stats, not accounting.
_HNSW_ELEMENT_OVERHEAD = 104
_PY_ENTRY_OVERHEAD = 200
_MIN_CAPACITY = 1024
_HASH_CHUNK = 1 << 20
# Above this many live elements the exact rescue scan in search() costs more than a shorter
# answer; a 50k x 384 scan is ~4 ms.
_EXACT_FALLBACK_LIMIT = 50_000


class RWLock:
    """A writer-preferring reader-writer lock (stdlib only).

    Many readers may hold it at once; a writer holds it alone. Once a writer is waiting, new
    readers queue behind it: with a search-heavy load a reader-preferring lock would never
    drain, and upserts would wait forever. Not reentrant: a thread holding it must not acquire
    it again in either mode.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _hnswlib() -> Any:
    try:
        import hnswlib
    except ImportError as exc:
        raise missing_extra("hnswlib", "semantic") from exc
    return hnswlib


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _normalised_rows(vectors: object, dim: int, what: str) -> Matrix:
    """Validate and L2-normalise; a zero or non-finite row has no direction, so it is refused
    rather than silently matching everything (NaN) or nothing."""
    try:
        matrix = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numeric, shape (n, {dim})") from exc
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{what} contains NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1)
    if matrix.shape[0] and float(norms.min()) <= 1e-12:
        raise ValueError(f"{what} contains a zero vector, which has no cosine similarity")
    matrix /= norms[:, None]
    return matrix


def _headroom(n: int) -> int:
    """Initial graph capacity: a quarter spare, so a bulk load is not followed at once by a
    resize, without reserving 2x for a partition that may never grow again."""
    return max(_MIN_CAPACITY, n + n // 4)


def _fsync_dir(directory: Path) -> None:
    # Directory fsync makes the rename durable on POSIX; Windows cannot open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class VectorIndex:
    """Cosine nearest-neighbour search over string ids for one cache partition.

    Exact (a numpy matrix scan) while at most ``flat_limit`` entries are live; beyond that an
    hnswlib graph. Vectors should arrive L2-normalised; they are normalised again anyway,
    because an unnormalised row would silently skew every similarity.

    Args:
        dim: vector dimension; every vector must match it.
        flat_limit: live entries above which the exact path converts to HNSW. ``0`` means HNSW
            from the start. The conversion is one-way, except that a rebuild that finds at most
            ``flat_limit // 2`` live entries returns to the exact path (so a shrinking
            partition gets exact answers back, and there is no flip-flopping around the limit).
        M: HNSW graph degree (memory grows with it; recall too). 32: on 1M clustered 384-d
            vectors M=16 reached recall@1 0.984 only at ef=128 (0.87 ms), M=32 0.992 at
            ef=64 (0.68 ms) and 0.999 at ef=128 (``benchmarks/bench_ann.py``, docs/benchmarks.md).
        ef_construction: HNSW build-time beam width (build time grows with it; so does recall).
        ef: HNSW query beam width; searches use ``max(ef, k)``.
        rebuild_ratio: rebuild the graph from live vectors once deleted entries exceed this
            fraction of all elements. Inserts reuse deleted slots first, so this only happens
            when a partition shrinks; it frees the memory hnswlib never returns otherwise.

    Raises:
        ConfigurationError: a parameter out of range.

    Thread safety: any mix of calls from any threads is safe (see :class:`RWLock`).
    """

    dim: int

    def __init__(
        self,
        dim: int,
        *,
        flat_limit: int = 20_000,
        M: int = 32,
        ef_construction: int = 200,
        ef: int = 64,
        rebuild_ratio: float = 0.25,
    ) -> None:
        self.dim = _check_int("dim", dim, 1)
        self._flat_limit = _check_int("flat_limit", flat_limit, 0)
        self._M = _check_int("M", M, 2)
        self._ef_construction = _check_int("ef_construction", ef_construction, 1)
        self._ef = _check_int("ef", ef, 1)
        if (
            isinstance(rebuild_ratio, bool)
            or not isinstance(rebuild_ratio, int | float)
            or not 0.0 < float(rebuild_ratio) <= 1.0
        ):
            raise ConfigurationError(f"rebuild_ratio must be in (0, 1], got {rebuild_ratio!r}")
        self._rebuild_ratio = float(rebuild_ratio)
        self._lock = RWLock()
        self._save_lock = threading.Lock()
        # Flat path: rows [0, _n) of _matrix are live; _row_ids[r] owns row r.
        self._matrix: Matrix = np.empty((0, dim), dtype=np.float32)
        self._n = 0
        self._row_ids: list[str] = []
        self._rows: dict[str, int] = {}
        # HNSW path (None while flat). Labels are never reused, so a tombstone's label can
        # never be mistaken for a live id.
        self._hnsw: Any = None
        self._labels: dict[str, int] = {}
        self._label_ids: dict[int, str] = {}
        self._next_label = 0
        self._tombstones = 0

    # -- introspection -------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"flat"`` or ``"hnsw"``, for stats."""
        return "flat" if self._hnsw is None else "hnsw"

    @property
    def ef(self) -> int:
        """HNSW query beam width (recall vs latency); settable at run time."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        _check_int("ef", value, 1)
        with self._lock.write():
            self._ef = value
            if self._hnsw is not None:
                self._hnsw.set_ef(value)

    @property
    def tombstones(self) -> int:
        """Deleted HNSW elements still occupying slots (always 0 on the exact path)."""
        return self._tombstones

    @property
    def capacity(self) -> int:
        """Rows (flat) or elements (HNSW) allocated before the next growth."""
        with self._lock.read():
            if self._hnsw is None:
                return int(self._matrix.shape[0])
            return int(self._hnsw.get_max_elements())

    def __len__(self) -> int:
        with self._lock.read():
            return self._n if self._hnsw is None else len(self._labels)

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        with self._lock.read():
            return id in (self._rows if self._hnsw is None else self._labels)

    def ids(self) -> list[str]:
        with self._lock.read():
            return list(self._row_ids[: self._n] if self._hnsw is None else self._labels)

    def memory_bytes(self) -> int:
        """An estimate of what this index holds in memory, for stats and benchmarks."""
        with self._lock.read():
            if self._hnsw is None:
                return int(self._matrix.nbytes) + self._n * _PY_ENTRY_OVERHEAD
            capacity = int(self._hnsw.get_max_elements())
            per_element = 4 * self.dim + self._M * 2 * 4 + _HNSW_ELEMENT_OVERHEAD
            return capacity * per_element + len(self._labels) * _PY_ENTRY_OVERHEAD

    # -- writes --------------------------------------------------------------------------

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Insert or replace ``ids[i]`` -> ``vectors[i]``; a repeated id in one call keeps the
        last vector.

        Raises:
            ValueError: shape mismatch, a zero or non-finite vector, or a non-string id.
        """
        if isinstance(ids, str | bytes):
            raise ValueError("ids must be a sequence of strings, not a single string")
        id_list = list(ids)
        if not id_list:
            return
        if not all(isinstance(i, str) for i in id_list):
            raise ValueError("every id must be a str")
        matrix = _normalised_rows(vectors, self.dim, "vectors")
        if matrix.shape[0] != len(id_list):
            raise ValueError(f"{len(id_list)} ids but {matrix.shape[0]} vectors")
        last = {id_: i for i, id_ in enumerate(id_list)}
        if len(last) != len(id_list):
            keep = sorted(last.values())
            id_list = [id_list[i] for i in keep]
            matrix = matrix[keep]
        with self._lock.write():
            if self._hnsw is None:
                new = sum(1 for i in id_list if i not in self._rows)
                if self._n + new > self._flat_limit:
                    self._to_hnsw(extra=new)
                else:
                    self._flat_upsert(id_list, matrix)
                    return
            self._hnsw_upsert(id_list, matrix)

    def remove(self, ids: Iterable[str]) -> None:
        """Delete ids; unknown ids are ignored (eviction may race with expiry)."""
        if isinstance(ids, str | bytes):
            raise ValueError("ids must be an iterable of strings, not a single string")
        with self._lock.write():
            if self._hnsw is None:
                for id_ in ids:
                    self._flat_remove(id_)
                return
            for id_ in ids:
                label = self._labels.pop(id_, None)
                if label is None:
                    continue
                del self._label_ids[label]
                self._hnsw.mark_deleted(label)
                self._tombstones += 1
            total = len(self._labels) + self._tombstones
            if total and self._tombstones / total > self._rebuild_ratio:
                self._rebuild()

    def _flat_upsert(self, id_list: list[str], matrix: Matrix) -> None:
        new = sum(1 for i in id_list if i not in self._rows)
        needed = self._n + new
        if needed > self._matrix.shape[0]:
            # Doubling keeps appends amortised O(dim); the limit caps the flat matrix anyway.
            capacity = max(needed, 2 * self._matrix.shape[0], 64)
            grown = np.empty((capacity, self.dim), dtype=np.float32)
            grown[: self._n] = self._matrix[: self._n]
            self._matrix = grown
        for id_, row_vector in zip(id_list, matrix, strict=True):
            row = self._rows.get(id_)
            if row is None:
                row = self._n
                self._n += 1
                self._rows[id_] = row
                self._row_ids.append(id_)
            self._matrix[row] = row_vector

    def _flat_remove(self, id_: str) -> None:
        row = self._rows.pop(id_, None)
        if row is None:
            return
        last = self._n - 1
        if row != last:
            # Swap-with-last keeps the live rows contiguous, so search stays one matvec.
            moved = self._row_ids[last]
            self._matrix[row] = self._matrix[last]
            self._row_ids[row] = moved
            self._rows[moved] = row
        self._row_ids.pop()
        self._n = last
        if self._matrix.shape[0] > 4 * max(self._n, 64):
            self._matrix = self._matrix[: max(2 * self._n, 64)].copy()

    def _new_hnsw(self, capacity: int) -> Any:
        index = _hnswlib().Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=capacity,
            M=self._M,
            ef_construction=self._ef_construction,
            allow_replace_deleted=True,
        )
        index.set_ef(self._ef)
        return index

    def _to_hnsw(self, extra: int) -> None:
        """Move the flat rows into a fresh graph with room for ``extra`` more."""
        n = self._n
        index = self._new_hnsw(_headroom(n + extra))
        if n:
            index.add_items(self._matrix[:n], np.arange(n, dtype=np.int64))
        self._hnsw = index
        self._labels = dict(zip(self._row_ids[:n], range(n), strict=True))
        self._label_ids = dict(enumerate(self._row_ids[:n]))
        self._next_label = n
        self._tombstones = 0
        self._matrix = np.empty((0, self.dim), dtype=np.float32)
        self._n = 0
        self._row_ids = []
        self._rows = {}

    def _hnsw_upsert(self, id_list: list[str], matrix: Matrix) -> None:
        existing = [i for i, id_ in enumerate(id_list) if id_ in self._labels]
        fresh = [i for i, id_ in enumerate(id_list) if id_ not in self._labels]
        if existing:
            # A live label is updated in place. It must not go through replace_deleted: with
            # a tombstone available hnswlib would put the label in that slot and leave the old
            # element live under the same label, a duplicate that search would return.
            labels = np.array([self._labels[id_list[i]] for i in existing], dtype=np.int64)
            self._hnsw.add_items(matrix[existing], labels)
        if not fresh:
            return
        reused = min(self._tombstones, len(fresh))
        needed = int(self._hnsw.get_current_count()) + len(fresh) - reused
        capacity = int(self._hnsw.get_max_elements())
        if needed > capacity:
            self._hnsw.resize_index(max(needed, 2 * capacity))
        labels = np.arange(self._next_label, self._next_label + len(fresh), dtype=np.int64)
        self._hnsw.add_items(matrix[fresh], labels, replace_deleted=True)
        for i, label in zip(fresh, labels.tolist(), strict=True):
            self._labels[id_list[i]] = label
            self._label_ids[label] = id_list[i]
        self._next_label += len(fresh)
        self._tombstones -= reused

    def _rebuild(self) -> None:
        """Replace the graph with one built from the live vectors only.

        Runs under the write lock, so searches wait for it; inserts reuse deleted slots, so
        it only fires when a partition has shrunk by ``rebuild_ratio``.
        """
        ids = list(self._labels)
        vectors: Matrix
        if ids:
            labels = [self._labels[i] for i in ids]
            vectors = np.asarray(self._hnsw.get_items(labels, return_type="numpy"), np.float32)
        else:
            vectors = np.empty((0, self.dim), dtype=np.float32)
        n = len(ids)
        self._labels, self._label_ids = {}, {}
        self._tombstones = 0
        if self._flat_limit and n <= self._flat_limit // 2:
            self._hnsw = None
            self._matrix = np.empty((0, self.dim), dtype=np.float32)
            self._n, self._row_ids, self._rows = 0, [], {}
            self._flat_upsert(ids, vectors)
            return
        index = self._new_hnsw(_headroom(n))
        if n:
            index.add_items(vectors, np.arange(n, dtype=np.int64))
        self._hnsw = index
        self._labels = dict(zip(ids, range(n), strict=True))
        self._label_ids = dict(enumerate(ids))
        self._next_label = n

    # -- search --------------------------------------------------------------------------

    def search(self, vector: npt.ArrayLike, k: int) -> list[tuple[str, float]]:
        """The ``k`` (or fewer) live ids most similar to ``vector``, best first, with their
        cosine similarity in [-1, 1].

        Raises:
            ValueError: wrong dimension, zero or non-finite vector, or ``k < 1``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        query = _normalised_rows(vector, self.dim, "vector")
        if query.shape[0] != 1:
            raise ValueError(f"search takes one vector, got {query.shape[0]}")
        with self._lock.read():
            if self._hnsw is None:
                return self._flat_search(query[0], k)
            found = self._hnsw_search(query, k)
        if found is not None:
            return found
        # Rare: hnswlib found fewer than k live elements (many tombstones on the beam's path).
        # Retrying needs a wider ef, and set_ef must not race with other queries.
        with self._lock.write():
            if self._hnsw is None:
                return self._flat_search(query[0], k)
            return self._hnsw_search_widened(query, k)

    def _flat_search(self, query: Matrix, k: int) -> list[tuple[str, float]]:
        n = self._n
        if not n:
            return []
        sims = self._matrix[:n] @ query
        k = min(k, n)
        if k < n:
            top = np.argpartition(-sims, k - 1)[:k]
            top = top[np.argsort(-sims[top], kind="stable")]
        else:
            top = np.argsort(-sims, kind="stable")
        row_ids = self._row_ids
        return [(row_ids[r], float(np.clip(sims[r], -1.0, 1.0))) for r in top.tolist()]

    def _hnsw_results(self, labels: Any, distances: Any) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for label, distance in zip(labels[0].tolist(), distances[0].tolist(), strict=True):
            id_ = self._label_ids.get(int(label))
            if id_ is not None:  # defensive: a label we no longer know is never returned
                out.append((id_, min(1.0, max(-1.0, 1.0 - float(distance)))))
        return out

    def _hnsw_search(self, query: Matrix, k: int) -> list[tuple[str, float]] | None:
        k = min(k, len(self._labels))
        if not k:
            return []
        try:
            labels, distances = self._hnsw.knn_query(query, k=k)
        except RuntimeError:
            return None
        return self._hnsw_results(labels, distances)

    def _hnsw_search_widened(self, query: Matrix, k: int) -> list[tuple[str, float]]:
        """Retry under the write lock with a wider beam, then with smaller k; a cache lookup
        that returns fewer neighbours is a smaller hit chance, an exception would be an
        outage."""
        k = min(k, len(self._labels))
        if not k:
            return []
        if len(self._labels) <= _EXACT_FALLBACK_LIMIT:
            # Few live elements among many tombstones (the usual cause): scanning them exactly
            # is cheap and, unlike a wider beam, cannot come back short.
            return self._hnsw_exact(query[0], k)
        ef = max(self._ef, 4 * k, 256)
        try:
            while k >= 1:
                self._hnsw.set_ef(ef)
                try:
                    labels, distances = self._hnsw.knn_query(query, k=k)
                except RuntimeError:
                    k //= 2
                    ef *= 2
                    continue
                return self._hnsw_results(labels, distances)
            return []
        finally:
            self._hnsw.set_ef(self._ef)

    def _hnsw_exact(self, query: Matrix, k: int) -> list[tuple[str, float]]:
        ids = list(self._labels)
        labels = [self._labels[i] for i in ids]
        vectors = np.asarray(self._hnsw.get_items(labels, return_type="numpy"), np.float32)
        sims = vectors @ query
        top = np.argsort(-sims, kind="stable")[:k]
        return [(ids[r], float(np.clip(sims[r], -1.0, 1.0))) for r in top.tolist()]

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index to ``directory`` (created if needed), atomically.

        The data file gets a fresh name and the JSON sidecar that names it is swapped in with
        ``os.replace`` last, so a crash at any point leaves the previous save loadable. Only
        one process should save into a given directory at a time.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        with self._save_lock:
            token = uuid.uuid4().hex
            with self._lock.read():
                meta: dict[str, Any] = {
                    "format": _FORMAT,
                    "version": _FORMAT_VERSION,
                    "kind": self.kind,
                    "dim": self.dim,
                    "params": {
                        "flat_limit": self._flat_limit,
                        "M": self._M,
                        "ef_construction": self._ef_construction,
                        "ef": self._ef,
                        "rebuild_ratio": self._rebuild_ratio,
                    },
                }
                if self._hnsw is None:
                    data = folder / f"{_DATA_PREFIX}{token}.npy"
                    with data.open("wb") as handle:
                        np.save(handle, self._matrix[: self._n], allow_pickle=False)
                    meta["ids"] = self._row_ids[: self._n]
                else:
                    data = folder / f"{_DATA_PREFIX}{token}.hnsw"
                    self._hnsw.save_index(os.fspath(data))
                    meta["labels"] = list(self._labels.values())
                    meta["ids"] = list(self._labels)
                    meta["next_label"] = self._next_label
                    meta["tombstones"] = self._tombstones
                    meta["capacity"] = int(self._hnsw.get_max_elements())
            with data.open("rb+") as handle:
                os.fsync(handle.fileno())
            meta["data_file"] = data.name
            meta["sha256"] = _sha256(data)
            tmp_meta = folder / f".{_META_FILE}.{token}.tmp"
            with tmp_meta.open("w", encoding="utf-8") as handle:
                json.dump(meta, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_meta, folder / _META_FILE)
            _fsync_dir(folder)
            # Leftovers of this save's predecessors, including ones a crash interrupted.
            for stale in [*folder.glob(f"{_DATA_PREFIX}*"), *folder.glob(f".{_META_FILE}.*.tmp")]:
                if stale.name != data.name:
                    with contextlib.suppress(OSError):
                        stale.unlink()

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> VectorIndex:
        """Read an index written by :meth:`save`.

        Raises:
            ValueError: the directory has no index, or its files are corrupt or inconsistent.
        """
        folder = Path(directory)
        meta_path = folder / _META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ValueError(f"no saved vector index in {folder} ({_META_FILE} missing)") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"corrupt vector index metadata {meta_path}: {exc}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"corrupt vector index metadata {meta_path}: not an object")
        try:
            return cls._from_meta(folder, meta)
        except KeyError as exc:
            raise ValueError(f"corrupt vector index metadata {meta_path}: no {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot load the vector index in {folder}: {exc}") from exc

    @classmethod
    def _from_meta(cls, folder: Path, meta: dict[str, Any]) -> VectorIndex:
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{folder / _META_FILE} is not a version-{_FORMAT_VERSION} vector index "
                f"(format={meta.get('format')!r}, version={meta.get('version')!r})"
            )
        params = meta["params"]
        index = cls(
            meta["dim"],
            flat_limit=params["flat_limit"],
            M=params["M"],
            ef_construction=params["ef_construction"],
            ef=params["ef"],
            rebuild_ratio=params["rebuild_ratio"],
        )
        data_name = meta["data_file"]
        if not isinstance(data_name, str) or Path(data_name).name != data_name:
            raise ValueError(f"bad data file name {data_name!r}")
        data = folder / data_name
        try:
            digest = _sha256(data)
        except OSError as exc:
            raise ValueError(f"vector index data file {data} is missing or unreadable") from exc
        if digest != meta["sha256"]:
            raise ValueError(f"vector index data file {data} is corrupt (checksum mismatch)")
        ids = meta["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of strings")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids")
        kind = meta["kind"]
        if kind == "flat":
            try:
                matrix = np.load(data, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ValueError(f"vector index data file {data} is corrupt: {exc}") from exc
            if matrix.dtype != np.float32 or matrix.shape != (len(ids), index.dim):
                raise ValueError(f"{data} has shape {matrix.shape}, expected ({len(ids)}, dim)")
            index._matrix = np.ascontiguousarray(matrix)
            index._n = len(ids)
            index._row_ids = list(ids)
            index._rows = {id_: row for row, id_ in enumerate(ids)}
            return index
        if kind != "hnsw":
            raise ValueError(f"unknown index kind {kind!r}")
        labels = meta["labels"]
        if len(labels) != len(ids) or not all(
            isinstance(label, int) and 0 <= label < meta["next_label"] for label in labels
        ):
            raise ValueError("labels do not match ids")
        hnsw = _hnswlib().Index(space="cosine", dim=index.dim)
        try:
            hnsw.load_index(
                os.fspath(data), max_elements=int(meta["capacity"]), allow_replace_deleted=True
            )
        except RuntimeError as exc:
            raise ValueError(f"vector index data file {data} is corrupt: {exc}") from exc
        if int(hnsw.get_current_count()) != len(ids) + int(meta["tombstones"]):
            raise ValueError(f"{data} does not match its metadata (element count)")
        # ef is not part of hnswlib's file format.
        hnsw.set_ef(index._ef)
        index._hnsw = hnsw
        index._labels = dict(zip(ids, labels, strict=True))
        index._label_ids = dict(zip(labels, ids, strict=True))
        index._next_label = int(meta["next_label"])
        index._tombstones = int(meta["tombstones"])
        return index
