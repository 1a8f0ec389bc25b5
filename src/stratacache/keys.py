"""Canonical, versioned cache keys: pure functions, no I/O.

A key must be equal for two requests exactly when the provider would give the same answer.
So everything that changes the answer (model, every sampling parameter, tools, tool_choice,
response format, system prompt, the full history) is hashed, and everything that only
changes how the request travels (stream flags, timeouts, credentials, request and message
ids) is dropped. Dropping too little costs hit rate; dropping too much serves wrong answers,
so the transport list is deliberately short and explicit.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from stratacache.errors import ConfigurationError, SerializationError

__all__ = [
    "CREDENTIAL_HEADERS",
    "HEADER_FIELDS",
    "KEY_VERSION",
    "MESSAGE_VOLATILE_FIELDS",
    "TRANSPORT_FIELDS",
    "answer_headers",
    "canonical_json",
    "canonicalize",
    "digest",
    "make_key",
]

#: Bumped whenever canonicalisation changes, so old entries become unreachable instead of wrong.
KEY_VERSION = "sc1"

#: Top-level request fields that never change the answer.
TRANSPORT_FIELDS: frozenset[str] = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "request_timeout",
        "max_retries",
        "api_key",
        "openai_api_key",
        "anthropic_api_key",
        "azure_ad_token",
        "organization",
        "request_id",
        "idempotency_key",
        "metadata",
        "callbacks",
        "tags",
        "run_id",
        "run_name",
        "litellm_call_id",
        "litellm_logging_obj",
        "caching",
        "cache",
        "no_cache",
    }
)

#: Request parameters holding HTTP headers or query parameters. They are in the key, because a
#: header (``OpenAI-Beta``, ``anthropic-beta``) or a query parameter (``api-version``) can
#: select provider behaviour; only the entries named in :data:`CREDENTIAL_HEADERS` are dropped.
HEADER_FIELDS: frozenset[str] = frozenset(
    {"headers", "extra_headers", "default_headers", "default_query", "extra_query"}
)

#: Header and query-parameter names (case-insensitive) that carry credentials, per-request ids
#: or tracing, never an answer-changing option. Names starting with one of
#: :data:`_CREDENTIAL_HEADER_PREFIXES` (SDK telemetry, trace propagation) are dropped too.
CREDENTIAL_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "api_key",
        "x-api-key",
        "x-goog-api-key",
        "key",
        "cookie",
        "openai-organization",
        "openai-project",
        "idempotency-key",
        "request-id",
        "x-request-id",
        "x-client-request-id",
        "traceparent",
        "tracestate",
        "baggage",
        "x-amzn-trace-id",
        "user-agent",
    }
)
_CREDENTIAL_HEADER_PREFIXES = ("x-stainless-", "x-datadog-", "x-b3-")

#: Per-message fields that differ between runs of the same conversation (LangGraph assigns new
#: message ids on every run; provider metadata records the previous call, not the content).
MESSAGE_VOLATILE_FIELDS: frozenset[str] = frozenset(
    {"id", "message_id", "response_metadata", "usage_metadata", "created", "created_at"}
)

_NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _canon_float(value: float) -> Any:
    # 1 and 1.0 mean the same temperature; NaN/inf are not JSON, so they get stable names.
    if math.isnan(value):
        return "__nan__"
    if math.isinf(value):
        return "__inf__" if value > 0 else "__-inf__"
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def canonicalize(value: Any) -> Any:
    """Return a JSON-compatible structure that is equal for semantically equal inputs.

    Strings are NFC-normalised (the same text typed on two systems must hash the same),
    floats that are whole numbers become ints, tuples become lists, sets become sorted lists,
    pydantic models and dataclasses become dicts. Objects without a stable representation are
    rejected rather than ``repr``-ed: a repr with a memory address would silently never hit.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, float):
        return _canon_float(value)
    if isinstance(value, Mapping):
        out = {unicodedata.normalize("NFC", str(k)): canonicalize(v) for k, v in value.items()}
        if len(out) != len(value):
            # Two keys that are one after normalising ("é" composed and decomposed, 1 and
            # "1"): which value survived would depend on insertion order, and one request
            # would share the key of another. Such a request is not keyable.
            raise SerializationError(
                "cannot build a cache key from a mapping whose keys collide once normalised "
                "(the same text in two Unicode forms, or 1 and '1')"
            )
        return out
    if isinstance(value, list | tuple):
        return [canonicalize(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [canonicalize(v) for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": bytes(value).hex()}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return canonicalize(model_dump(mode="json"))
    if hasattr(type(value), "__dataclass_fields__"):
        import dataclasses

        return canonicalize(dataclasses.asdict(value))
    raise SerializationError(
        f"cannot build a cache key from a {type(value).__name__!r}; pass JSON-compatible "
        "values (str, int, float, bool, None, lists, dicts), a pydantic model or a dataclass"
    )


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no whitespace, NFC text.

    :raises SerializationError: for a value that cannot be keyed (see :func:`canonicalize`),
        nested too deeply, or holding an integer too long to print.
    """
    return _keyable_text(lambda: canonicalize(value))


def _keyable_text(build: Any) -> str:
    """``json.dumps`` of ``build()`` with sorted keys, its failures as SerializationError.

    A RecursionError (thousands of nested lists) or Python's 4300-digit limit on printing an
    int would otherwise escape as themselves: a key is built on the caller's request path, and
    those are not the clear error the adapters turn into "this call stays uncached".
    """
    try:
        return json.dumps(build(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except RecursionError as exc:
        raise SerializationError(
            "cannot build a cache key from a value nested this deeply"
        ) from exc
    except ValueError as exc:
        raise SerializationError(f"cannot build a cache key from this value ({exc})") from exc


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text``; a lone surrogate (``os.fsdecode`` of a non-UTF-8 name, a JSON
    ``"\\ud800"`` escape) becomes its 3-byte form. That is never valid UTF-8, so it cannot
    collide with another text, and any other text hashes exactly as before."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def digest(value: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(_utf8(canonical_json(value))).hexdigest()


def _strip_messages(messages: Any) -> Any:
    """Drop volatile per-message fields and renumber tool-call ids by first appearance.

    Tool-call ids (``call_abc123``) are minted by the provider on every run, so a history that
    replays an earlier tool call would never hit. Only their pairing matters, so each distinct
    id is replaced by its order of appearance; the structure of the conversation is kept.
    """
    if not isinstance(messages, list | tuple):
        return canonicalize(messages)
    ids: dict[str, str] = {}

    def alias(raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        return ids.setdefault(raw, f"call_{len(ids)}")

    out: list[Any] = []
    for message in messages:
        msg = canonicalize(message)
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        msg = {k: v for k, v in msg.items() if k not in MESSAGE_VOLATILE_FIELDS}
        if "tool_call_id" in msg:
            msg["tool_call_id"] = alias(msg["tool_call_id"])
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            msg["tool_calls"] = [
                {**call, "id": alias(call.get("id"))} if isinstance(call, dict) else call
                for call in calls
            ]
        out.append(msg)
    return out


def answer_headers(headers: Any) -> Any:
    """Headers (or query parameters) as key material: lower-cased names, credentials, ids and
    tracing dropped (:data:`CREDENTIAL_HEADERS`). What is not a mapping is returned as is."""
    if not isinstance(headers, Mapping):
        return headers
    out = {}
    for name, value in headers.items():
        lowered = str(name).lower()
        if lowered in CREDENTIAL_HEADERS or lowered.startswith(_CREDENTIAL_HEADER_PREFIXES):
            continue
        out[lowered] = value
    return out


def _request_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in params.items():
        if name in TRANSPORT_FIELDS:
            continue
        if name in HEADER_FIELDS:
            value = answer_headers(value)
            if not value:  # only credentials: the same request as no headers at all
                continue
        out[name] = value
    return out


def check_namespace(namespace: str) -> str:
    """Validate a namespace: it becomes part of every stored key."""
    if not namespace or not set(namespace) <= _NAMESPACE_CHARS or len(namespace) > 64:
        raise ConfigurationError(
            f"invalid namespace {namespace!r}: use 1-64 characters from letters, digits, "
            "'_', '-', '.'"
        )
    return namespace


def make_key(
    *, model: str | None = None, messages: Any = None, namespace: str = "llm", **params: Any
) -> str:
    """Derive the canonical key of an LLM request.

    ``model`` and ``messages`` are named for readability; every other keyword is a request
    parameter. Parameters in :data:`TRANSPORT_FIELDS` are ignored, headers keep all but the
    entries in :data:`CREDENTIAL_HEADERS`; everything else is hashed, order-independently. The
    result looks like ``sc1:llm:<sha256 hex>``: the version prefix makes old keys unreachable
    after a canonicalisation change, and the namespace keeps different kinds of entries (chat,
    embeddings, retrieval) apart.

    :raises SerializationError: for a value that cannot be keyed (an object without a stable
        representation, nesting thousands deep, an integer of thousands of digits).

    Example::

        >>> a = make_key(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        ...              temperature=0, stream=True)
        >>> a == make_key(temperature=0.0, model="gpt-4o-mini",
        ...               messages=[{"content": "hi", "role": "user", "id": "run-7"}])
        True
    """
    check_namespace(namespace)

    def payload() -> dict[str, Any]:
        out: dict[str, Any] = canonicalize(_request_params(params))
        out["model"] = canonicalize(model)
        out["messages"] = _strip_messages(messages)  # canonicalised on the way
        return out

    text = _keyable_text(payload)
    return f"{KEY_VERSION}:{namespace}:{hashlib.sha256(_utf8(text)).hexdigest()}"
