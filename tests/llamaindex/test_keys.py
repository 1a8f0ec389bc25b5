"""What CachedLLM keys are made of: the whole model configuration minus a documented deny-list."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.output_parsers import PydanticOutputParser
from llama_index.core.prompts import PromptTemplate
from llama_index.core.storage.kvstore import SimpleKVStore
from llama_index.core.types import PydanticProgramMode
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI, OpenAIResponses
from pydantic import BaseModel

import stratacache as sc
import stratacache.llamaindex as scli
from stratacache.errors import StrataCacheError
from stratacache.integrations.llamaindex._keys import (
    EMBED_TRANSPORT_FIELDS,
    LLM_TRANSPORT_FIELDS,
    SECRET_FIELD,
    embedding_identity,
    llm_identity,
)
from stratacache.keys import canonical_json
from stratacache.llamaindex import CachedEmbedding, CachedLLM, RateLimiter
from stratacache.testing import OpenAICompatServer
from tests.llamaindex.conftest import CountingEmbedding, CountingLLM

_OFFLINE = "http://127.0.0.1:9/v1"  # never contacted: these tests only build keys


class _Pet(BaseModel):
    name: str


def _messages_to_prompt(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(f"{m.role.value}> {m.content}" for m in messages)


def _completion_to_prompt(completion: str) -> str:
    return f"### {completion}"


#: Another valid value for every field of the introspected classes. A field upstream adds is
#: missing here and fails test_every_field_is_classified until someone decides what it is.
_ALTERNATIVES: dict[str, Any] = {
    "callback_manager": CallbackManager([]),
    "rate_limiter": RateLimiter(rpm=10),
    "system_prompt": "answer in French",
    "messages_to_prompt": _messages_to_prompt,
    "completion_to_prompt": _completion_to_prompt,
    "output_parser": PydanticOutputParser(output_cls=_Pet),
    "pydantic_program_mode": PydanticProgramMode.LLM,
    "query_wrapper_prompt": PromptTemplate("Q: {query_str}"),
    "model": "gpt-4o",
    "temperature": 0.7,
    "max_tokens": 99,
    "logprobs": True,
    "top_logprobs": 3,
    "additional_kwargs": {"seed": 7},
    "max_retries": 7,
    "timeout": 5.0,
    "default_headers": {"OpenAI-Beta": "assistants=v2"},
    "reuse_client": False,
    "api_key": "sk-other-secret",
    "api_base": "http://127.0.0.1:10/v1",
    "api_version": "2024-06-01",
    "strict": True,
    "reasoning_effort": "low",
    "modalities": ["text"],
    "audio_config": {"voice": "alloy"},
    "top_p": 0.5,
    "max_output_tokens": 50,
    "reasoning_options": {"effort": "low"},
    "include": ["reasoning.encrypted_content"],
    "instructions": "be brief",
    "track_previous_responses": True,
    "store": True,
    "built_in_tools": [{"type": "web_search_preview"}],
    "truncation": "auto",
    "user": "user-1",
    "call_metadata": {"trace": "abc"},
    "context_window": 1000,
}
_BASE: dict[str, Any] = {"model": "gpt-4o-mini", "api_key": "sk-test-secret", "api_base": _OFFLINE}
_CLASSES = (OpenAI, OpenAIResponses)


def _key(llm: LLM, cache: sc.TieredCache, **kwargs: Any) -> str | None:
    cached = CachedLLM(llm, cache=cache)
    return cached._cacher.key(llm, "chat", [ChatMessage(role="user", content="hi")], kwargs)


def _denied(name: str) -> bool:
    return name in LLM_TRANSPORT_FIELDS or bool(SECRET_FIELD.search(name))


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_classified(cls: type[LLM]) -> None:
    unclassified = sorted(set(cls.model_fields) - set(_ALTERNATIVES))
    assert not unclassified, (
        f"{cls.__name__} has new fields {unclassified}: add an alternative value here, and "
        "add the field to LLM_TRANSPORT_FIELDS only if it can never change an answer"
    )


@pytest.mark.parametrize(
    ("cls", "name"),
    [(cls, name) for cls in _CLASSES for name in cls.model_fields],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_each_field_changes_the_key_unless_denied(
    cls: type[LLM], name: str, memory_cache: sc.TieredCache
) -> None:
    base = _key(cls(**_BASE), memory_cache)
    assert base is not None
    changed = cls(**{**_BASE, name: _ALTERNATIVES[name]})
    assert getattr(changed, name) != getattr(cls(**_BASE), name) or name == "callback_manager"
    key = _key(changed, memory_cache)
    if name == "track_previous_responses":
        assert key is None  # server-side conversation state: never served from cache
    elif _denied(name):
        assert key == base
    else:
        assert key is not None and key != base


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_secrets_and_credential_headers_are_not_key_material(cls: type[LLM]) -> None:
    llm = cls(**_BASE, default_headers={"Authorization": "Bearer sk-hdr-secret", "X-Beta": "1"})
    material = canonical_json(llm_identity(llm))
    assert "sk-test-secret" not in material and "sk-hdr-secret" not in material
    assert "x-beta" in material


def test_previous_response_id_is_in_the_key(memory_cache: sc.TieredCache) -> None:
    a = OpenAIResponses(**_BASE, previous_response_id="resp_1")
    b = OpenAIResponses(**_BASE, previous_response_id="resp_2")
    assert _key(a, memory_cache) != _key(b, memory_cache)
    # Also under a model_id, which replaces the configuration but not the request state.
    msgs = [ChatMessage(role="user", content="hi")]
    keys = [CachedLLM(m, cache=memory_cache, model_id="shared")._cacher.key(m, "chat", msgs, {})
            for m in (a, b, OpenAIResponses(**_BASE, track_previous_responses=True))]  # fmt: skip
    assert keys[0] != keys[1] and keys[2] is None


def test_endpoint_and_headers_select_separate_entries(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    """Three configurations of one class used to be served the first one's answer."""
    msgs = [ChatMessage(role="user", content="which endpoint am I talking to?")]
    other_host = server.base_url.replace("127.0.0.1", "localhost")
    beta = {"OpenAI-Beta": "feature=v1"}
    configs: list[dict[str, Any]] = [
        {"api_base": server.base_url},
        {"api_base": other_host},
        {"api_base": server.base_url, "default_headers": beta},
    ]
    for cfg in configs:
        llm = OpenAI(model="gpt-4o-mini", api_key="test", max_retries=0, **cfg)
        CachedLLM(llm, cache=tiered).chat(msgs)
    assert server.stats.requests["chat"] == 3
    # Another key, timeout and credential header: the same entry.
    same = OpenAI(model="gpt-4o-mini", api_key="other", max_retries=1, timeout=9.0,
                  api_base=server.base_url, default_headers={**beta, "api-key": "k"})  # fmt: skip
    cached = CachedLLM(same, cache=tiered)
    cached.chat(msgs)
    assert server.stats.requests["chat"] == 3
    cached.chat(msgs, extra_headers={"OpenAI-Beta": "feature=v2"})  # per-call headers too
    cached.chat(msgs, extra_headers={"OpenAI-Beta": "feature=v2", "Authorization": "Bearer z"})
    assert server.stats.requests["chat"] == 4


def test_image_path_is_keyed_by_its_bytes(tmp_path: Path, memory_cache: sc.TieredCache) -> None:
    llm = CountingLLM(max_tokens=8)
    cached = CachedLLM(llm, cache=memory_cache)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG first picture")
    blocks = [TextBlock(text="describe"), ImageBlock(path=picture)]

    def ask() -> None:
        cached.chat([ChatMessage(role="user", blocks=blocks)])

    ask()
    ask()
    assert llm.calls == 1
    picture.write_bytes(b"\x89PNG second picture")  # same path, other content
    ask()
    assert llm.calls == 2
    picture.unlink()  # unreadable now: the calls go through uncached, nothing raised for it
    ask()
    ask()
    assert llm.calls == 4
    assert cached.stats()["uncacheable"] == 2


def test_item_reference_ids_are_content(memory_cache: sc.TieredCache) -> None:
    llm = CountingLLM(max_tokens=8)
    cached = CachedLLM(llm, cache=memory_cache)
    for ref in ("msg_1", "msg_2"):
        item = {"type": "item_reference", "id": ref}
        history = [
            ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [item]}),
            ChatMessage(role="user", content="go on"),
        ]
        cached.chat(history)
    assert llm.calls == 2


_EMBED_ALTERNATIVES: dict[str, Any] = {
    "model_name": "text-embedding-3-large",
    "embed_batch_size": 7,
    "callback_manager": CallbackManager([]),
    "num_workers": 3,
    "embeddings_cache": SimpleKVStore(),
    "rate_limiter": RateLimiter(rpm=10),
    "additional_kwargs": {"user": "u1"},
    "api_key": "sk-other-secret",
    "api_base": "http://127.0.0.1:10/v1",
    "api_version": "2024-06-01",
    "max_retries": 7,
    "timeout": 5.0,
    "default_headers": {"OpenAI-Beta": "x=1"},
    "reuse_client": False,
    "dimensions": 256,
}


@pytest.mark.parametrize("name", sorted(OpenAIEmbedding.model_fields))
def test_each_embedding_field_changes_the_identity_unless_denied(name: str) -> None:
    assert name in _EMBED_ALTERNATIVES, f"classify OpenAIEmbedding's new field {name!r}"
    base = OpenAIEmbedding(api_key="sk-test-secret", api_base=_OFFLINE)
    changed = OpenAIEmbedding(**{"api_key": "sk-test-secret", "api_base": _OFFLINE,
                                 name: _EMBED_ALTERNATIVES[name]})  # fmt: skip
    same = name in EMBED_TRANSPORT_FIELDS or bool(SECRET_FIELD.search(name))
    assert (embedding_identity(changed) == embedding_identity(base)) is same


class _Unkeyable(CountingEmbedding):
    handle: Any = None  # holds an object with no exact key form


def test_unkeyable_embedding_settings_need_a_model_id(memory_cache: sc.TieredCache) -> None:
    odd = _Unkeyable(embed_dim=4, handle=object())
    with pytest.raises(StrataCacheError, match="model_id="):
        CachedEmbedding(odd, cache=memory_cache)
    cached = CachedEmbedding(odd, cache=memory_cache, model_id="odd-v1")
    assert cached.get_text_embedding("x") == cached.get_text_embedding("x")
    assert odd.texts == 1


def test_install_leaves_an_unkeyable_embedding_uncached(
    llm: CountingLLM, memory_cache: sc.TieredCache
) -> None:
    odd = _Unkeyable(embed_dim=4, handle=object())
    Settings.llm = llm
    Settings.embed_model = odd
    for in_place in (False, True):
        done = scli.install(memory_cache, in_place=in_place)
        assert done["embed_model"] is None and done["llm"] == "CountingLLM"
        assert Settings._embed_model is odd and "get_text_embedding" not in vars(odd)
    assert scli.uninstall()
