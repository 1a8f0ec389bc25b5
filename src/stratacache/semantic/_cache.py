"""SemanticCache: serve a stored answer to a question asked in other words, only when safe.

Layout of what is stored (all in the exact tiers, under the cache's ``semantic`` namespace, so
every process that shares the tiers shares the semantic cache):

* ``e:<entry id>``: one entry: the question, its scope partition, the answer and the
  question's embedding (float32). The entry id hashes the partition and the question, so
  storing the same question again replaces the entry everywhere.
* ``q:<embedder>:<text digest>``: a stored embedding of a looked-up text: a repeated question
  costs a cache read, not an embedding call.
* ``j:<n>``: the journal, one slot per store, claimed with an atomic set-if-absent, so that
  every process learns about new entries by reading the next few slots in one batched read
  (never by scanning Redis). ``jh`` hints where the journal ends, for a new process's warm-up.

Each process keeps one :class:`~stratacache.semantic._index.VectorIndex` per partition in
memory. A partition is the digest of ``scope``: everything that must match exactly (model,
answer-changing parameters, system prompt, earlier turns, tenant). Only the last user turn is
compared semantically, and only inside its partition.

The decision (see ``_decide`` and docs/semantic.md) is lexical first: an embedding finds the
candidates, the guards in :mod:`._guards` decide. Wrong answers cost more than misses.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import inspect
import math
import os
import struct
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stratacache.errors import ConfigurationError
from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.keys import canonical_json
from stratacache.semantic._guards import hard_conflicts, lexically_equivalent, signature

if TYPE_CHECKING:
    import numpy as np

    from stratacache.semantic._embedders import Embedder
    from stratacache.semantic._index import VectorIndex
    from stratacache.tiered import TieredCache

__all__ = ["Decision", "SemanticCache", "Verifier"]

#: ``verifier(new_question, cached_question, cached_answer) -> bool`` (or an awaitable bool).
Verifier = Callable[[str, str, Any], "bool | Awaitable[bool]"]

#: Cosine below which two lexically equivalent questions are still refused: the equivalence
#: rule is the real test; the floor catches what it cannot see (an embedder that reads the
#: two texts differently). 0.90 keeps every equivalent pair of the calibration half of
#: fow-cache (lowest 0.92) and costs nothing on the held-out half; docs/semantic.md.
DEFAULT_FLOOR = 0.90
#: Candidates below this cosine are not even shown to a verifier or a learned threshold.
RELAXED_FLOOR = 0.80
#: Confidence of the upper bound on the error rate that a learned threshold must satisfy.
_Z = 1.96
#: Width of the similarity band a learned threshold must be right in on its own.
_BAND = 0.02
_MAGIC = b"SCSEM1"
_JOURNAL_BATCH = 64


@dataclass(slots=True)
class Decision:
    """How a lookup ended, for stats and for feedback."""

    hit: bool
    guard: str  # exact | lexical | verifier | learned | threshold | <why it was refused> | empty
    similarity: float | None = None
    entry: str | None = None


@dataclass
class _Entry:
    prompt: str
    partition: str
    value: Any
    vector: np.ndarray


@dataclass
class _Partition:
    index: VectorIndex
    prompts: dict[str, str] = field(default_factory=dict)
    #: per entry: similarities at which a served answer was reported wrong
    wrong_at: dict[str, float] = field(default_factory=dict)


# -- plan operations: one implementation of the logic, driven sync or async ------------------


@dataclass(slots=True)
class _Cache:
    method: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class _Embed:
    texts: list[str]


@dataclass(slots=True)
class _Verify:
    args: tuple[str, str, Any]


_Op = _Cache | _Embed | _Verify
Plan = Generator[_Op, Any, Any]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _pack(entry: _Entry) -> bytes:
    import numpy as np

    is_bytes = isinstance(entry.value, bytes | bytearray)
    head = orjson.dumps(
        {
            "p": entry.prompt,
            "s": entry.partition,
            "b": is_bytes,
            "v": base64.b64encode(entry.value).decode() if is_bytes else entry.value,
        }
    )
    vector = np.ascontiguousarray(entry.vector, dtype=np.float32)
    return _MAGIC + struct.pack(">I", len(head)) + head + vector.tobytes()


def _unpack(data: Any) -> _Entry | None:
    """The entry in ``data``, or None for anything that is not one (foreign, truncated)."""
    import numpy as np

    if not isinstance(data, bytes) or not data.startswith(_MAGIC) or len(data) < 10:
        return None
    try:
        (size,) = struct.unpack(">I", data[6:10])
        head = orjson.loads(data[10 : 10 + size])
        raw = data[10 + size :]
        if not raw or len(raw) % 4:
            return None
        vector = np.frombuffer(raw, dtype=np.float32)
        value = base64.b64decode(head["v"]) if head["b"] else head["v"]
        prompt, partition = head["p"], head["s"]
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(prompt, str) or not isinstance(partition, str):
        return None
    if not np.isfinite(vector).all():
        return None
    return _Entry(prompt, partition, value, vector)


def _wilson_upper(wrong: int, n: int) -> float:
    if n == 0:
        return 1.0
    p = wrong / n
    denom = 1 + _Z * _Z / n
    centre = p + _Z * _Z / (2 * n)
    spread = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n))
    return (centre + spread) / denom


class _Calibration:
    """A cosine threshold learned online from verdicts on relaxed candidates.

    Verdicts come from the verifier, from :meth:`SemanticCache.feedback`, and from answers
    stored after a relaxed candidate was refused (the fresh answer equal to the cached one
    means the candidate would have been right). The threshold is the lowest cosine at which
    the 95% upper bound of the error rate among verdicts at or above it is within the error
    budget: with no wrong verdict that takes ~190 verdicts for a 2% budget, so it starts
    closed and opens only on evidence.
    """

    def __init__(self, budget: float, size: int = 20_000) -> None:
        self.budget = budget
        self.verdicts: deque[tuple[float, bool]] = deque(maxlen=size)
        self.threshold: float | None = None
        self._lock = threading.Lock()

    def add(self, similarity: float, correct: bool) -> None:
        with self._lock:
            self.verdicts.append((similarity, correct))
            ranked = sorted(self.verdicts, key=lambda v: -v[0])
        threshold = None
        wrong = 0
        lo = band_wrong = 0  # ranked[lo:n] is the band [sim, sim + _BAND)
        for n, (sim, ok) in enumerate(ranked, 1):
            wrong += not ok
            band_wrong += not ok
            while ranked[lo][0] >= sim + _BAND:
                band_wrong -= not ranked[lo][1]
                lo += 1
            # A threshold serves every verdict at or above it: judge it only once all the
            # verdicts tied at this similarity are counted.
            if n < len(ranked) and ranked[n][0] >= sim:
                continue
            # The error bound over everything served, and the band just above the threshold
            # on its own: plentiful right verdicts higher up must not open a wrong band.
            if _wilson_upper(wrong, n) <= self.budget and band_wrong <= self.budget * (n - lo):
                threshold = sim
        self.threshold = threshold


class SemanticCache:
    """Serve stored answers to questions that ask the same thing in other words.

    :param embedder: a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a litellm
        embedding model name, a callable ``list[str] -> (n, d) array``, or an
        :class:`~stratacache.semantic.Embedder`; default :class:`LocalEmbedder` (offline).
    :param cache: the exact tiers; entries, embeddings and the journal live there, under the
        ``semantic`` namespace (``namespace=`` overrides). Default: the shared default cache.
    :param threshold: None (default) for the safe decision procedure; a cosine in (0, 1] to
        also serve candidates at or above it whose only differences are content words (the
        hard guards for numbers, negation, antonyms, names and roles still apply).
    :param error_budget: the share of wrong hits a learned threshold may risk (95% upper
        bound); learning needs verdicts (``verifier``, :meth:`feedback`, stored answers).
    :param verifier: optional ``(new, cached_question, cached_answer) -> bool`` (or async)
        asked about candidates that pass the hard guards but not the equivalence rule: a
        cross-encoder, the LLM itself, or any callable. Its verdicts also calibrate.
    :param ttl: entry lifetime (default: the cache's).
    :param sync_interval: seconds between reads of the journal (other processes' stores).
    :param index_dir: where :meth:`save` (also run by :meth:`close` and at exit) keeps the
        local indexes so that a restart reads only the journal written since. Default: next
        to the cache's disk tier (``<dir>/semantic-index/<namespace>``); none without one.
    """

    def __init__(
        self,
        embedder: Any = None,
        cache: TieredCache | None = None,
        threshold: float | None = None,
        error_budget: float = 0.02,
        *,
        verifier: Verifier | None = None,
        ttl: float | None = None,
        namespace: str | None = None,
        sync_interval: float = 1.0,
        candidates: int = 4,
        flat_limit: int = 20_000,
        index_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from stratacache.semantic._embedders import LocalEmbedder, as_embedder

        if threshold is not None and not (
            isinstance(threshold, int | float) and 0 < threshold <= 1
        ):
            raise ConfigurationError(f"threshold must be None or in (0, 1], got {threshold!r}")
        if not (isinstance(error_budget, int | float) and 0 < error_budget < 1):
            raise ConfigurationError(f"error_budget must be in (0, 1), got {error_budget!r}")
        if verifier is not None and not callable(verifier):
            raise ConfigurationError("verifier must be callable(new, cached_question, answer)")
        if not (isinstance(candidates, int) and 1 <= candidates <= 64):
            raise ConfigurationError("candidates must be an int in [1, 64]")
        if not (isinstance(sync_interval, int | float) and sync_interval >= 0):
            raise ConfigurationError("sync_interval must be >= 0 seconds")
        self.embedder: Embedder = as_embedder(LocalEmbedder() if embedder is None else embedder)
        base = cache if cache is not None else default_cache()
        self.cache = kind_namespace(base, "semantic", namespace)
        self.threshold = threshold
        self.error_budget = float(error_budget)
        self.verifier = verifier
        self.ttl = ttl
        self.sync_interval = float(sync_interval)
        self.k = candidates
        self.flat_limit = flat_limit
        self._parts: dict[str, _Partition] = {}
        self._lock = threading.RLock()
        #: One learned threshold per tenant (the scope's ``"tenant"`` entry): verdicts are
        #: evidence about one tenant's traffic, and a tenant whose questions all get the same
        #: answer ("reply OK") could otherwise teach the cache to serve looser matches to
        #: everybody else.
        self._calibrations: dict[str, _Calibration] = {}
        self._next_slot: int | None = None  # None: warm-up pending
        self._synced_at = -math.inf
        self._recent: OrderedDict[tuple[str, str], Decision] = OrderedDict()
        self._relaxed: OrderedDict[tuple[str, str], tuple[str, float, Any]] = OrderedDict()
        self._stats = AdapterStats("semantic")
        self._similarity: deque[float] = deque(maxlen=4096)
        self._embedder_id = _digest(self.embedder.identity)
        self.index_dir = Path(index_dir) if index_dir is not None else self._default_index_dir()
        self._epoch: str | None = None
        if self.index_dir is not None:
            _SAVE_AT_EXIT.add(self)

    def _default_index_dir(self) -> Path | None:
        from stratacache.tiers import DiskTier

        for tier in self.cache.tiers:
            if isinstance(tier, DiskTier):
                return tier.directory / "semantic-index" / self.cache.namespace
        return None

    # -- keys --------------------------------------------------------------------------------

    def partition(self, scope: Any) -> str:
        """The partition of ``scope`` (any JSON-compatible value, a pydantic model or a
        dataclass): equal only for scopes that must share answers. The embedder is part of
        it: vectors of two models are not comparable, even when their dimensions agree."""
        return _digest(self._embedder_id + "\x00" + canonical_json(scope))

    def _calibration(self, scope: Any) -> _Calibration:
        tenant = scope.get("tenant") if isinstance(scope, Mapping) else None
        key = canonical_json(tenant)
        with self._lock:
            found = self._calibrations.get(key)
            if found is None:
                found = self._calibrations[key] = _Calibration(self.error_budget)
            return found

    @staticmethod
    def _entry_id(partition: str, prompt: str) -> str:
        return _digest(partition + "\x00" + prompt.strip())

    def _qkey(self, text: str) -> str:
        return f"q:{self._embedder_id}:{_digest(text)}"

    # -- plans -------------------------------------------------------------------------------

    def _embed_plan(self, text: str) -> Plan:
        """The embedding of ``text``: from the exact tiers when stored, else the embedder."""
        import numpy as np

        key = self._qkey(text)
        got = yield _Cache("get", (key,))
        if isinstance(got, bytes) and got and len(got) % 4 == 0:
            vec = np.frombuffer(got, dtype=np.float32)
            if np.isfinite(vec).all():
                self._stats.count("embedding_hits")
                return vec
        vectors = yield _Embed([text])
        self._stats.count("embedding_calls")
        vec = np.ascontiguousarray(vectors[0], dtype=np.float32)
        yield _Cache("set", (key, vec.tobytes(), self.ttl))
        return vec

    def _part(self, partition: str, dim: int) -> _Partition:
        from stratacache.semantic._index import VectorIndex

        part = self._parts.get(partition)
        if part is None or part.index.dim != dim:
            part = _Partition(VectorIndex(dim, flat_limit=self.flat_limit))
            self._parts[partition] = part
        return part

    def _absorb(self, entries: Mapping[str, Any]) -> None:
        """Put stored entries (by entry key) into the local partitions, one bulk upsert per
        partition (a warm-up of many entries builds each graph in one call)."""
        import numpy as np

        batches: dict[tuple[str, int], list[tuple[str, _Entry]]] = {}
        for key, data in entries.items():
            entry = _unpack(data)
            if entry is not None:
                batches.setdefault((entry.partition, entry.vector.shape[0]), []).append(
                    (key[2:], entry)
                )
        with self._lock:
            for (partition, dim), items in batches.items():
                part = self._part(partition, dim)
                try:
                    part.index.upsert(
                        [eid for eid, _ in items], np.vstack([e.vector for _, e in items])
                    )
                except ValueError:  # one unindexable (zero) vector: index the others alone
                    kept = []
                    for eid, entry in items:
                        with contextlib.suppress(ValueError):
                            part.index.upsert([eid], entry.vector.reshape(1, -1))
                            kept.append((eid, entry))
                    items = kept
                for eid, entry in items:
                    part.prompts[eid] = entry.prompt

    def _sync_plan(self, force: bool = False) -> Plan:
        """Read journal slots written since the last sync (by any process) and index them.

        A new process first walks back from the head hint to the oldest live slot, then reads
        forward in batches: a bulk warm-up of everything still in the tiers."""
        now = time.monotonic()
        if not force and now - self._synced_at < self.sync_interval:
            return None
        self._synced_at = now
        start = self._next_slot
        if start is None:
            # The journal's epoch changes when the namespace is cleared: a saved index from
            # another epoch describes entries that are gone.
            epoch = yield _Cache("get", ("je",))
            if not isinstance(epoch, str):
                candidate = uuid.uuid4().hex
                won = yield _Cache("add", ("je", candidate, None))
                epoch = candidate if won else (yield _Cache("get", ("je",)))
            self._epoch = epoch if isinstance(epoch, str) else None
            start = self._load_saved()
        if start is None:
            head = yield _Cache("get", ("jh",))
            top = int(head) if isinstance(head, int) and head >= 0 else 0
            start = top
            while start > 0:
                lo = max(0, start - _JOURNAL_BATCH)
                got = yield _Cache("get_many", ([f"j:{n}" for n in range(lo, start)],))
                if not got:
                    break
                start = lo
        slot = start
        while True:
            names = [f"j:{n}" for n in range(slot, slot + _JOURNAL_BATCH)]
            got = yield _Cache("get_many", (names,))
            if not got:
                break
            found = sorted(int(name[2:]) for name in got)
            eids = [got[f"j:{n}"] for n in found]
            wanted = [f"e:{e}" for e in eids if isinstance(e, str)]
            entries = yield _Cache("get_many", (wanted,))
            self._absorb(entries)
            end = slot + _JOURNAL_BATCH
            slot = found[-1] + 1
            if slot < end:  # the batch was not full: that was the end of the journal
                break
        self._next_slot = slot
        return None

    def _load_saved(self) -> int | None:
        """Partitions saved by an earlier process of this epoch; the journal slot to go on
        from, or None when there is nothing usable (then the warm-up reads the journal)."""
        from stratacache.semantic._index import VectorIndex

        folder = self.index_dir
        if folder is None or self._epoch is None:
            return None
        try:
            state = orjson.loads((folder / "state.json").read_bytes())
            if state.get("epoch") != self._epoch or state.get("embedder") != self._embedder_id:
                return None
            parts = {}
            for pid, prompts in state["partitions"].items():
                index = VectorIndex.load(folder / pid)
                if not isinstance(prompts, dict) or set(prompts) != set(index.ids()):
                    return None
                parts[pid] = _Partition(index, dict(prompts))
            slot = int(state["slot"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._stats.problem("index_load", "saved index in %s unusable: %s", folder, exc)
            return None
        with self._lock:
            self._parts.update(parts)
        self._stats.count("index_loaded")
        return slot

    def save(self) -> None:
        """Write the local indexes and the journal position to ``index_dir`` (atomically per
        partition; the state file last), so the next process starts from them."""
        folder = self.index_dir
        if folder is None or self._epoch is None or self._next_slot is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock:
                parts = dict(self._parts)
                slot = self._next_slot
                prompts = {pid: dict(part.prompts) for pid, part in parts.items()}
            for pid, part in parts.items():
                part.index.save(folder / pid)
            state = {
                "epoch": self._epoch,
                "embedder": self._embedder_id,
                "slot": slot,
                "partitions": prompts,
            }
            tmp = folder / f".state.{uuid.uuid4().hex}.tmp"
            tmp.write_bytes(orjson.dumps(state))
            os.replace(tmp, folder / "state.json")
        except (OSError, ValueError) as exc:
            self._stats.problem("index_save", "could not save the index in %s: %s", folder, exc)

    def close(self) -> None:
        """Save the local indexes (when there is an ``index_dir``); the tiers stay open (they
        belong to the cache that was passed in)."""
        self.save()
        _SAVE_AT_EXIT.discard(self)

    def _append_plan(self, eid: str) -> Plan:
        """Claim the next free journal slot for ``eid``."""
        slot = self._next_slot or 0
        head = yield _Cache("get", ("jh",))
        if isinstance(head, int) and head > slot:
            slot = head
        for _ in range(4 * _JOURNAL_BATCH):
            won = yield _Cache("add", (f"j:{slot}", eid, self.ttl))
            if won:
                yield _Cache("set", ("jh", slot + 1, None))
                return True
            slot += 1
        self._stats.problem("journal_full", "could not claim a journal slot near %s", slot)
        return False

    def _lookup_plan(self, prompt: str, scope: Any) -> Plan:
        self._stats.count("lookups")
        partition = self.partition(scope)
        recent_key = (partition, prompt)
        eid = self._entry_id(partition, prompt)
        exact = yield _Cache("get", (f"e:{eid}",))
        entry = _unpack(exact)
        if entry is not None and entry.prompt.strip() == prompt.strip():
            return self._finish(recent_key, Decision(True, "exact", 1.0, eid), entry.value)
        yield from self._sync_plan()
        part = self._parts.get(partition)
        if part is None or not len(part.index):
            return self._finish(recent_key, Decision(False, "empty"), None)
        vector = yield from self._embed_plan(prompt)
        if vector.shape[0] != part.index.dim:
            return self._finish(recent_key, Decision(False, "dimension"), None)
        # The index has its own reader-writer lock: lookups search in parallel.
        found = part.index.search(vector, self.k)
        if found:
            self._similarity.append(found[0][1])
        query = signature(prompt)
        refused = Decision(False, "no_candidate")
        for cand, sim in found:
            cached_prompt = part.prompts.get(cand)
            if cached_prompt is None:
                continue
            verdict = self._judge(query, cached_prompt, sim, part.wrong_at.get(cand))
            if verdict == "relaxed":
                data = yield _Cache("get", (f"e:{cand}",))
                stored = _unpack(data)
                if stored is None:
                    self._forget(partition, cand)
                    continue
                if self.verifier is not None:
                    ok = yield _Verify((prompt, stored.prompt, stored.value))
                    self._calibration(scope).add(sim, bool(ok))
                    if ok:
                        return self._finish(
                            recent_key, Decision(True, "verifier", sim, cand), stored.value
                        )
                    refused = Decision(False, "verifier", sim, cand)
                    continue
                learned = self._calibration(scope).threshold
                if self.threshold is not None and sim >= self.threshold:
                    return self._finish(
                        recent_key, Decision(True, "threshold", sim, cand), stored.value
                    )
                if learned is not None and sim >= learned:
                    return self._finish(
                        recent_key, Decision(True, "learned", sim, cand), stored.value
                    )
                self._remember_relaxed(recent_key, cand, sim, stored.value)
                refused = Decision(False, "content_words", sim, cand)
                continue
            if verdict != "hit":
                if refused.guard == "no_candidate":
                    refused = Decision(False, verdict, sim, cand)
                continue
            data = yield _Cache("get", (f"e:{cand}",))
            stored = _unpack(data)
            if stored is None:
                self._forget(partition, cand)
                continue
            return self._finish(recent_key, Decision(True, "lexical", sim, cand), stored.value)
        return self._finish(recent_key, refused, None)

    def _judge(self, query: Any, cached_prompt: str, sim: float, wrong_at: float | None) -> str:
        """``hit``, ``relaxed`` (only a verifier or threshold may serve it), or the guard
        that refused the candidate."""
        if wrong_at is not None and sim <= wrong_at:
            return "reported_wrong"
        cached = signature(cached_prompt)
        if sim >= DEFAULT_FLOOR and lexically_equivalent(query, cached):
            return "hit"
        floor = RELAXED_FLOOR if self.threshold is None else min(RELAXED_FLOOR, self.threshold)
        if sim < floor:
            return "similarity"
        conflicts = hard_conflicts(query, cached)
        if conflicts:
            return conflicts[0]
        return "relaxed"

    def _remember_relaxed(self, key: tuple[str, str], eid: str, sim: float, value: Any) -> None:
        with self._lock:
            self._relaxed[key] = (eid, sim, value)
            while len(self._relaxed) > 4096:
                self._relaxed.popitem(last=False)

    def _forget(self, partition: str, eid: str) -> None:
        with self._lock:
            part = self._parts.get(partition)
            if part is not None:
                part.index.remove([eid])
                part.prompts.pop(eid, None)
                part.wrong_at.pop(eid, None)

    def _finish(self, key: tuple[str, str], decision: Decision, value: Any) -> Any:
        self._stats.count("hits" if decision.hit else "misses")
        self._stats.count(f"{'hit' if decision.hit else 'refused'}:{decision.guard}")
        with self._lock:
            self._recent[key] = decision
            while len(self._recent) > 4096:
                self._recent.popitem(last=False)
        return value if decision.hit else None

    def _store_plan(self, prompt: str, value: Any, scope: Any) -> Plan:
        if value is None:
            return None
        partition = self.partition(scope)
        key = (partition, prompt)
        with self._lock:
            pending = self._relaxed.pop(key, None)
        if pending is not None:
            # The fresh answer says whether the refused candidate would have been right.
            self._calibration(scope).add(pending[1], _same_answer(pending[2], value))
        if self._next_slot is None:  # first use: warm up (and learn the journal's epoch)
            yield from self._sync_plan(force=True)
        vector = yield from self._embed_plan(prompt)
        eid = self._entry_id(partition, prompt)
        data = _pack(_Entry(prompt, partition, value, vector))
        yield _Cache("set", (f"e:{eid}", data, self.ttl))
        self._absorb({f"e:{eid}": data})
        yield from self._append_plan(eid)
        self._stats.count("stores")
        return None

    # -- drivers -----------------------------------------------------------------------------

    def _run(self, plan: Plan) -> Any:
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, _Cache):
                        result = getattr(self.cache, step.method)(*step.args)
                    elif isinstance(step, _Embed):
                        result = self.embedder.embed(step.texts)
                    else:
                        assert self.verifier is not None
                        result = self.verifier(*step.args)
                        if inspect.isawaitable(result):
                            if inspect.iscoroutine(result):
                                result.close()
                            raise ConfigurationError(
                                "an async verifier needs the async API (alookup)"
                            )
                except Exception as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(result)
        except StopIteration as stop:
            return stop.value

    async def _arun(self, plan: Plan) -> Any:
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, _Cache):
                        result = await getattr(self.cache, "a" + step.method)(*step.args)
                    elif isinstance(step, _Embed):
                        result = await self.embedder.aembed(step.texts)
                    else:
                        assert self.verifier is not None
                        result = self.verifier(*step.args)
                        if inspect.isawaitable(result):
                            result = await result
                except Exception as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(result)
        except StopIteration as stop:
            return stop.value

    def _guarded(self, what: str, run: Callable[[], Any]) -> Any:
        try:
            return run()
        except ConfigurationError:
            raise
        except Exception as exc:  # an embedder, verifier, tier or decoding failure is a miss
            self._stats.problem(f"{what}_error", "%s failed: %r", what, exc)
        return None

    async def _aguarded(self, what: str, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except ConfigurationError:
            raise
        except Exception as exc:
            self._stats.problem(f"{what}_error", "%s failed: %r", what, exc)
        return None

    # -- public API --------------------------------------------------------------------------

    def lookup(self, prompt: str, scope: Any = None) -> Any:
        """The answer stored for ``prompt`` or for a question judged to ask the same thing
        within ``scope``; None on a miss (a failing embedder or tier is a miss)."""
        _check_prompt(prompt)
        return self._guarded("lookup", lambda: self._run(self._lookup_plan(prompt, scope)))

    def store(self, prompt: str, value: Any, scope: Any = None) -> None:
        """Store ``value`` (bytes or JSON-compatible; None is not stored) as the answer to
        ``prompt`` within ``scope``."""
        _check_prompt(prompt)
        self._guarded("store", lambda: self._run(self._store_plan(prompt, value, scope)))

    async def alookup(self, prompt: str, scope: Any = None) -> Any:
        _check_prompt(prompt)
        return await self._aguarded("lookup", self._arun(self._lookup_plan(prompt, scope)))

    async def astore(self, prompt: str, value: Any, scope: Any = None) -> None:
        _check_prompt(prompt)
        await self._aguarded("store", self._arun(self._store_plan(prompt, value, scope)))

    def last_decision(self, prompt: str, scope: Any = None) -> Decision | None:
        """How the latest lookup of ``prompt`` in ``scope`` by this process was decided."""
        return self._recent.get((self.partition(scope), prompt))

    def feedback(self, prompt: str, correct: bool, scope: Any = None) -> None:
        """Report whether the answer the latest lookup of ``prompt`` served was right.

        A wrong semantic hit stops that entry from serving at that similarity or lower (in
        this process) and counts against the learned threshold; a right one counts for it.
        """
        partition = self.partition(scope)
        decision = self._recent.get((partition, prompt))
        if decision is None or not decision.hit or decision.guard == "exact":
            return
        assert decision.similarity is not None and decision.entry is not None
        self._stats.count("feedback_right" if correct else "feedback_wrong")
        self._calibration(scope).add(decision.similarity, bool(correct))
        if not correct:
            with self._lock:
                part = self._parts.get(partition)
                if part is not None:
                    prior = part.wrong_at.get(decision.entry, -1.0)
                    part.wrong_at[decision.entry] = max(prior, decision.similarity)

    def refresh(self) -> None:
        """Read other processes' new entries now instead of at the next interval."""
        self._guarded("sync", lambda: self._run(self._sync_plan(force=True)))

    async def arefresh(self) -> None:
        await self._aguarded("sync", self._arun(self._sync_plan(force=True)))

    def stats(self) -> dict[str, Any]:
        """Lookups, hits and misses by the guard that decided them, embedding calls saved,
        similarity percentiles of best candidates, partitions and learned threshold."""
        sims = sorted(self._similarity)

        def pct(q: float) -> float | None:
            return round(sims[min(len(sims) - 1, int(q * len(sims)))], 4) if sims else None

        with self._lock:
            parts = list(self._parts.values())
            calibrations = list(self._calibrations.values())
        main = max(calibrations, key=lambda c: len(c.verdicts), default=None)
        return {
            **self._stats.snapshot(),
            "entries": sum(len(p.index) for p in parts),
            "partitions": len(parts),
            "similarity_p50": pct(0.5),
            "similarity_p90": pct(0.9),
            # the tenant with the most verdicts (the only one in a single-tenant app); every
            # tenant's under "learned_thresholds"
            "learned_threshold": main.threshold if main is not None else None,
            "verdicts": sum(len(c.verdicts) for c in calibrations),
            "learned_thresholds": {
                tenant: c.threshold for tenant, c in self._calibrations.items() if c.verdicts
            },
            "error_budget": self.error_budget,
        }

    def clear(self) -> None:
        """Drop every semantic entry (all processes: the namespace is cleared)."""
        self.cache.clear()
        self._forget_all()

    async def aclear(self) -> None:
        await self.cache.aclear()
        self._forget_all()

    def _forget_all(self) -> None:
        with self._lock:
            self._parts.clear()
            self._next_slot = None
            self._epoch = None
            self._recent.clear()
            self._relaxed.clear()


_SAVE_AT_EXIT: weakref.WeakSet[SemanticCache] = weakref.WeakSet()


@atexit.register
def _save_all() -> None:
    for sem in list(_SAVE_AT_EXIT):
        sem.save()


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")


def _same_answer(a: Any, b: Any) -> bool:
    """vCache's string comparison: equal after trimming, case and closing punctuation."""
    if isinstance(a, str) and isinstance(b, str):
        norm = str.maketrans("", "", "\"'`()[]{}")
        return a.strip().rstrip(".").lower().translate(norm) == b.strip().rstrip(
            "."
        ).lower().translate(norm)
    return bool(a == b)
