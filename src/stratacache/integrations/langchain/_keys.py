"""Cache keys from LangChain's ``(prompt, llm_string)`` pair.

LangChain hands a cache two strings built for equality, not for meaning: ``prompt`` is the
``dumps`` JSON of the messages (with history metadata and provider tool-call ids) and
``llm_string`` is model JSON plus a ``repr`` of the call kwargs (order-dependent for nested
dicts, and including transport settings). Both are parsed back into structures here, stripped
of what never changes an answer, and hashed by :func:`stratacache.make_key`, so the same
conversation hits across runs, processes and LangGraph threads while tools, ``tool_choice``,
``stop`` and every sampling parameter stay in the key.
"""

from __future__ import annotations

import ast
import json
from typing import Any, Final

from stratacache.keys import TRANSPORT_FIELDS, make_key

__all__ = ["NON_SEMANTIC_FIELDS", "llm_cache_key"]

#: Model fields and call kwargs that change how a request travels, not what it answers.
NON_SEMANTIC_FIELDS: Final[frozenset[str]] = TRANSPORT_FIELDS | {
    "streaming",
    "stream_usage",
    "disable_streaming",
    "openai_proxy",
    "http_client",
    "http_async_client",
    "default_headers",
    "default_query",
    "max_concurrency",
    "verbose",
    "rate_limiter",
}

_DECODER: Final = json.JSONDecoder()
_MEMO_MAX: Final = 4096
_memo: dict[tuple[str, str], str] = {}
_llm_memo: dict[str, Any] = {}


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get("lc") == 1 and value.get("type") == "secret"


def _model_part(serialized: Any) -> Any:
    if not isinstance(serialized, dict):
        return serialized
    kwargs = serialized.get("kwargs")
    clean = (
        {k: v for k, v in kwargs.items() if k not in NON_SEMANTIC_FIELDS and not _is_secret(v)}
        if isinstance(kwargs, dict)
        else kwargs
    )
    return {"id": serialized.get("id"), "kwargs": clean}


def _params_part(text: str) -> Any:
    """The call kwargs from their ``str(sorted(dict.items()))`` rendering.

    ``ast.literal_eval`` evaluates literals only, never code. Kwargs that are not literals (a
    pydantic class for structured output renders as ``<class ...>``) keep the raw text, which is
    still exact, only order-dependent.
    """
    try:
        pairs = ast.literal_eval(text)
        params = dict(pairs)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return {"raw": text}
    return {str(k): v for k, v in params.items() if k not in NON_SEMANTIC_FIELDS}


def _normalize_llm_string(llm_string: str) -> Any:
    cached = _llm_memo.get(llm_string)
    if cached is not None:
        return cached
    model: Any = None
    rest = llm_string
    if llm_string.startswith("{"):
        try:
            serialized, end = _DECODER.raw_decode(llm_string)
        except ValueError:
            serialized, end = None, 0
        if end and llm_string.startswith("---", end):
            model = _model_part(serialized)
            rest = llm_string[end + 3 :]
    out = {"model": model, "params": _params_part(rest)}
    if len(_llm_memo) >= _MEMO_MAX:
        _llm_memo.clear()
    _llm_memo[llm_string] = out
    return out


def _normalize_message(item: Any) -> Any:
    if not (
        isinstance(item, dict) and item.get("lc") == 1 and isinstance(item.get("kwargs"), dict)
    ):
        return item
    ident = item.get("id")
    kwargs = dict(item["kwargs"])
    kind = kwargs.pop("type", None) or (ident[-1] if isinstance(ident, list) and ident else None)
    extra = kwargs.get("additional_kwargs")
    if isinstance(extra, dict) and "tool_calls" in extra and kwargs.get("tool_calls"):
        # The provider's raw copy of `tool_calls`, with the same provider-minted ids.
        kwargs["additional_kwargs"] = {k: v for k, v in extra.items() if k != "tool_calls"}
    return {"type": kind, **kwargs}


def _normalize_prompt(prompt: str) -> Any:
    """Chat prompts become stripped message dicts; an LLM's raw prompt text stays as it is."""
    if not prompt.startswith("[{"):
        return prompt
    try:
        items = json.loads(prompt)
    except ValueError:
        return prompt
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and i.get("lc") == 1 for i in items
    ):
        return prompt
    return [_normalize_message(i) for i in items]


def llm_cache_key(prompt: str, llm_string: str) -> str:
    """The stratacache key of a LangChain cache entry (memoised: the hit path computes it once).

    :raises stratacache.SerializationError: if the parsed pair holds something unhashable.
    """
    pair = (prompt, llm_string)
    key = _memo.get(pair)
    if key is None:
        key = make_key(
            model=None,
            messages=_normalize_prompt(prompt),
            namespace="lc",
            llm=_normalize_llm_string(llm_string),
        )
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[pair] = key
    return key
