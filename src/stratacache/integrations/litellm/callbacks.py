"""litellm ``CustomLogger`` callbacks: savings statistics and client-side rate limiting.

Where each hook fires in the plain SDK (verified in litellm 1.106.2's ``utils.client``):

* sync calls: the cache is read first; ``log_pre_api_call`` fires only when the provider is
  really called, so acquiring budget there means a hit can never consume any;
* async calls: ``async_pre_call_deployment_hook`` is the only hook that may wait, and it runs
  *before* the cache lookup. So the limiter looks the request up itself (one extra cache read)
  and lets a cached request through without charge. For list embeddings only the uncached
  items are charged, since only they go to the provider.

Both paths share :meth:`RateLimitCallback._plan` (which limiter, how many tokens) and
:meth:`RateLimitCallback._feedback` (settle the lease, feed headers back); only the waiting
and the cache read differ. Success and failure events may be delivered twice for one call
(litellm runs sync callbacks for async calls too), so each call is handled once, by call id.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from stratacache._stats import GLOBAL_SAVINGS
from stratacache.errors import ConfigurationError
from stratacache.integrations._shared import AdapterStats
from stratacache.integrations.litellm.cache import hit_latency
from stratacache.ratelimit import Lease, RateLimiter

__all__ = ["RateLimitCallback", "StatsCallback"]

log = logging.getLogger("stratacache")

_ASYNC_CALLS = frozenset(
    {"acompletion", "aembedding", "atext_completion", "aresponses", "atranscription", "arerank"}
)
_CHAT = frozenset({"completion", "acompletion", "text_completion", "atext_completion"})
_EMBED = frozenset({"embedding", "aembedding"})


class _Once:
    """Remembers recently handled call ids (bounded): litellm may report one call twice."""

    def __init__(self, size: int = 8192) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def first(self, call_id: Any) -> bool:
        if not isinstance(call_id, str):
            return True
        with self._lock:
            if call_id in self._seen:
                return False
            self._seen[call_id] = None
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


def _call_type(kwargs: Mapping[str, Any], fallback: Any = None) -> str:
    value = kwargs.get("call_type", fallback)
    return str(getattr(value, "value", value) or "")


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, Mapping):
        usage = response.get("usage")
    if usage is None:
        return 0, 0

    def get(name: str) -> int:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        return int(value or 0)

    return get("prompt_tokens"), get("completion_tokens")


def _model_of(kwargs: Mapping[str, Any], response: Any) -> str:
    """The model name without its provider prefix: litellm reports ``gpt-4o-mini`` for a
    provider call but ``openai/gpt-4o-mini`` for the same request served from the cache."""
    model = str(kwargs.get("model") or getattr(response, "model", None) or "unknown")
    provider = kwargs.get("custom_llm_provider")
    if isinstance(provider, str) and provider and model.startswith(provider + "/"):
        return model[len(provider) + 1 :]
    # At lookup time litellm has not split the provider off yet ("openai/gpt-4o-mini").
    prefix, _, rest = model.partition("/")
    if rest and prefix in litellm.provider_list:
        return rest
    return model


class StatsCallback(CustomLogger):
    """Per-model hits, misses, tokens, cost (litellm's cost map) and latency saved by the cache.

    Also feeds the process-wide totals of ``stratacache.stats()``. ``install()`` registers one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._once = _Once()
        self._lock = threading.Lock()
        self.models: dict[str, dict[str, float]] = {}
        self._prices: dict[tuple[str, Any], tuple[float, float]] = {}

    def _bucket(self, model: str) -> dict[str, float]:
        return self.models.setdefault(
            model,
            {"hits": 0, "misses": 0, "tokens_saved": 0, "cost_saved": 0.0, "latency_saved": 0.0},
        )

    def _cost(self, kwargs: Mapping[str, Any], model: str, prompt: int, completion: int) -> float:
        """Dollars saved, from litellm's cost map. ``cost_per_token`` costs ~0.3 ms a call (as
        much as the whole hit), so each model's per-token prices are looked up once; tiered
        prices above a context threshold are ignored, which only affects the statistics."""
        provider = kwargs.get("custom_llm_provider")
        key = (model, provider)
        prices = self._prices.get(key)
        if prices is None:
            try:
                per_prompt, _ = litellm.cost_per_token(
                    model=model, prompt_tokens=1000, completion_tokens=0,
                    custom_llm_provider=provider,
                )  # fmt: skip
                _, per_completion = litellm.cost_per_token(
                    model=model, prompt_tokens=0, completion_tokens=1000,
                    custom_llm_provider=provider,
                )  # fmt: skip
                prices = (float(per_prompt) / 1000, float(per_completion) / 1000)
            except Exception:  # a model missing from the cost map saved tokens, not known dollars
                prices = (0.0, 0.0)
            self._prices[key] = prices
        return prices[0] * prompt + prices[1] * completion

    def _record(self, kwargs: Mapping[str, Any], response: Any) -> None:
        """From a success event (when registered as a callback by hand)."""
        hit = kwargs.get("cache_hit") is True
        latency = (hit_latency(kwargs.get("litellm_call_id")) or 0.0) if hit else None
        self._count(kwargs, response if hit else None, latency)

    def record_lookup(self, kwargs: Mapping[str, Any], cached: Any, latency: float | None) -> None:
        """From the cache's own lookup (what ``install()`` wires): no callback registration,
        so litellm does not build its logging payload on every hit just for these counters."""
        try:
            self._count(kwargs, cached, latency)
        except Exception as exc:  # statistics must never break a call
            log.debug("stratacache litellm stats: %r", exc)

    def _count(self, kwargs: Mapping[str, Any], cached: Any, latency: float | None) -> None:
        """One call's outcome, once per call id: ``cached`` is the hit's response, else None."""
        if not self._once.first(kwargs.get("litellm_call_id")):
            return
        model = _model_of(kwargs, cached)
        if cached is not None:
            prompt, completion = _usage(cached)
            cost = self._cost(kwargs, model, prompt, completion)
            with self._lock:
                bucket = self._bucket(model)
                bucket["hits"] += 1
                bucket["tokens_saved"] += prompt + completion
                bucket["cost_saved"] += cost
                bucket["latency_saved"] += latency or 0.0
            GLOBAL_SAVINGS.record_hit(
                tokens=prompt + completion, cost=cost, latency=latency or 0.0, framework="litellm"
            )
        else:
            with self._lock:
                self._bucket(model)["misses"] += 1
            GLOBAL_SAVINGS.record_miss("litellm")

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            self._record(kwargs, response_obj)
        except Exception as exc:  # statistics must never break a call
            log.debug("stratacache litellm stats: %r", exc)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.log_success_event(kwargs, response_obj, start_time, end_time)

    def stats(self) -> dict[str, dict[str, float]]:
        """``{model: {hits, misses, tokens_saved, cost_saved, latency_saved}}``."""
        with self._lock:
            return {model: dict(values) for model, values in self.models.items()}


class RateLimitCallback(CustomLogger):
    """Client-side RPM/TPM limits per model for ``litellm.completion``/``embedding`` and twins.

    :param rate_limits: ``{"gpt-4o-mini": {"rpm": 500, "tpm": 200_000}, "*": {...}}``; a value
        may also be a ready :class:`stratacache.ratelimit.RateLimiter`. A request's model is
        matched as given (``openai/gpt-4o-mini``), then without its provider prefix, then
        ``"*"``; unmatched models are not limited.
    :param redis_url: share every budget across processes (one Redis name per model).
    :param completion_tokens: the completion size charged up front when the request sets no
        ``max_tokens``; the real usage is settled when the response arrives.

    Cache hits never consume budget (see the module docstring for how, per path). Provider
    ``x-ratelimit-*``/``retry-after`` headers of every response and 429 error are fed back.
    """

    def __init__(
        self,
        rate_limits: Mapping[str, Mapping[str, float] | RateLimiter],
        redis_url: str | None = None,
        *,
        completion_tokens: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(rate_limits, Mapping) or not rate_limits:
            raise ConfigurationError(
                'rate_limits must be a mapping like {"gpt-4o-mini": {"rpm": 500}}'
            )
        self.limiters: dict[str, RateLimiter] = {}
        for model, spec in rate_limits.items():
            if isinstance(spec, RateLimiter):
                self.limiters[model] = spec
            elif isinstance(spec, Mapping):
                self.limiters[model] = RateLimiter(
                    **dict(spec), redis_url=redis_url, name=f"litellm:{model}"
                )
            else:
                raise ConfigurationError(
                    f"rate limit of {model!r} must be a mapping or a RateLimiter"
                )
        self.completion_tokens = completion_tokens
        self._leases: collections.OrderedDict[str, Lease] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._once = _Once()
        self._stats = AdapterStats("litellm.RateLimitCallback")

    # -- shared logic -------------------------------------------------------------------------

    def limiter_for(self, model: Any) -> RateLimiter | None:
        if not isinstance(model, str):
            return self.limiters.get("*")
        found = self.limiters.get(model)
        if found is None and "/" in model:
            found = self.limiters.get(model.split("/", 1)[1])
        return found if found is not None else self.limiters.get("*")

    def _estimate(self, kwargs: Mapping[str, Any], call_type: str, items: list[Any] | None) -> int:
        model = str(kwargs.get("model") or "")
        try:
            if call_type in _EMBED:
                texts = [i for i in (items or []) if isinstance(i, str)]
                return sum(litellm.token_counter(model=model, text=t) for t in texts) or 1
            messages = kwargs.get("messages")
            prompt = litellm.token_counter(model=model, messages=messages) if messages else 0
        except Exception:
            prompt = len(str(kwargs.get("messages") or kwargs.get("input") or "")) // 4
        params = kwargs.get("optional_params") or {}
        completion = (
            kwargs.get("max_tokens")
            or kwargs.get("max_completion_tokens")
            or params.get("max_tokens")
            or params.get("max_completion_tokens")
            or self.completion_tokens
        )
        return int(prompt) + int(completion)

    def _tokens(self, limiter: RateLimiter, estimate: int) -> int:
        if limiter.tpm is None:
            return 0
        return max(1, min(estimate, int(limiter.max_request_tokens)))

    def _keep(self, call_id: Any, lease: Lease) -> None:
        if not isinstance(call_id, str):
            return
        with self._lock:
            self._leases[call_id] = lease
            while len(self._leases) > 4096:
                self._leases.popitem(last=False)

    def _take(self, call_id: Any) -> Lease | None:
        with self._lock:
            return self._leases.pop(call_id, None) if isinstance(call_id, str) else None

    def _feedback(
        self, kwargs: Mapping[str, Any], response: Any, error: BaseException | None
    ) -> tuple[RateLimiter | None, Lease | None, int | None, Any, int | None]:
        """``(limiter, lease, actual tokens, headers, status)`` for one finished call, once."""
        call_id = kwargs.get("litellm_call_id")
        lease = self._take(call_id)
        if not self._once.first(call_id) and lease is None:
            return None, None, None, None, None
        limiter = self.limiter_for(kwargs.get("model"))
        if limiter is None or kwargs.get("cache_hit") is True:
            return limiter, lease, 0 if lease is not None else None, None, None
        if error is not None:
            status = getattr(error, "status_code", None)
            headers = getattr(getattr(error, "response", None), "headers", None)
            return limiter, lease, 0, headers, status
        prompt, completion = _usage(response)
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
        actual = prompt + completion if prompt or completion else None
        return limiter, lease, actual, headers, None

    # -- sync path ----------------------------------------------------------------------------

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        # Fires only for real provider calls; async ones were charged in the deployment hook.
        try:
            call_type = _call_type(kwargs)
            if call_type in _ASYNC_CALLS or kwargs.get("litellm_call_id") in self._leases:
                return
            limiter = self.limiter_for(kwargs.get("model") or model)
            if limiter is None:
                return
            items = kwargs.get("input") if call_type in _EMBED else None
            items = [items] if isinstance(items, str) else items
            tokens = self._tokens(limiter, self._estimate(kwargs, call_type, items))
        except Exception as exc:
            self._stats.problem("errors", "request not rate-limited: %s", exc)
            return
        self._keep(kwargs.get("litellm_call_id"), limiter.acquire(tokens=tokens))

    def _finish(self, kwargs: Any, response: Any, error: BaseException | None) -> None:
        try:
            limiter, lease, actual, headers, status = self._feedback(kwargs, response, error)
            if lease is not None and actual is not None:
                lease.settle(actual)
            if limiter is None:
                return
            if status == 429 and not headers:
                limiter.record_throttle()
            elif headers:
                limiter.observe_headers(headers, status=status)
        except Exception as exc:
            self._stats.problem("errors", "rate-limit feedback lost: %s", exc)

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finish(kwargs, response_obj, None)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finish(kwargs, response_obj, kwargs.get("exception"))

    # -- async path ---------------------------------------------------------------------------

    async def _uncached(self, kwargs: dict[str, Any], call_type: str) -> list[Any] | None:
        """The inputs that will reach the provider: None if the whole request is a hit.

        Mirrors litellm's own read conditions (``caching=``, ``no-cache``, ``mode``); the answer
        can go stale between this read and litellm's (an entry expiring or arriving meanwhile),
        which is the one approximation of the async path.
        """
        cache = litellm.cache
        items: list[Any] = []
        if call_type in _EMBED:
            raw = kwargs.get("input")
            items = [raw] if isinstance(raw, str) else list(raw or [])
        control = kwargs.get("cache") or {}
        read = kwargs.get("caching") is True or (
            kwargs.get("caching") is None and cache is not None
        )
        if cache is None or not read or control.get("no-cache") is True:
            return items
        if call_type in _EMBED:
            found = [
                await cache.async_get_cache(cache_key=cache.get_cache_key(**{**kwargs, "input": i}))
                for i in items
            ]
            missing = [item for item, hit in zip(items, found, strict=True) if not hit]
            return missing or None
        found_one = await cache.async_get_cache(**kwargs)
        return None if found_one else items

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        try:
            kind = str(getattr(call_type, "value", call_type) or "")
            limiter = self.limiter_for(kwargs.get("model"))
            if limiter is None:
                return None
            uncached = await self._uncached(kwargs, kind)
            if uncached is None:
                self._stats.count("hits_not_charged")
                return None
            tokens = self._tokens(limiter, self._estimate(kwargs, kind, uncached))
        except Exception as exc:
            self._stats.problem("errors", "request not rate-limited: %s", exc)
            return None
        lease = await limiter.aacquire(tokens=tokens)
        self._keep(kwargs.get("litellm_call_id"), lease)
        return None

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finish(kwargs, response_obj, None)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._finish(kwargs, response_obj, kwargs.get("exception"))

    def close(self) -> None:
        for limiter in self.limiters.values():
            limiter.close()
