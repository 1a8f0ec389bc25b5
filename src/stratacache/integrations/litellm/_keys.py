"""Order-independent cache keys for litellm requests (litellm#40128).

litellm's ``Cache.get_cache_key`` concatenates parameters in keyword-argument order, so
``completion(model=m, messages=x)`` and ``completion(messages=x, model=m)`` miss each other. Our
key is :func:`stratacache.make_key` over the same request: every OpenAI/provider parameter that
changes the answer counts, including provider-specific ones litellm leaves out unless a global
flag is set (litellm#42400); litellm's own plumbing (logging objects, call ids, credentials,
``api_base``, mock responses, cache controls) and transport settings do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm.litellm_core_utils.model_param_helper import ModelParamHelper
from litellm.types.utils import is_litellm_owned_kwarg

from stratacache.keys import make_key

__all__ = ["UNCACHEABLE", "request_key"]

#: Prefix of the key given to a request whose parameters cannot be hashed; the backend never
#: reads or writes such keys (litellm calls the key function outside its own try/except).
UNCACHEABLE = "sc-uncacheable:"

#: Not owned by litellm by name, but transport or litellm plumbing all the same.
_NOT_ANSWER = frozenset(
    {
        "parent_otel_span",
        "litellm_params",
        "litellm_metadata",
        "metadata",
        "base_url",
        "extra_headers",
        "timeout",
        "preset_cache_key",
        "cache_key",
        "proxy_server_request",
        "secret_fields",
    }
)


def request_key(kwargs: Mapping[str, Any], model: Any) -> str:
    """The canonical key of one litellm request (``model`` already resolved to its group)."""
    api_params = ModelParamHelper.get_all_llm_api_params()
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if value is None or name in ("model", "messages") or name in _NOT_ANSWER:
            continue
        if name in api_params or not is_litellm_owned_kwarg(name):
            params[name] = value
    return make_key(model=model, messages=kwargs.get("messages"), namespace="litellm", **params)
