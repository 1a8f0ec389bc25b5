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
import re
import sys
from typing import Any, Final

from langchain_core.language_models import BaseChatModel, BaseLLM
from pydantic import BaseModel

from stratacache.keys import HEADER_FIELDS, TRANSPORT_FIELDS, answer_headers, make_key

__all__ = ["NON_SEMANTIC_FIELDS", "calling_llm_identity", "llm_cache_key"]

#: Model fields and call kwargs that change how a request travels, not what it answers. On top
#: of the core's TRANSPORT_FIELDS (timeouts, retries, stream flags, credentials, ids, logging
#: metadata): LangChain's stream switches, the HTTP/SDK client objects and proxy (built from,
#: or carrying, the configuration already in the key), and framework plumbing that never
#: reaches the provider. Everything else, including fields no release has shipped yet, is in
#: the key; tests/langchain/test_keys.py checks every field of ChatOpenAI against this list.
#: Documented in docs/langchain.md ("What is in the key").
NON_SEMANTIC_FIELDS: Final[frozenset[str]] = TRANSPORT_FIELDS | {
    "streaming",
    "stream_usage",
    "disable_streaming",
    "stream_chunk_timeout",
    "openai_proxy",
    "http_client",
    "http_async_client",
    "http_socket_options",
    "client",
    "async_client",
    "root_client",
    "root_async_client",
    "max_concurrency",
    "verbose",
    "rate_limiter",
    "custom_get_token_ids",
    "profile",
}


_DECODER: Final = json.JSONDecoder()
_CLASS_REPR: Final = re.compile(r"<class '([\w.<>]+)'>")
_OPAQUE_REPR: Final = re.compile(r"<[A-Za-z_][\w.]*[ '>]|\b0x[0-9a-fA-F]{4,}")
#: Stands in for a class while the rest of the kwargs are parsed (never a real kwarg value).
_CLASS_MARK: Final = "\x00stratacache-class-"
_MEMO_MAX: Final = 4096
_memo: dict[tuple[str, str], str] = {}
_llm_memo: dict[str, Any] = {}


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get("lc") == 1 and value.get("type") == "secret"


def _model_part(serialized: Any) -> Any:
    if not isinstance(serialized, dict):
        return serialized
    kwargs = serialized.get("kwargs")
    if not isinstance(kwargs, dict):
        return {"id": serialized.get("id"), "kwargs": kwargs}
    return {"id": serialized.get("id"), "kwargs": _answer_fields(kwargs)}


def _answer_fields(fields: dict[Any, Any]) -> dict[str, Any]:
    """Model fields or call kwargs minus the deny-list and secrets; headers and query maps
    (``default_headers``, ``extra_headers``, ...) stay, minus credential entries: a header or
    ``api-version`` can select provider behaviour."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in NON_SEMANTIC_FIELDS or _is_secret(value):
            continue
        if name in HEADER_FIELDS:
            value = answer_headers(value)
            if not value:
                continue
        out[str(name)] = value
    return out


class _Unkeyable(ValueError):
    """The call kwargs cannot be keyed by content: the call is served uncached."""


def _live_models(qualified: str) -> list[type[BaseModel]]:
    """Every live pydantic class whose ``str()`` names ``qualified`` (redefinitions included)."""
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [BaseModel]
    seen: set[type[BaseModel]] = set()
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
                if f"{sub.__module__}.{sub.__qualname__}" == qualified:
                    found.append(sub)
    return found


def _class_schema(qualified: str) -> Any:
    """A class kwarg (``response_format=Model``) keyed by its JSON schema, never its name.

    LangChain renders the class as ``<class 'mod.Name'>``, so the name is all that reaches the
    cache. It is resolved among the live pydantic classes; when none or several differing
    classes carry that name (a redefinition), the call cannot be keyed soundly and is uncached.
    """
    schemas = []
    for cls in _live_models(qualified):
        schema = cls.model_json_schema()
        if schema not in schemas:
            schemas.append(schema)
    if len(schemas) != 1:
        reason = "no live pydantic class" if not schemas else "several different classes"
        raise _Unkeyable(f"{reason} named {qualified}")
    return {"json_schema": schemas[0]}


def _params_part(text: str) -> Any:
    """The call kwargs from their ``str(sorted(dict.items()))`` rendering.

    ``ast.literal_eval`` evaluates literals only, never code. A class reference is replaced by
    its schema (see :func:`_class_schema`). An object's ``<...>`` repr (a memory address, or a
    name whose content is unknown) makes the call unkeyable rather than keyed on that text;
    other text that is not a literal is kept whole.
    """
    classes: dict[str, Any] = {}

    def placeholder(match: re.Match[str]) -> str:
        mark = f"{_CLASS_MARK}{len(classes)}"
        classes[mark] = _class_schema(match.group(1))
        return repr(mark)

    literal = _CLASS_REPR.sub(placeholder, text)
    try:
        params = dict(ast.literal_eval(literal))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        if classes or _OPAQUE_REPR.search(literal):
            raise _Unkeyable(f"call kwargs hold an object repr: {text[:200]}") from exc
        # Text from elsewhere (a custom caller's own llm_string): exact, only order-dependent.
        return {"raw": text}
    out = _answer_fields(params)
    return _substitute(out, classes) if classes else out


def _substitute(node: Any, classes: dict[str, Any]) -> Any:
    if isinstance(node, str):
        return classes.get(node, node)
    if isinstance(node, dict):
        return {k: _substitute(v, classes) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_substitute(v, classes) for v in node]
    return node


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
    if not _CLASS_REPR.search(rest):
        # The memo maps text to content; a class name's content can change (redefinition).
        _remember(_llm_memo, llm_string, out)
    return out


def _remember(memo: dict[Any, Any], text: Any, value: Any) -> None:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[text] = value


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


#: Compared by identity, never put in a set: a code object's hash is recomputed on every call
#: from its constants, names and bytecode (~0.5 µs for a large method like these).
_LLM_ENTRY_CODES: Final = (BaseLLM.generate.__code__, BaseLLM.agenerate.__code__)
#: Where a chat model consults the cache: seeing one of these ends the walk at once, so the chat
#: hit path (the hot one) pays two or three frame hops instead of the full walk.
_CHAT_ENTRY_CODES: Final = tuple(
    method.__code__
    for name in ("_generate_with_cache", "_agenerate_with_cache")
    if (method := getattr(BaseChatModel, name, None)) is not None and hasattr(method, "__code__")
)
_FRAMES_UP: Final = 12


def calling_llm_identity() -> Any:
    """The configuration of the text-completion model consulting the cache, or ``None``.

    LangChain keys a ``BaseLLM`` by ``_identifying_params`` only, which for ``OpenAI`` leaves
    out the endpoint, headers and query: two deployments would share answers. The ``BaseCache``
    interface passes no model, so the model is read from the ``BaseLLM.generate`` /
    ``agenerate`` frame that is calling the cache (a few frames up, sync or awaiting). Chat
    models need none of this: their ``llm_string`` carries the serialized model.
    """
    try:
        # The hot case first: LLMCache._key <- lookup <- a chat model's _generate_with_cache.
        # Asking for that one frame materialises one frame object instead of three; frames 1
        # and 2 (_key and lookup) cannot be BaseLLM.generate, so the answer is the walk's.
        probe = sys._getframe(3).f_code
        for known in _CHAT_ENTRY_CODES:
            if probe is known:
                return None
    except ValueError:  # a shallower stack: the walk below handles it
        pass
    frame = sys._getframe(1)
    for _ in range(_FRAMES_UP):
        code = frame.f_code
        for known in _CHAT_ENTRY_CODES:
            if code is known:
                return None
        if code is _LLM_ENTRY_CODES[0] or code is _LLM_ENTRY_CODES[1]:
            llm = frame.f_locals.get("self")
            if isinstance(llm, BaseLLM) and llm.is_lc_serializable():
                return _model_part(llm._serialized)
            return None
        if frame.f_back is None:
            return None
        frame = frame.f_back
    return None


def llm_cache_key(prompt: str, llm_string: str, model: Any = None) -> str:
    """The stratacache key of a LangChain cache entry (memoised: the hit path computes it once).

    Memos are keyed by the strings themselves (never by object identity); text that names a
    class is not memoised, because what the name stands for can change.

    :param model: the calling model's configuration when ``llm_string`` lacks it (a
        ``BaseLLM``; see :func:`calling_llm_identity`).
    :raises stratacache.SerializationError: if the parsed pair holds something unhashable.
    :raises ValueError: if the call kwargs cannot be keyed by content (the call stays uncached).
    """
    if model is not None:
        # Not memoised: the memo is keyed by text, and the text does not hold this model.
        return make_key(
            model=model,
            messages=_normalize_prompt(prompt),
            namespace="lc",
            llm=_normalize_llm_string(llm_string),
        )
    pair = (prompt, llm_string)
    key = _memo.get(pair)
    if key is None:
        key = make_key(
            model=None,
            messages=_normalize_prompt(prompt),
            namespace="lc",
            llm=_normalize_llm_string(llm_string),
        )
        if not _CLASS_REPR.search(llm_string):
            _remember(_memo, pair, key)
    return key
