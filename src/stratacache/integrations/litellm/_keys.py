"""Cache keys for litellm requests: everything the call sends, minus a short deny-list.

litellm's own ``Cache.get_cache_key`` is an allow-list (OpenAI parameters plus a few
provider ones) in keyword order: a parameter it does not know (``num_ctx``, litellm#42400;
``prompt_id``/``prompt_variables`` of a prompt template; ``api_base``; the provider) is left
out, so two requests with different answers share one entry, and reordering the keywords
misses (litellm#40128). Here the key is :func:`stratacache.make_key` over *every* keyword the
call received, except :data:`DENY_LIST`: what only changes how the request travels or is
logged. An unknown keyword is therefore in the key (fail closed): at worst it costs hits, it
never serves another request's answer. ``tests/litellm/test_keys.py`` checks every parameter of
``litellm.completion``'s signature against this list, so a parameter a new litellm release adds
fails there until it is classified. The list is documented in ``docs/litellm.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from stratacache.keys import TRANSPORT_FIELDS, make_key

__all__ = [
    "CREDENTIALS",
    "CREDENTIAL_SUFFIXES",
    "DENY_LIST",
    "UNCACHEABLE",
    "is_transport",
    "request_key",
]

#: Prefix of the key given to a request whose parameters cannot be hashed; the backend never
#: reads or writes such keys (litellm calls the key function outside its own try/except).
UNCACHEABLE = "sc-uncacheable:"

#: Credentials: rotating a key must not drop every entry. Any keyword ending in one of
#: :data:`CREDENTIAL_SUFFIXES` is one too; both are also dropped inside ``model_list``.
CREDENTIALS: frozenset[str] = frozenset(
    {
        "api_key",
        "azure_ad_token",
        "azure_ad_token_provider",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "secret_fields",
    }
)

#: ``openai_api_key``, ``client_secret``, ``azure_password``, ``vertex_credentials``...
CREDENTIAL_SUFFIXES = ("api_key", "_secret", "_password", "_credentials")

#: Keyword arguments that never change the answer. Keep it short: every name here is a
#: promise that two calls differing only in it get the same answer. The core's transport
#: fields (``stratacache.keys.TRANSPORT_FIELDS``) and :data:`CREDENTIALS` are included.
DENY_LIST: frozenset[str] = (
    TRANSPORT_FIELDS
    | CREDENTIALS
    | frozenset(
        {
            # timeouts and retries
            "timeout",
            "stream_timeout",
            "num_retries",
            "max_retries",
            "retry_policy",
            # stream flags: a stream-filled entry serves the plain call and vice versa
            "stream",
            "stream_options",
            # request, trace and call ids
            "litellm_call_id",
            "litellm_trace_id",
            "litellm_session_id",
            "parent_otel_span",
            # logging and litellm's per-call bookkeeping
            "metadata",
            "litellm_metadata",
            "litellm_logging_obj",
            "litellm_params",
            "logger_fn",
            "success_callback",
            "failure_callback",
            "model_info",
            "proxy_server_request",
            # cache controls (the namespace is applied separately)
            "cache",
            "caching",
            "cache_key",
            "preset_cache_key",
            # transport objects (headers are in the key minus credential headers: see
            # stratacache.keys.CREDENTIAL_HEADERS)
            "client",
            "shared_session",
            "allow_client_keepalive_override",
            # litellm's test double: it replaces the provider, it is not part of the request
            "mock_response",
        }
    )
)

#: Values holding deployment definitions, whose nested credentials are dropped as well.
_DEPLOYMENTS = frozenset({"model_list"})


def is_transport(name: str) -> bool:
    """Whether the keyword ``name`` stays out of the key (see :data:`DENY_LIST`)."""
    return name in DENY_LIST or name.endswith(CREDENTIAL_SUFFIXES)


def _is_credential(name: str) -> bool:
    return name in CREDENTIALS or name.endswith(CREDENTIAL_SUFFIXES)


def _without_credentials(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_credentials(v) for k, v in value.items() if not _is_credential(str(k))}
    if isinstance(value, list | tuple):
        return [_without_credentials(v) for v in value]
    return value


def _keyable(name: str, value: Any) -> Any:
    """A pydantic class (``response_format=Answer``) is keyed by its JSON schema: that is what
    litellm sends, and canonicalising the class itself fails, which left such calls uncached."""
    if isinstance(value, type):
        schema = getattr(value, "model_json_schema", None)
        if callable(schema):
            return {"json_schema": schema()}
    if name in _DEPLOYMENTS:
        return _without_credentials(value)
    return value


def request_key(kwargs: Mapping[str, Any], model: Any) -> str:
    """The canonical key of one litellm request.

    ``model`` is litellm's resolved model: the caching group or Router model group when one is
    set. The deployment's own model is then kept as well, with its endpoint and provider, so two
    deployments of one group share entries only when they are the same model at the same place.
    """
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if value is None or name in ("model", "messages") or is_transport(name):
            continue
        params[name] = _keyable(name, value)
    own = kwargs.get("model")
    if own is not None and own != model:
        params["litellm deployment model"] = own
    if "api_base" not in params and "base_url" not in params:
        # An endpoint set process-wide (`litellm.api_base = ...`) is where the call goes too.
        default_base = getattr(litellm, "api_base", None)
        if default_base:
            params["api_base"] = default_base
    return make_key(model=model, messages=kwargs.get("messages"), namespace="litellm", **params)
