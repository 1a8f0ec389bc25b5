"""Side-by-side figures: stratacache's integrations against the frameworks' own caches.

Used by ``stratacache bench`` (:func:`run_peers`, :func:`render_peers`) and by
``benchmarks/bench_langchain.py`` / ``benchmarks/bench_litellm.py`` (the measuring helpers).
Imported lazily by the CLI: never on ``import stratacache``. Every framework is imported only
here, inside the functions, so a framework that is not installed becomes a skipped row.

Every cache lives in a temporary directory removed at the end: the configured cache of the
user is never read nor written. Each scenario runs the real framework call (``model.invoke``,
``embed_documents``, ``litellm.completion``) on a hit, and records what each side answered so
that a cache that silently missed (and called the model) shows up as a different answer.

Rows are measured in interleaved rounds: on a small shared VM, timings drift from minute to
minute, and measuring each cache in its own time window would mostly measure the drift.
"""

from __future__ import annotations

import gc
import hashlib
import os
import statistics
import tempfile
import time
import warnings
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from langchain_core.caches import BaseCache
    from langchain_core.embeddings import Embeddings

    import stratacache as sc

__all__ = [
    "LITELLM_ANSWER",
    "LITELLM_MESSAGES",
    "PROMPT",
    "Measured",
    "Variant",
    "best_of",
    "embedding_hits",
    "invoke_hits",
    "litellm_call",
    "litellm_hits",
    "litellm_state",
    "render_peers",
    "run_peers",
]

#: The prompt of the LangChain ``model.invoke`` hit path, and the answer the model gives once.
PROMPT = "What is the capital of France? Answer in one word."
ANSWER = "Paris"
#: What the fake model says on every later call: seen only if the cache missed.
MISS = "(not from the cache)"

LITELLM_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Explain multi-level caching for LLM pipelines. " * 8},
]
LITELLM_ANSWER = "A multi-level cache checks fast local tiers before slower shared ones. " * 6


class Measured(NamedTuple):
    """Seconds per operation (per call, or per text for embeddings) and what was answered."""

    seconds: float
    answer: str


# -- timing ----------------------------------------------------------------------------------


def best_of(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Best mean seconds per call over ``repeats`` rounds of ``n`` calls (one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


# -- LangChain -------------------------------------------------------------------------------


def invoke_hits(caches: Mapping[str, BaseCache], n: int, repeats: int) -> dict[str, Measured]:
    """``model.invoke(PROMPT)`` hits through each LangChain cache, best mean per call.

    Each cache gets its own ``FakeListChatModel`` that answers :data:`ANSWER` once and
    :data:`MISS` afterwards, so the answer recorded after the timed calls is :data:`ANSWER`
    only if every call was served by the cache.
    """
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    models = {
        name: FakeListChatModel(responses=[ANSWER, MISS], cache=cache)
        for name, cache in caches.items()
    }
    best = dict.fromkeys(caches, float("inf"))
    for _ in range(repeats):  # interleaved rounds: load from other processes hits both alike
        for name, model in models.items():
            secs = best_of(lambda m=model: m.invoke(PROMPT), n, 1)  # type: ignore[misc]
            best[name] = min(best[name], secs)
    return {
        name: Measured(best[name], str(model.invoke(PROMPT).content))
        for name, model in models.items()
    }


class CountingEmbeddings:
    """Delegates to an embedding model and counts the texts it was asked to embed."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.texts = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.texts += 1
        return self.inner.embed_query(text)


def counting_embeddings(size: int = 384) -> Embeddings:
    """A deterministic fake embedding model (LangChain's) that counts the texts it embeds."""
    from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

    class _Counting(CountingEmbeddings, Embeddings):
        pass

    return _Counting(DeterministicFakeEmbedding(size=size))


def vectors_digest(vectors: Sequence[Sequence[float]]) -> str:
    """A short fingerprint of a list of vectors at float32 precision, to compare two sides'
    answers: stratacache stores float32 (and returns float32-rounded values on every call),
    LangChain's ``CacheBackedEmbeddings`` returns the model's float64, and both round to the
    same float32 values exactly when they hold the same vectors."""
    digest = hashlib.sha256()
    for vector in vectors:
        digest.update(array("f", vector).tobytes())
    dims = len(vectors[0]) if vectors else 0
    return f"{len(vectors)}x{dims} float32 sha256:{digest.hexdigest()[:12]}"


def embedding_hits(
    contenders: Mapping[str, Embeddings], texts: list[str], repeats: int
) -> dict[str, Measured]:
    """Warm ``embed_documents(texts)`` hits, best seconds per text; filled first (untimed).

    The answer is the digest of the vectors returned by the last timed call, suffixed with
    ``", N texts re-embedded"`` when a :class:`CountingEmbeddings` model underneath was
    called during the timed rounds (a miss).
    """
    for emb in contenders.values():
        emb.embed_documents(texts)  # fill
    counts = {name: _embedded(emb) for name, emb in contenders.items()}
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):  # interleaved rounds, as for invoke
        for name, emb in contenders.items():
            secs = best_of(lambda e=emb: e.embed_documents(texts), 1, 1)  # type: ignore[misc]
            best[name] = min(best[name], secs / len(texts))
    out = {}
    for name, emb in contenders.items():
        answer = vectors_digest(emb.embed_documents(texts))
        missed = _embedded(emb) - counts[name]
        out[name] = Measured(best[name], answer + (f", {missed} texts re-embedded" * bool(missed)))
    return out


def _embedded(emb: object) -> int:
    """Texts the counting model under ``emb`` (a cache wrapper, or itself) has embedded."""
    wrapped = ("underlying_embeddings", "underlying")  # CacheBackedEmbeddings, CachedEmbeddings
    for candidate in (emb, *(getattr(emb, name, None) for name in wrapped)):
        if isinstance(candidate, CountingEmbeddings):
            return candidate.texts
    return 0


def _langchain_rows(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    framework = "langchain"
    try:
        from langchain_core.caches import InMemoryCache
    except ImportError as exc:
        return [_skipped(framework, "model.invoke hit", "LangChain", f"not installed ({exc})")]

    import stratacache as sc
    from stratacache.langchain import CachedEmbeddings, LLMCache

    warnings.simplefilter("ignore")  # importing LangChain adds filters in front of ours
    rows: list[dict[str, Any]] = []
    n, repeats = (100, 3) if quick else (1000, 7)
    ours: dict[str, sc.TieredCache] = {
        "LLMCache(memory)": sc.TieredCache.from_urls("memory://"),
        "LLMCache(memory+disk)": sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'llm'}"),
    }
    caches: dict[str, BaseCache] = {"InMemoryCache": InMemoryCache()}
    caches.update({name: LLMCache(cache) for name, cache in ours.items()})
    sqlite_note = None
    try:
        from langchain_community.cache import SQLiteCache

        caches["SQLiteCache"] = SQLiteCache(database_path=str(tmp / "langchain.db"))
    except ImportError as exc:
        sqlite_note = f"langchain_community not installed ({exc})"
    try:
        got = invoke_hits(caches, n, repeats)
    finally:
        for cache in ours.values():
            cache.close()
    scenario = "model.invoke hit"
    rows.append(_row(framework, scenario, "InMemoryCache", "LLMCache(memory)", got, "µs/call"))
    rows.append(_row(framework, scenario, "InMemoryCache", "LLMCache(memory+disk)", got, "µs/call"))
    if sqlite_note is None:
        rows.append(
            _row(framework, scenario, "SQLiteCache", "LLMCache(memory+disk)", got, "µs/call")
        )
    else:
        rows.append(_skipped(framework, scenario, "SQLiteCache", sqlite_note))

    scenario = "warm embedding hits"
    try:
        from langchain_classic.embeddings import CacheBackedEmbeddings
        from langchain_classic.storage import LocalFileStore
        from langchain_core.stores import InMemoryByteStore
    except ImportError as exc:
        note = f"langchain_classic not installed ({exc})"
        rows.append(_skipped(framework, scenario, "CacheBackedEmbeddings", note))
        return rows
    texts_n, repeats = (300, 3) if quick else (2000, 10)
    texts = [f"document number {i} about topic {i % 97}" for i in range(texts_n)]
    memory = sc.TieredCache.from_urls("memory://?max_bytes=512MB")
    disk = sc.TieredCache.from_urls(f"disk://{tmp / 'emb'}")
    contenders: dict[str, Embeddings] = {
        "CachedEmbeddings(memory)": CachedEmbeddings(counting_embeddings(), memory),
        "CacheBackedEmbeddings(InMemoryByteStore)": CacheBackedEmbeddings.from_bytes_store(
            counting_embeddings(), InMemoryByteStore(), namespace="m", key_encoder="sha256"
        ),
        "CachedEmbeddings(disk)": CachedEmbeddings(counting_embeddings(), disk),
        "CacheBackedEmbeddings(LocalFileStore)": CacheBackedEmbeddings.from_bytes_store(
            counting_embeddings(), LocalFileStore(tmp / "lfs"), namespace="m", key_encoder="sha256"
        ),
    }
    try:
        got = embedding_hits(contenders, texts, repeats)
    finally:
        memory.close()
        disk.close()
    for side in ("memory", "disk"):
        peer = "InMemoryByteStore" if side == "memory" else "LocalFileStore"
        rows.append(
            _row(
                framework,
                f"{scenario} ({texts_n} texts)",
                f"CacheBackedEmbeddings({peer})",
                f"CachedEmbeddings({side})",
                got,
                "µs/text",
            )
        )
    return rows


# -- LiteLLM ---------------------------------------------------------------------------------


def litellm_call() -> Any:
    """One ``litellm.completion`` of the benchmark request (``mock_response``: no provider)."""
    import litellm

    return litellm.completion(
        model="gpt-4o-mini",
        messages=LITELLM_MESSAGES,
        mock_response=LITELLM_ANSWER,
        temperature=0,
    )


_MARKERS = ("input_callback", "success_callback", "_async_success_callback")


class Variant:
    """One litellm cache set-up that can be switched on and off, so that rounds can interleave
    variants: either litellm's own ``Cache`` (``litellm_cache``) or a stratacache
    :class:`~stratacache.TieredCache` installed with :func:`stratacache.litellm.install`."""

    def __init__(self, name: str, litellm_cache: Any, ours: sc.TieredCache | None) -> None:
        self.name, self.litellm_cache, self.ours = name, litellm_cache, ours
        self.samples: list[float] = []
        self.answer = ""

    def __enter__(self) -> Variant:
        import litellm

        if self.ours is not None:
            import stratacache.litellm as scl

            scl.install(self.ours)
        else:
            # What `litellm.cache = Cache(...)` does on construction, and what
            # `disable_cache()` undid on the previous exit: the "cache" callback markers.
            litellm.cache = self.litellm_cache
            for name in _MARKERS:
                if "cache" not in getattr(litellm, name):
                    getattr(litellm, name).append("cache")
        return self

    def __exit__(self, *exc: object) -> None:
        import litellm

        if self.ours is not None:
            import stratacache.litellm as scl

            scl.uninstall()
        else:
            litellm.disable_cache()

    def warm(self, calls: int = 50) -> None:
        """Store the answer, check that the next call is a hit, and warm the hit path."""
        with self:
            litellm_call()
            time.sleep(0.05)
            response = litellm_call()
            if response._hidden_params.get("cache_hit") is not True:
                raise AssertionError(f"{self.name}: the second call was not a cache hit")
            for _ in range(calls):
                litellm_call()

    def measure(self, ops: int) -> None:
        """One round of ``ops`` calls: appends µs per call to :attr:`samples`."""
        with self:
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(ops):
                    litellm_call()
                self.samples.append((time.perf_counter() - start) / ops * 1e6)
            finally:
                gc.enable()

    def probe(self) -> str:
        """What a call answers now: the content, or a note if it was not a cache hit."""
        with self:
            response = litellm_call()
        content = str(response.choices[0].message.content)
        if response._hidden_params.get("cache_hit") is not True:
            return f"not a cache hit: {content[:40]}"
        return content

    def close(self) -> None:
        if self.ours is not None:
            self.ours.close()


@contextmanager
def litellm_state() -> Iterator[bool]:
    """litellm's cache and callback markers restored on exit, and the litellm#42195 hit-path
    workaround (which serves every variant alike) applied meanwhile; yields whether it was."""
    import litellm

    from stratacache.integrations.litellm._compat import apply_hit_patch, revert_hit_patch

    saved_cache = litellm.cache
    saved_lists = {name: list(getattr(litellm, name)) for name in _MARKERS}
    patched = apply_hit_patch()
    try:
        yield patched
    finally:
        if patched:
            revert_hit_patch()
        litellm.cache = saved_cache
        for name, items in saved_lists.items():
            getattr(litellm, name)[:] = items


def litellm_hits(
    variants: Sequence[Variant], ops: int, rounds: int, warm: int = 50
) -> dict[str, Measured]:
    """Warm every variant (``warm`` hits), then ``rounds`` interleaved rounds of ``ops`` hits:
    the median per hit of each (in seconds) and what each answered afterwards. Closes
    stratacache's caches."""
    try:
        for variant in variants:
            variant.warm(warm)
        for _ in range(rounds):
            for variant in variants:
                variant.measure(ops)
        for variant in variants:
            variant.answer = variant.probe()
    finally:
        for variant in variants:
            variant.close()
    return {v.name: Measured(statistics.median(v.samples) / 1e6, v.answer) for v in variants}


def _litellm_rows(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    framework, scenario = "litellm", "completion hit"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost-map fetch
    try:
        import litellm  # noqa: F401
        from litellm.caching.caching import Cache
    except ImportError as exc:
        return [_skipped(framework, scenario, "litellm", f"not installed ({exc})")]

    import stratacache as sc

    ops, rounds, warm = (40, 3, 10) if quick else (300, 9, 50)
    rows: list[dict[str, Any]] = []
    with litellm_state():
        variants = [
            Variant("Cache() (local)", Cache(), None),
            Variant("stratacache memory", None, sc.TieredCache.from_urls("memory://")),
            Variant(
                "stratacache memory+disk",
                None,
                sc.TieredCache.from_urls("memory://", f"disk://{tmp / 'sc-md'}"),
            ),
        ]
        disk_note = None
        try:  # litellm 1.110 dropped its disk cache type
            # (a dict: the type is gone from the enum of the litellm the stubs come from)
            options: dict[str, Any] = {"type": "disk", "disk_cache_dir": str(tmp / "litellm-disk")}
            disk = Cache(**options)
        except Exception as exc:  # the peer is optional here
            disk_note = f"not available in this litellm ({type(exc).__name__}: {exc})"
        else:
            variants.append(Variant("Cache(type='disk')", disk, None))
            variants.append(
                Variant(
                    "stratacache disk", None, sc.TieredCache.from_urls(f"disk://{tmp / 'sc-d'}")
                )
            )
        got = litellm_hits(variants, ops, rounds, warm)
    rows.append(_row(framework, scenario, "Cache() (local)", "stratacache memory", got, "µs/call"))
    rows.append(
        _row(framework, scenario, "Cache() (local)", "stratacache memory+disk", got, "µs/call")
    )
    if disk_note is None:
        rows.append(
            _row(framework, scenario, "Cache(type='disk')", "stratacache disk", got, "µs/call")
        )
    else:
        rows.append(_skipped(framework, scenario, "Cache(type='disk')", disk_note))
    return rows


# -- rows and rendering ----------------------------------------------------------------------


def _row(
    framework: str,
    scenario: str,
    peer: str,
    ours: str,
    got: Mapping[str, Measured],
    unit: str,
) -> dict[str, Any]:
    peer_us, our_us = got[peer].seconds * 1e6, got[ours].seconds * 1e6
    return {
        "framework": framework,
        "scenario": scenario,
        "peer": peer,
        "stratacache": ours,
        "unit": unit,
        "peer_us": peer_us,
        "stratacache_us": our_us,
        "ratio": our_us / peer_us,
        "peer_answer": got[peer].answer,
        "stratacache_answer": got[ours].answer,
        "skipped": None,
    }


def _skipped(framework: str, scenario: str, peer: str, reason: str) -> dict[str, Any]:
    return {
        "framework": framework,
        "scenario": scenario,
        "peer": peer,
        "stratacache": None,
        "unit": None,
        "peer_us": None,
        "stratacache_us": None,
        "ratio": None,
        "peer_answer": None,
        "stratacache_answer": None,
        "skipped": reason,
    }


def run_peers(quick: bool) -> list[dict[str, Any]]:
    """Measure every installed framework's hit path with its own caches and with stratacache.

    One row per comparison: ``framework``, ``scenario``, ``peer``, ``stratacache`` (the
    contenders), ``unit``, ``peer_us`` and ``stratacache_us`` (µs per call or per text),
    ``ratio`` (stratacache / peer: below 1 is faster), ``peer_answer`` and
    ``stratacache_answer`` (what each side answered on a hit: equal when both really served
    the same entry) and ``skipped`` (None, or why the row was not measured: a framework or
    peer that is not installed). ``quick``: fewer iterations (a smoke run of seconds).
    """
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="stratacache-peers-") as tmp,
        warnings.catch_warnings(),  # the frameworks' deprecation notices are not figures
    ):
        warnings.simplefilter("ignore")
        for section in (_langchain_rows, _litellm_rows):
            warnings.simplefilter("ignore")  # again: importing a framework may add filters
            sub = Path(tmp) / section.__name__.strip("_")
            sub.mkdir()
            rows += section(sub, quick)
    return rows


def render_peers(rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned text table of :func:`run_peers` rows, with the ratios."""
    header = ("framework", "scenario", "peer", "stratacache", "peer µs", "ours µs", "ratio")
    table: list[tuple[str, ...]] = [header]
    notes: list[str] = []
    for row in rows:
        if row.get("skipped"):
            table.append((row["framework"], row["scenario"], row["peer"], "-", "-", "-", "skipped"))
            notes.append(f"skipped: {row['framework']} {row['peer']}: {row['skipped']}")
            continue
        table.append(
            (
                row["framework"],
                row["scenario"],
                row["peer"],
                row["stratacache"],
                f"{row['peer_us']:.2f}",
                f"{row['stratacache_us']:.2f}",
                f"{row['ratio']:.2f}x",
            )
        )
        if row["peer_answer"] != row["stratacache_answer"]:
            notes.append(
                f"!! {row['scenario']}: {row['peer']} answered {row['peer_answer']!r}, "
                f"{row['stratacache']} answered {row['stratacache_answer']!r}"
            )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    numeric = {4, 5, 6}
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("ratio = stratacache µs / peer µs (below 1: stratacache is faster)")
    units = sorted({f"{r['scenario']}: {r['unit']}" for r in rows if r.get("unit")})
    if units:
        lines.append("units: " + "; ".join(units))
    return "\n".join(lines + notes)
