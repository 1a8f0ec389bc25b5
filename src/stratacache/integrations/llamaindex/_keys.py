"""What goes into LlamaIndex cache keys, and what never does.

A key must change whenever anything that can change the answer changes, so an LLM's identity
is its **whole** pydantic configuration (every declared field, including ones this module has
never heard of), minus a short deny-list of fields that only decide how a request travels or
who pays for it (:data:`LLM_TRANSPORT_FIELDS`), credentials (:data:`SECRET_FIELD`) and
credential headers (:data:`CREDENTIAL_HEADERS`). An allow-list of "known" settings would
silently ignore the next answer-changing field a provider adds (``api_base``,
``reasoning_options``, ``default_headers`` with a beta flag, ...). Values that cannot be
represented exactly (a client object in an unknown field, a lambda) make the call
uncacheable rather than guessed. docs/llamaindex.md lists the deny-lists and why.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from llama_index.core.base.llms.types import CachePoint, ChatMessage
from llama_index.core.bridge.pydantic import BaseModel
from pydantic import SecretBytes, SecretStr

from stratacache.keys import (
    CREDENTIAL_HEADERS,
    HEADER_FIELDS,
    TRANSPORT_FIELDS,
    answer_headers,
    digest,
)

__all__ = [
    "CALL_TRANSPORT_FIELDS",
    "CREDENTIAL_HEADERS",
    "EMBED_TRANSPORT_FIELDS",
    "LLM_TRANSPORT_FIELDS",
    "SECRET_FIELD",
    "Uncacheable",
    "clean_kwargs",
    "embedding_identity",
    "jsonable",
    "llm_identity",
    "messages_for_key",
    "request_state",
]

#: LLM fields that never change an answer: transport (timeouts, retries, client reuse),
#: plumbing (callbacks, the rate limiter) and what LlamaIndex's high-level ``predict`` methods
#: apply outside the cached ``complete``/``chat`` call (the prompt they produce is keyed).
#: ``call_metadata`` is the Responses API's logging ``metadata``.
LLM_TRANSPORT_FIELDS: Final = frozenset(
    {"callback_manager", "rate_limiter", "timeout", "request_timeout", "max_retries",
     "reuse_client", "http_client", "async_http_client", "output_parser",
     "query_wrapper_prompt", "call_metadata"}
)  # fmt: skip

#: Field names that hold credentials; never key material. Tokens are named precisely:
#: ``eos_token``/``stop_token`` and ``max_tokens`` change answers and must stay in keys.
SECRET_FIELD: Final = re.compile(
    r"api_?key|secret|password|credential|access_key|token_provider|^token$"
    r"|(^|_)(ad|session|access|auth|refresh|bearer|security|id|api|hf|hub)_token$",
    re.I,
)

#: Call kwargs that never change an answer: the core transport list. Header fields are in the
#: key minus credential headers (``stratacache.keys.CREDENTIAL_HEADERS``).
CALL_TRANSPORT_FIELDS: Final = TRANSPORT_FIELDS
#: Private state some LLM classes send with every request (Responses API conversation chaining).
_STATE_ATTRS: Final = ("_previous_response_id",)
_BINARY_FIELDS: Final = ("image", "audio", "data", "video")

#: Embedding fields that never change a vector: batching, concurrency, plumbing and transport.
EMBED_TRANSPORT_FIELDS: Final = frozenset(
    {"embed_batch_size", "num_workers", "callback_manager", "embeddings_cache", "rate_limiter",
     "max_retries", "timeout", "request_timeout", "reuse_client", "show_progress",
     "http_client", "async_http_client"}
)  # fmt: skip


class Uncacheable(Exception):
    """A call whose key cannot be built exactly; it is passed through uncached."""


def _callable_name(value: Callable[..., Any]) -> str:
    # A module-level function is found again by its dotted name in any process; a lambda or a
    # closure is not, and its code alone would not capture what it closes over.
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    bound = getattr(value, "__self__", None)  # a bound method depends on its object's state
    if not module or not qualname or "<" in qualname or bound is not None:
        raise Uncacheable(f"{type(value).__name__} {qualname!r} has no stable name to key by")
    return f"{module}.{qualname}"


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


def _headers(value: Any) -> Any:
    return jsonable(answer_headers(value))


def clean_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Call kwargs (or ``additional_kwargs``) as key material: all but transport and secrets."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in CALL_TRANSPORT_FIELDS or SECRET_FIELD.search(name):
            continue
        out[name] = _headers(value) if name in HEADER_FIELDS else jsonable(value)
    return out


def _setting(name: str, value: Any) -> Any:
    if name in HEADER_FIELDS:
        return _headers(value)
    if name == "additional_kwargs" and isinstance(value, Mapping):
        return clean_kwargs(value)
    if callable(value) and not isinstance(value, BaseModel | type):
        return {"__callable__": _callable_name(value)}
    return jsonable(value)


def _configuration(model: Any, deny: frozenset[str]) -> dict[str, Any]:
    """Every declared (and extra) field of a pydantic model, minus ``deny`` and secrets."""
    extra = getattr(model, "model_extra", None) or {}
    names = [*getattr(type(model), "model_fields", {}), *extra]
    params: dict[str, Any] = {}
    for name in names:
        if name in deny or SECRET_FIELD.search(name):
            continue
        value = getattr(model, name, None)
        if isinstance(value, SecretStr | SecretBytes):
            continue
        params[name] = _setting(name, value)
    return params


def request_state(llm: Any) -> dict[str, Any]:
    """Per-object state an LLM sends with every request; also keyed under a ``model_id``.

    :raises Uncacheable: the model chains server-side conversation state between calls, which
        a replayed answer would not advance.
    """
    if getattr(llm, "track_previous_responses", False) is True:
        raise Uncacheable("the model chains server-side conversation state between calls")
    private = getattr(llm, "__pydantic_private__", None) or {}
    return {n: jsonable(private[n]) for n in _STATE_ATTRS if private.get(n) is not None}


def llm_identity(llm: Any) -> dict[str, Any]:
    """Class, full configuration and request state of an LLM, without transport or secrets."""
    cls = type(llm)
    state = request_state(llm)
    params = _configuration(llm, LLM_TRANSPORT_FIELDS)
    meta = llm.metadata
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": params,
        "state": state,
        "meta": {"model_name": meta.model_name, "chat": meta.is_chat_model,
                 "role": str(getattr(meta, "system_role", ""))},
    }  # fmt: skip


def _file_digest(path: Any) -> dict[str, str]:
    """What a block's file holds now: the provider is sent the bytes, not the path."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise Uncacheable(f"cannot read {path!s} to key it by content ({exc})") from exc
    return {"sha256": hashlib.sha256(data).hexdigest()}


def messages_for_key(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as JSON, as the provider sees them.

    Provider prompt-caching markers (``CachePoint``) are dropped: they never change answers.
    A block that points at a file (``ImageBlock(path=...)``, audio, documents, video) is keyed
    by the file's current bytes, since overwriting the file changes what is sent. Ids are kept:
    in LlamaIndex messages they are content (a Responses ``item_reference``, a reasoning item),
    never a per-run message id.
    """
    out = []
    for message in messages:
        data = message.model_dump(mode="json")
        blocks = data.get("blocks")
        if isinstance(blocks, list):
            kept = []
            for dumped, block in zip(blocks, message.blocks, strict=False):
                if isinstance(block, CachePoint):
                    continue
                path = getattr(block, "path", None)
                if path is not None and isinstance(dumped, dict):
                    inline = any(getattr(block, f, None) for f in _BINARY_FIELDS)
                    dumped = {**dumped, "path": None if inline else _file_digest(path)}
                kept.append(dumped)
            data["blocks"] = kept
        out.append(data)
    return out


def embedding_identity(model: Any) -> str:
    """A digest of an embedding model's class and whole configuration (endpoint included).

    :raises Uncacheable: a setting has no exact key form (pass ``model_id=`` instead).
    """
    cls = type(model)
    params = _configuration(model, EMBED_TRANSPORT_FIELDS)
    return digest({"class": f"{cls.__module__}.{cls.__qualname__}", "params": params})[:32]
