"""What goes into LlamaIndex cache keys, and what never does.

LlamaIndex models are pydantic objects whose fields mix answer-changing settings (model,
temperature) with credentials, clients, counters and callbacks. Hashing ``to_dict()`` would
leak secrets into key material and make keys change with every mutable field, so LLM keys use
an explicit allow-list, and embedding identities skip anything that looks like transport.
Values that cannot be represented exactly (an arbitrary object in the call kwargs) make the
call uncacheable rather than guessed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from llama_index.core.base.llms.types import CachePoint, ChatMessage
from llama_index.core.bridge.pydantic import BaseModel

from stratacache.integrations._vectors import is_plain
from stratacache.keys import TRANSPORT_FIELDS, digest

__all__ = [
    "LLM_KEY_FIELDS",
    "Uncacheable",
    "embedding_identity",
    "jsonable",
    "llm_identity",
    "messages_for_key",
]

#: Model fields that change an answer. Anything else on the model is ignored by design.
LLM_KEY_FIELDS: Final = (
    "model", "model_name", "engine", "deployment_name", "temperature", "max_tokens",
    "max_new_tokens", "max_completion_tokens", "top_p", "top_k", "min_p", "frequency_penalty",
    "presence_penalty", "repetition_penalty", "seed", "stop", "stop_sequences", "logprobs",
    "top_logprobs", "reasoning_effort", "thinking", "response_format", "json_mode", "strict",
    "modalities", "system_prompt", "additional_kwargs", "is_chat_model",
)  # fmt: skip

_SECRETISH: Final = re.compile(
    r"(key|secret|token(?!s$)|password|auth|header|client|callback|session|proxy|http)", re.I
)
#: Embedding fields that never change a vector (transport, batching, plumbing).
_EMBED_SKIP: Final = frozenset(
    {"embed_batch_size", "num_workers", "callback_manager", "embeddings_cache", "rate_limiter",
     "api_base", "api_version", "base_url", "max_retries", "timeout", "reuse_client",
     "show_progress"}
)  # fmt: skip


class Uncacheable(Exception):
    """A call whose key cannot be built exactly; it is passed through uncached."""


def jsonable(value: Any) -> Any:
    """An exact JSON form of call kwargs (tools, schemas, pydantic values), or Uncacheable."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"__schema__": value.model_json_schema(), "__name__": value.__qualname__}
    meta = getattr(value, "metadata", None)
    if meta is not None and hasattr(meta, "get_parameters_dict"):  # a BaseTool
        return {
            "__tool__": getattr(meta, "name", None),
            "description": getattr(meta, "description", None),
            "parameters": meta.get_parameters_dict(),
        }
    raise Uncacheable(f"{type(value).__qualname__} in the call arguments has no exact key form")


def _clean_extra(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return jsonable(value)
    return {
        str(k): jsonable(v)
        for k, v in value.items()
        if k not in TRANSPORT_FIELDS and not _SECRETISH.search(str(k))
    }


def llm_identity(llm: Any) -> dict[str, Any]:
    """Class, allow-listed settings and metadata of an LLM (no secrets, no volatile fields)."""
    cls = type(llm)
    fields = getattr(cls, "model_fields", {})
    params: dict[str, Any] = {}
    for name in LLM_KEY_FIELDS:
        if name not in fields:
            continue
        value = getattr(llm, name, None)
        if value is None:
            continue
        params[name] = _clean_extra(value) if name == "additional_kwargs" else jsonable(value)
    meta = llm.metadata
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": params,
        "meta": {"model_name": meta.model_name, "chat": meta.is_chat_model,
                 "role": str(getattr(meta, "system_role", ""))},
    }  # fmt: skip


def messages_for_key(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as JSON, without provider prompt-caching markers (they never change answers)."""
    out = []
    for message in messages:
        data = message.model_dump(mode="json")
        blocks = data.get("blocks")
        if isinstance(blocks, list) and any(isinstance(b, CachePoint) for b in message.blocks):
            data["blocks"] = [
                b for b, ob in zip(blocks, message.blocks, strict=False)
                if not isinstance(ob, CachePoint)
            ]  # fmt: skip
        out.append(data)
    return out


def embedding_identity(model: Any) -> str:
    """A digest of what determines an embedding model's vectors: class and plain settings."""
    cls = type(model)
    params: dict[str, Any] = {}
    for name, info in getattr(cls, "model_fields", {}).items():
        if name.startswith("_") or name in _EMBED_SKIP or _SECRETISH.search(name):
            continue
        if getattr(info, "exclude", None) is True:  # excluded from serialization: not identity
            continue
        value = getattr(model, name, None)
        if isinstance(value, enum.Enum):
            value = value.value
        if is_plain(value):
            params[name] = value
    return digest({"class": f"{cls.__module__}.{cls.__qualname__}", "params": params})[:32]
