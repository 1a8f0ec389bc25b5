"""Differential key tests: every field of the real OpenAI client classes is classified.

Each field of ``ChatOpenAI`` / ``OpenAI`` (read from ``model_fields``, so a field a future
release adds is covered automatically) is set to another valid value, and the key LLMCache
computes on LangChain's own lookup path (``invoke`` → ``lookup``) must change, unless the field
is on the documented deny-list ``NON_SEMANTIC_FIELDS``, where it must not. A new field whose
value cannot be generated fails until someone adds it to ``VALUES`` and classifies it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from langchain_core.language_models import BaseLanguageModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.outputs import Generation
from langchain_openai import ChatOpenAI, OpenAI
from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo

import stratacache as sc
from stratacache.integrations.langchain._keys import NON_SEMANTIC_FIELDS, llm_cache_key
from stratacache.keys import CREDENTIAL_HEADERS
from stratacache.langchain import LLMCache

BASE: dict[str, Any] = {
    "model_name": "gpt-4o-mini",
    "openai_api_base": "http://127.0.0.1:9/v1",
    "openai_api_key": "sk-one",
}

#: Values for fields whose type alone does not give a valid, different value.
VALUES: dict[str, Any] = {
    "logit_bias": {"50256": -100},
    "http_socket_options": [(6, 1, 1)],
    "openai_api_base": "http://127.0.0.2:9/v1",
    "openai_api_key": "sk-two",
    "output_version": "v1",
    "reasoning_effort": "low",
    "verbosity": "low",
    "service_tier": "flex",
    "truncation": "auto",
    "disable_streaming": True,
    "allowed_special": "all",
    "disallowed_special": ("<|endoftext|>",),
    "stop": ["STOP"],
    "cache": False,
    "context_management": [{"type": "probe"}],
    "profile": {"max_input_tokens": 5},
}


class KeyProbe(LLMCache):
    """Records the key of every lookup and answers it, so no request leaves the process."""

    def __init__(self) -> None:
        super().__init__(sc.TieredCache.from_urls("memory://"))
        self.keys: list[str | None] = []

    def lookup(self, prompt: str, llm_string: str) -> list[Generation]:
        self.keys.append(self._key(prompt, llm_string))
        return [Generation(text="probe")]


def _candidates(info: FieldInfo) -> list[Any]:
    """Valid-looking values of a field's type that differ from its default."""
    default = info.default
    out: list[Any] = []
    for arg in _flatten(info.annotation):
        origin = typing.get_origin(arg) or arg
        if origin is typing.Literal:
            out += [v for v in typing.get_args(arg) if v != default]
        elif origin is bool:
            out.append(not default if isinstance(default, bool) else True)
        elif origin is int:
            out.append(7 if default != 7 else 8)
        elif origin is float:
            out.append(0.37)
        elif origin is str:
            out.append("probe-value")
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            out.append({"x-probe": "1"})
        elif isinstance(origin, type) and issubclass(origin, Sequence):
            out.append(["probe"])
    return out


def _flatten(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _build(cls: type[BaseLanguageModel[Any]], field: str, probe: KeyProbe) -> Any:
    """The model with ``field`` changed, or None when no value could be generated."""
    candidates = [VALUES[field]] if field in VALUES else _candidates(cls.model_fields[field])
    for value in candidates:
        try:
            model = cls(**{**BASE, field: value, "cache": probe} if field != "cache" else BASE)
        except Exception:
            continue
        if field == "cache" or getattr(model, field) != cls.model_fields[field].default:
            return model
    return None


def _key(model: Any, probe: KeyProbe) -> str | None:
    if model.cache is not probe:
        model = model.model_copy(update={"cache": probe})
    probe.keys.clear()
    model.invoke("what is the key?")
    assert len(probe.keys) == 1
    return probe.keys[0]


@pytest.mark.parametrize("cls", [ChatOpenAI, OpenAI])
def test_every_field_is_in_the_key_or_on_the_deny_list(
    cls: type[BaseLanguageModel[Any]],
) -> None:
    probe = KeyProbe()
    baseline = _key(cls(**BASE, cache=probe), probe)
    assert baseline is not None
    wrong: list[str] = []
    for field in cls.model_fields:
        model = _build(cls, field, probe)
        if model is None:
            if field not in NON_SEMANTIC_FIELDS:
                wrong.append(f"{field}: no test value; add one to VALUES and classify it")
            continue
        changed = _key(model, probe) != baseline
        if changed == (field in NON_SEMANTIC_FIELDS):
            wrong.append(f"{field}: key {'changed' if changed else 'unchanged'}")
    assert not wrong, f"{cls.__name__}: {wrong}"


@pytest.mark.parametrize("cls", [ChatOpenAI, OpenAI])
def test_headers_and_query_are_in_the_key_but_credentials_are_not(
    cls: type[BaseLanguageModel[Any]],
) -> None:
    probe = KeyProbe()

    def key(**kwargs: Any) -> str | None:
        return _key(cls(**BASE, cache=probe, **kwargs), probe)

    plain = key(default_headers={"OpenAI-Beta": "assistants=v2"})
    assert plain != key(default_headers={"OpenAI-Beta": "assistants=v1"})
    assert key(default_query={"api-version": "2024-10-21"}) != key(
        default_query={"api-version": "2025-01-01"}
    )
    assert "authorization" in CREDENTIAL_HEADERS
    with_token = key(default_headers={"OpenAI-Beta": "assistants=v2", "Authorization": "t1"})
    assert with_token == plain


def _answer(**fields: Any) -> type[BaseModel]:
    return create_model("Answer", __module__=__name__, **fields)


LLM = '{"id": ["x"], "kwargs": {"model_name": "m"}}---'


def test_response_format_class_is_keyed_by_its_schema() -> None:
    one = _answer(total=(int, ...))
    params = f"[('response_format', {one}), ('stop', None)]"
    key = llm_cache_key("p", LLM + params)
    assert key == llm_cache_key("p", LLM + params)
    other = _answer(total=(int, ...), note=(str, ...))
    # Two live classes now carry the name: the text cannot tell them apart, so no key.
    with pytest.raises(ValueError, match="several different classes"):
        llm_cache_key("p", LLM + params)
    del one, other


def test_object_reprs_in_call_kwargs_are_never_keyed(memory_cache: sc.TieredCache) -> None:
    cache = LLMCache(memory_cache)
    params = "[('client', <Foo object at 0x7f00>), ('stop', None)]"
    cache.update("p", LLM + params, [Generation(text="a")])
    assert cache.lookup("p", LLM + params) is None
    assert cache.stats()["key_errors"] == 2


class DeployedFakeLLM(FakeListLLM):
    """LangChain's fake LLM as a provider class: serializable, with an endpoint setting that
    (like ``OpenAI.openai_api_base``) is missing from ``_identifying_params``."""

    endpoint: str = "http://a/v1"

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


async def test_text_models_on_other_endpoints_never_share_entries(
    memory_cache: sc.TieredCache,
) -> None:
    cache = LLMCache(memory_cache)
    # The same model name and answers: only the endpoint tells the two deployments apart.
    a = DeployedFakeLLM(responses=["answer"] * 5, endpoint="http://a/v1", cache=cache)
    b = DeployedFakeLLM(responses=["answer"] * 5, endpoint="http://b/v1", cache=cache)
    a.invoke("p")
    b.invoke("p")
    assert (a.i, b.i) == (1, 1)  # each endpoint was asked
    a.invoke("p")
    b.invoke("p")
    assert (a.i, b.i) == (1, 1)  # and each hit its own entry
    await a.ainvoke("q")
    await b.ainvoke("q")
    await a.ainvoke("q")
    await b.ainvoke("q")
    assert (a.i, b.i) == (2, 2)
    assert cache.stats()["hits"] == 4
