"""The semantic layer of :class:`~stratacache.litellm.LiteLLMCache`: what it may match, and in
which partition.

Only the text of the **last user message** is compared semantically. Everything else that can
change the answer must match exactly, so it goes into the ``scope`` (the partition of
:class:`~stratacache.semantic.SemanticCache`):

* the request's exact key computed by the cache's own key function with the last message's
  text blanked out: the model (or caching group), every answer-changing keyword (temperature,
  tools, response format, ``user``...), the system prompt and **every earlier turn verbatim**,
  the last message's role and other fields, and litellm's per-call cache namespace;
* the **tenant**: the request's ``user`` and the proxy's key, team, org, user and end-user ids
  when litellm carries them in ``metadata``/``litellm_metadata``, plus the ``tenant`` given to
  ``install()`` (a string, or a zero-argument callable asked on every call). Semantic entries
  are therefore shared within one tenant only.

A request is left to the exact layer alone when its last message is not a user message (a tool
result, an assistant prefill), when that message is not plain text (images, audio, files),
when it asks for several choices (``n > 1``), or when it is not a chat completion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stratacache.integrations._shared import Tenant, resolve_tenant

__all__ = ["TENANT_FIELDS", "last_user_text", "request_tenant", "skip_reason"]


#: Proxy metadata fields naming who sent the request (litellm's own semantic scope uses the
#: key, team and org ids, plus the end user for ``semantic_cache_scope="end_user"``; here all of
#: them always count).
TENANT_FIELDS = (
    "user_api_key_hash",
    "user_api_key",
    "user_api_key_team_id",
    "user_api_key_org_id",
    "user_api_key_user_id",
    "user_api_key_end_user_id",
)

_METADATA = ("metadata", "litellm_metadata")


def _as_dict(message: Any) -> dict[str, Any] | None:
    if isinstance(message, Mapping):
        return dict(message)
    dump = getattr(message, "model_dump", None)
    if callable(dump):
        data = dump()
        return data if isinstance(data, dict) else None
    return None


def last_user_text(messages: Any) -> str | None:
    """The text of the last message if it is a plain-text user message, else None."""
    if not isinstance(messages, list | tuple) or not messages:
        return None
    last = _as_dict(messages[-1])
    if last is None or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list | tuple) and content:
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                return None
            if not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        return None
    return text if text.strip() else None


def skip_reason(kwargs: Mapping[str, Any]) -> str | None:
    """Why this request stays out of the semantic layer, or None when it may use it."""
    if "messages" not in kwargs or "input" in kwargs or "prompt" in kwargs:
        return "not_chat"
    n = kwargs.get("n")
    if n is not None and n != 1:
        return "n"
    if last_user_text(kwargs.get("messages")) is None:
        return "not_user_text"
    return None


def scope_messages(messages: Any) -> list[Any]:
    """The messages with the last one's content blanked: what the scope holds of them."""
    items = list(messages)
    last = _as_dict(items[-1]) or {}
    last["content"] = ""
    return [*items[:-1], last]


def request_tenant(kwargs: Mapping[str, Any], default: Tenant) -> dict[str, Any]:
    """Who the request is for: ``user``, the proxy ids found in its metadata, and ``default``.

    Raises whatever a callable ``default`` raises, and ConfigurationError when it returns
    neither a str nor None (the callers then leave the request uncached).
    """
    sources: list[Mapping[str, Any]] = []
    params = kwargs.get("litellm_params")
    for holder in (kwargs, params if isinstance(params, Mapping) else {}):
        for name in _METADATA:
            meta = holder.get(name)
            if isinstance(meta, Mapping):
                sources.append(meta)
    ids: dict[str, Any] = {}
    for name in TENANT_FIELDS:
        for meta in sources:
            value = meta.get(name)
            if value is not None:
                ids[name] = str(value)
                break
    user = kwargs.get("user")
    return {
        "tenant": resolve_tenant(default),
        "user": None if user is None else str(user),
        "ids": ids,
    }
