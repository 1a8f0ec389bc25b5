"""Generations and documents in and out of the cache, safely and fast.

Stored form: LangChain's own serializer (``dumpd`` → JSON) behind a short tag, so entries are
readable by any process and never pickled. Reading uses ``loads`` with an explicit allow-list
and ``secrets_from_env=False``: a shared cache is an untrusted input surface.

``loads`` validates every object through pydantic and costs ~200 µs per chat generation, which
alone would be most of a cache hit. So each distinct stored payload is revived once, checked,
and turned into a *recipe* (plain JSON fields per object); later hits on the same bytes rebuild
fresh, independent objects from the recipe with ``model_construct`` in ~15 µs. Fresh objects
matter: LangChain assigns into the generations it gets back from a cache, and users mutate
messages; nothing handed out may alias what the next hit returns.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Sequence
from typing import Any, Final

import orjson
from langchain_core.documents import Document
from langchain_core.load import dumpd, loads
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)
from pydantic import BaseModel

from stratacache.integrations._cacheable import refused_finish

__all__ = [
    "GENERATIONS_TAG",
    "Uncacheable",
    "decode_documents",
    "decode_generations",
    "decode_hit",
    "encode_documents",
    "encode_generations",
    "usage_tokens",
]

GENERATIONS_TAG: Final = b"sclc1\n"
_ALLOWED: Final = [
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
]
# `loads` is marked beta and warns on every call; the undecorated function is the same code.
_loads: Any = getattr(loads, "__wrapped__", loads)
_RECIPE_BUDGET: Final = 32 * 1024**2
#: Message ids minted for hits: unique per process run and call, ~30x cheaper than uuid4().
_ID_PREFIX: Final = os.urandom(6).hex()
_id_counter = itertools.count()


class Uncacheable(Exception):
    """The value must not be stored (empty, an error, or not safely serializable)."""


def _scan_unserializable(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("lc") == 1 and node.get("type") == "not_implemented":
            return True
        return any(_scan_unserializable(v) for v in node.values())
    if isinstance(node, list):
        return any(_scan_unserializable(v) for v in node)
    return False


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _is_empty(gen: Generation) -> bool:
    if isinstance(gen, ChatGeneration):
        msg = gen.message
        if msg.content:
            return False
        if isinstance(msg, AIMessage) and (msg.tool_calls or msg.invalid_tool_calls):
            return False
        return not msg.additional_kwargs.get("function_call")
    return not gen.text


def _finish_reasons(gen: Generation) -> list[Any]:
    """Where LangChain records why a generation ended: ``generation_info`` (``invoke``) and the
    message's ``response_metadata`` (merged streams, which carry no generation_info)."""
    reasons = [(gen.generation_info or {}).get("finish_reason")]
    if isinstance(gen, ChatGeneration):
        reasons.append(gen.message.response_metadata.get("finish_reason"))
    return reasons


def _unfinished_openai(gen: Generation, reasons: list[Any]) -> bool:
    """An OpenAI Chat Completions answer without a finish reason: langchain-openai records
    one for every finished answer (``invoke`` and the last stream chunk), so its absence means
    a stream that ended without finishing. Other providers name it differently (Anthropic's
    ``stop_reason``, the Responses API's ``status``), so only this one is judged."""
    if not isinstance(gen, ChatGeneration) or any(reasons):
        return False
    meta = gen.message.response_metadata
    return meta.get("model_provider") == "openai" and "status" not in meta


def _storable_parsed(parsed: Any) -> Any:
    """``parsed`` (structured output) in a form that survives JSON and that LangChain's
    parsers accept on a hit: ``_oai_structured_outputs_parser`` builds the schema from a dict.

    :raises Uncacheable: if the value would not come back equal, so a hit could not be parsed
        into the same object.
    """
    if _jsonable(parsed):
        return parsed
    if isinstance(parsed, BaseModel):
        try:
            dumped = parsed.model_dump(mode="json")
            if type(parsed).model_validate(dumped) == parsed:
                return dumped
        except Exception as exc:
            raise Uncacheable(f"structured output does not round-trip ({exc})") from exc
    raise Uncacheable(f"structured output {type(parsed).__name__} cannot be stored")


def _prepare(gen: Generation) -> Generation:
    """A copy fit for storage: no message id (a fresh one is minted per hit, as a real call
    would), and the parsed structured-output object as JSON: a hit must carry what the
    framework's parser reads (``additional_kwargs["parsed"]``), or the hit would raise."""
    if not isinstance(gen, ChatGeneration):
        return gen
    msg = gen.message
    update: dict[str, Any] = {}
    if msg.id is not None:
        update["id"] = None
    parsed = msg.additional_kwargs.get("parsed")
    if parsed is not None:
        stored = _storable_parsed(parsed)
        if stored is not parsed:
            update["additional_kwargs"] = {**msg.additional_kwargs, "parsed": stored}
    if not update:
        return gen
    return gen.model_copy(update={"message": msg.model_copy(update=update)})


def encode_generations(generations: Sequence[Generation]) -> tuple[bytes, list[Generation]]:
    """The stored bytes, and the revived generations (proof that reading will work).

    :raises Uncacheable: for empty results, errors, or values that would not revive.
    """
    if not isinstance(generations, Sequence) or not generations:
        raise Uncacheable("empty result")
    for gen in generations:
        if not isinstance(gen, Generation):
            raise Uncacheable(f"not a Generation: {type(gen).__name__}")
        if _is_empty(gen):
            raise Uncacheable("empty generation")
        reasons = _finish_reasons(gen)
        reason = refused_finish(reasons)
        if reason is not None:
            raise Uncacheable(f"generation finished with {reason!r}")
        if _unfinished_openai(gen, reasons):
            raise Uncacheable("the provider never said the answer finished (no finish_reason)")
    data = dumpd([_prepare(g) for g in generations])
    if _scan_unserializable(data):
        raise Uncacheable("a generation holds an object LangChain cannot serialize")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        revived = _loads(text, allowed_objects=_ALLOWED, secrets_from_env=False)
    except Exception as exc:
        raise Uncacheable(f"the serialized generations do not revive ({exc})") from exc
    return GENERATIONS_TAG + text.encode(), revived


# -- reading ------------------------------------------------------------------------------------

#: How to rebuild a generation: ``("chat", generation class, message class, JSON of
#: [generation fields, generation extras, message fields, message extras], fields set on the
#: generation, fields set on the message)``, ``("text", class, JSON of [fields, extras],
#: fields set)``, or ``("copy", generation)`` for what plain data cannot rebuild (it is
#: deep-copied instead). JSON text, so that every rebuild parses fresh, unshared dicts and
#: lists in a single call.
_Recipe = tuple[Any, ...]
_recipes: dict[bytes, tuple[list[_Recipe], int]] = {}
_recipe_bytes = 0
_recipes_lock = threading.Lock()
_setattr = object.__setattr__


def _plain(obj: BaseModel, skip: str | None = None) -> list[Any]:
    return [{k: v for k, v in obj.__dict__.items() if k != skip}, obj.__pydantic_extra__]


def _revive(cls: Any, fields: dict[str, Any], fields_set: set[str], extra: Any) -> Any:
    """A model object from plain data, assembled the way pydantic's own ``__copy__`` does it:
    ``model_construct`` would re-run every field's default, ~3x slower on a hit."""
    obj = cls.__new__(cls)
    _setattr(obj, "__dict__", fields)
    _setattr(obj, "__pydantic_fields_set__", fields_set)
    _setattr(obj, "__pydantic_extra__", extra)
    _setattr(obj, "__pydantic_private__", None)
    return obj


def _recipe_for(gen: Generation) -> _Recipe:
    """How to rebuild ``gen``; checked once by rebuilding it and comparing."""
    message = getattr(gen, "message", None)
    # Private attributes would need their own copy; none of these classes has any today.
    if gen.__pydantic_private__ is not None or (
        message is not None and message.__pydantic_private__ is not None
    ):
        return ("copy", gen)
    try:
        if type(gen) in (ChatGeneration, ChatGenerationChunk) and type(message) in (
            AIMessage,
            AIMessageChunk,
        ):
            assert message is not None
            blob = orjson.dumps([*_plain(gen, "message"), *_plain(message)])
            recipe: _Recipe = (
                "chat",
                type(gen),
                type(message),
                blob,
                frozenset(gen.__pydantic_fields_set__),
                frozenset({*message.__pydantic_fields_set__, "id"}),
            )
        elif type(gen) in (Generation, GenerationChunk):
            blob = orjson.dumps(_plain(gen))
            recipe = ("text", type(gen), blob, frozenset(gen.__pydantic_fields_set__))
        else:
            return ("copy", gen)
        rebuilt = _build(recipe, 0, "check")
        expected = gen
        if message is not None:
            update = {"message": message.model_copy(update={"id": rebuilt.message.id})}  # type: ignore[attr-defined]
            expected = gen.model_copy(update=update)
        # JSON turns tuples into lists and so on: rebuild only what comes back equal.
        same = rebuilt == expected
    except Exception:  # not plain JSON (TypeError), or a class that does not rebuild
        same = False
    return recipe if same else ("copy", gen)


def _build(recipe: _Recipe, index: int, run: str) -> Generation:
    kind = recipe[0]
    if kind == "chat":
        _, gen_cls, msg_cls, blob, gen_set, msg_set = recipe
        gen_fields, gen_extra, msg_fields, msg_extra = orjson.loads(blob)
        msg_fields["id"] = f"lc_run--{run}-{index}"
        gen_fields["message"] = _revive(msg_cls, msg_fields, set(msg_set), msg_extra)
        return _revive(gen_cls, gen_fields, set(gen_set), gen_extra)  # type: ignore[no-any-return]
    if kind == "text":
        _, cls, blob, fields_set = recipe
        fields, extra = orjson.loads(blob)
        return _revive(cls, fields, set(fields_set), extra)  # type: ignore[no-any-return]
    gen = recipe[1].model_copy(deep=True)
    if isinstance(gen, ChatGeneration):
        gen.message.id = f"lc_run--{run}-{index}"
    return gen  # type: ignore[no-any-return]


def remember(payload: bytes, revived: list[Generation]) -> tuple[list[_Recipe], int]:
    """Recipes for ``payload`` (the stored bytes) and the tokens its usage reports, kept for
    later hits on the same bytes.

    Keyed by the bytes themselves, so a recipe only ever answers for the entry it was made
    from; which entry a key holds is still decided by the cache on every lookup. Bounded by
    :data:`_RECIPE_BUDGET` bytes of payload (all dropped at once when full); thread-safe.
    """
    global _recipe_bytes
    entry = ([_recipe_for(g) for g in revived], usage_tokens(revived))
    with _recipes_lock:
        if payload not in _recipes:
            if _recipe_bytes + len(payload) > _RECIPE_BUDGET:
                _recipes.clear()
                _recipe_bytes = 0
            _recipe_bytes += len(payload)
        _recipes[payload] = entry
    return entry


def decode_hit(payload: Any) -> tuple[list[Generation], int]:
    """Fresh generations from stored bytes (nothing returned is shared with another call),
    and the tokens the hit saved (see :func:`usage_tokens`).

    :raises ValueError: for a foreign, corrupt or disallowed entry.
    """
    entry = _recipes.get(payload) if type(payload) is bytes else None
    if entry is None:
        if not isinstance(payload, bytes) or not payload.startswith(GENERATIONS_TAG):
            raise ValueError("not a stratacache LangChain entry")
        try:
            text = payload[len(GENERATIONS_TAG) :].decode()
            revived = _loads(text, allowed_objects=_ALLOWED, secrets_from_env=False)
        except Exception as exc:
            raise ValueError(f"entry does not revive: {exc}") from exc
        if (
            not isinstance(revived, list)
            or not revived
            or not all(isinstance(g, Generation) for g in revived)
        ):
            raise ValueError("entry is not a list of generations")
        entry = remember(bytes(payload), revived)
    recipes, tokens = entry
    run = f"{_ID_PREFIX}-{next(_id_counter):x}"
    if len(recipes) == 1:  # the common case, without a comprehension's frame
        return [_build(recipes[0], 0, run)], tokens
    return [_build(r, i, run) for i, r in enumerate(recipes)], tokens


def decode_generations(payload: Any) -> list[Generation]:
    """Fresh generations from stored bytes (see :func:`decode_hit`).

    :raises ValueError: for a foreign, corrupt or disallowed entry.
    """
    return decode_hit(payload)[0]


def usage_tokens(generations: Sequence[Generation]) -> int:
    """Tokens a hit saved, from usage metadata (n>1 generations share one usage: the max)."""
    best = 0
    for gen in generations:
        msg = getattr(gen, "message", None)
        usage = getattr(msg, "usage_metadata", None)
        if usage:
            best = max(best, int(usage.get("total_tokens") or 0))
    return best


# -- documents ----------------------------------------------------------------------------------


def encode_documents(docs: Sequence[Document]) -> dict[str, Any]:
    """Documents as plain JSON (page_content, metadata, id).

    :raises Uncacheable: if a document's metadata is not JSON-compatible or the list is empty.
    """
    if not docs:
        raise Uncacheable("no documents")
    out = []
    for doc in docs:
        if type(doc) is not Document:
            raise Uncacheable(f"not a plain Document: {type(doc).__name__}")
        if not _jsonable(doc.metadata):
            raise Uncacheable("document metadata is not JSON-compatible")
        out.append({"c": doc.page_content, "m": doc.metadata, "i": doc.id})
    return {"v": 1, "docs": out}


def decode_documents(value: Any) -> list[Document]:
    """New Document objects (a deep copy by construction).

    :raises ValueError: for a foreign or corrupt entry.
    """
    if (
        not isinstance(value, dict)
        or value.get("v") != 1
        or not isinstance(value.get("docs"), list)
    ):
        raise ValueError("not a stratacache retriever entry")
    docs = []
    for item in value["docs"]:
        if not isinstance(item, dict) or not isinstance(item.get("c"), str):
            raise ValueError("malformed document")
        metadata = item.get("m") or {}
        if not isinstance(metadata, dict):
            raise ValueError("malformed document metadata")
        docs.append(Document(page_content=item["c"], metadata=metadata, id=item.get("i")))
    return docs
