"""Rate limits for LangChain models that carry none, applied from the global cache.

``stratacache run --rate-limit MODEL=RPM[:TPM]`` cannot reach a model's ``rate_limiter=``: the
program builds its models, and LangChain has no global limiter. It has a global *cache*, and a
chat model consults it right where it would consult its own limiter: after the lookup misses,
just before the provider call (``BaseChatModel._generate_with_cache``). So the cache takes a
grant on every miss and settles it with the usage the model reports when the result is stored.
Hits take nothing. The model is named by the ``llm_string`` LangChain passes (its serialized
``model_name`` / ``model``), matched as given, then without a ``provider/`` prefix, then ``*``.

Not reached: models built with ``cache=False`` and calls that bypass the cache (LangChain's
streaming path); a model's own ``rate_limiter=`` still applies on top.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE
from langchain_core.outputs import LLMResult

from stratacache.integrations.langchain._keys import _normalize_llm_string
from stratacache.integrations.langchain.ratelimit import RateLimiter, _usage

__all__ = ["ModelLimits", "model_name", "rate_limited"]

#: Fields that name the model in LangChain's chat models (OpenAI, Anthropic, Bedrock, Azure...).
_NAME_FIELDS = ("model_name", "model", "model_id", "deployment_name", "azure_deployment")


def model_name(llm_string: str) -> str:
    """The model an ``llm_string`` names, or ``""`` when it names none."""
    try:
        normalized = _normalize_llm_string(llm_string)
    except Exception:
        return ""
    places = []
    model = normalized.get("model") if isinstance(normalized, dict) else None
    if isinstance(model, dict):
        places.append(model.get("kwargs"))
        places.append(model)
    places.append(normalized.get("params") if isinstance(normalized, dict) else None)
    for place in places:
        if isinstance(place, dict):
            for name in _NAME_FIELDS:
                value = place.get(name)
                if isinstance(value, str) and value:
                    return value
    return ""


class ModelLimits:
    """One :class:`~stratacache.langchain.RateLimiter` per configured model, built on first use."""

    def __init__(
        self, limits: Mapping[str, Mapping[str, float]], redis_url: str | None = None
    ) -> None:
        self.limits = {model: dict(spec) for model, spec in limits.items()}
        self.redis_url = redis_url
        self._by_model: dict[str, RateLimiter | None] = {}
        self._names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _spec(self, model: str) -> dict[str, float] | None:
        for name in (model, model.rpartition("/")[2], "*"):
            if name and name in self.limits:
                return self.limits[name]
        return None

    def _build(self, model: str, spec: Mapping[str, float]) -> RateLimiter:
        name = f"langchain:{model or '*'}"
        return RateLimiter(spec.get("rpm"), spec.get("tpm"), redis_url=self.redis_url, name=name)

    def for_call(self, llm_string: str) -> RateLimiter | None:
        with self._lock:
            model = self._names.get(llm_string)
        if model is None:
            model = model_name(llm_string)  # parsing is the costly part: memoised
            with self._lock:
                self._names[llm_string] = model
                if len(self._names) > 1024:
                    self._names.popitem(last=False)
        with self._lock:
            if model not in self._by_model:
                spec = self._spec(model)
                self._by_model[model] = None if spec is None else self._build(model, spec)
            return self._by_model[model]


class _Limited:
    """Mixed into an LLM cache class: a grant on each miss, settled on each store."""

    limits: ModelLimits

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit: RETURN_VAL_TYPE | None = super().lookup(prompt, llm_string)  # type: ignore[misc]
        if hit is None and (limiter := self.limits.for_call(llm_string)) is not None:
            limiter.acquire(blocking=True)
        return hit

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit: RETURN_VAL_TYPE | None = await super().alookup(prompt, llm_string)  # type: ignore[misc]
        if hit is None and (limiter := self.limits.for_call(llm_string)) is not None:
            await limiter.aacquire(blocking=True)
        return hit

    def _settle(self, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        limiter = self.limits.for_call(llm_string)
        if limiter is not None:
            tokens, cached = _usage(LLMResult(generations=[list(return_val)]))
            if not cached:
                limiter._observe(tokens)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self._settle(llm_string, return_val)
        super().update(prompt, llm_string, return_val)  # type: ignore[misc]

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self._settle(llm_string, return_val)
        await super().aupdate(prompt, llm_string, return_val)  # type: ignore[misc]


def rate_limited(cache_cls: type[Any], limits: ModelLimits, *args: Any, **kwargs: Any) -> Any:
    """An instance of ``cache_cls`` (``LLMCache``, ``SemanticLLMCache``) that also applies
    ``limits``: same namespace, same entries, same stats as the plain class."""
    cls = type(f"RateLimited{cache_cls.__name__}", (_Limited, cache_cls), {})
    instance = cls(*args, **kwargs)
    instance.limits = limits
    return instance
