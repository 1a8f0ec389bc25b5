"""``LiteLLMCache``: litellm's own ``Cache`` with stratacache keys, backend and embeddings.

Subclassing ``litellm.caching.caching.Cache`` (rather than only plugging a backend into it)
is what lets us fix the three things the backend alone cannot see:

* **keys** (litellm#40128, #42400): ``get_cache_key`` is litellm's single key function, called
  for reads, writes, stream presets and per-item embedding keys; ours is order-independent and
  covers every keyword the call sends except a short deny-list (``_keys``);
* **the 4-message limit**: ``max_messages`` defaults to None, so agent loops are cached;
* **sync embeddings per item**: litellm's sync path stores a list input as one blob. Here
  ``add_cache`` stores one entry per item (the same entries ``aembedding`` reads and writes)
  and ``get_cache`` answers a list from those entries; on a partial hit only the missing items
  are sent to the provider (one nested ``litellm.embedding`` call) and merged back in order.

It also records, with each entry, how long the provider took, so that a hit can report the
latency it saved (read back by :class:`~stratacache.litellm.StatsCallback`).

With ``semantic=`` (a :class:`~stratacache.semantic.SemanticCache`) a chat request the exact
entries miss is looked up semantically: its last user message within a scope made of everything
else (``semantic.py`` says what); a hit is the stored entry, in the very shape an exact hit has,
so litellm builds the response (or replays it as a stream) the same way. Every stored chat
response is written to both layers.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import litellm
from litellm.caching.caching import Cache, CacheMode
from litellm.types.utils import EmbeddingResponse
from pydantic import BaseModel

from stratacache.integrations._cacheable import storable_vectors
from stratacache.integrations._shared import AdapterStats, Tenant, check_tenant, tenant_key
from stratacache.integrations.litellm._keys import UNCACHEABLE, request_key
from stratacache.integrations.litellm.backend import CacheBackend, Uncacheable, check_response
from stratacache.integrations.litellm.semantic import (
    last_user_text,
    request_tenant,
    scope_messages,
    skip_reason,
)
from stratacache.keys import canonical_json
from stratacache.semantic import SemanticCache
from stratacache.tiered import TieredCache

__all__ = ["LiteLLMCache", "hit_latency"]

#: litellm kwargs that belong to one call and must not be forwarded to the nested call.
_PER_CALL = frozenset(
    {"litellm_logging_obj", "litellm_call_id", "cache_key", "preset_cache_key", "parent_otel_span"}
)

_hit_latency: collections.OrderedDict[str, float] = collections.OrderedDict()
_hit_lock = threading.Lock()
_last_entry = threading.local()


def _remember_hit(call_id: Any, latency: Any) -> None:
    if not isinstance(call_id, str) or not isinstance(latency, int | float):
        return
    with _hit_lock:
        _hit_latency[call_id] = float(latency)
        while len(_hit_latency) > 4096:
            _hit_latency.popitem(last=False)


def hit_latency(call_id: Any) -> float | None:
    """The provider latency the cached answer of call ``call_id`` originally took (once)."""
    with _hit_lock:
        return _hit_latency.pop(call_id, None) if isinstance(call_id, str) else None


class LiteLLMCache(Cache):
    """``litellm.cache = LiteLLMCache(cache)``: what :func:`~stratacache.litellm.install` sets.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param ttl: default lifetime of entries in seconds (per-call ``cache={"ttl": n}`` wins).
    :param namespace: the stratacache namespace of the entries (default ``litellm``).
    :param max_messages: litellm's limit on cached conversation length; None (no limit).
    :param mode: litellm's ``CacheMode``; ``default_off`` caches only calls that pass
        ``cache={"use-cache": True}``.
    :param backend: an existing :class:`CacheBackend` instead of ``cache``/``namespace``.
    :param semantic: a :class:`~stratacache.semantic.SemanticCache` consulted after an exact
        miss (chat requests only; see ``semantic.py``); None: exact matching only.
    :param tenant: who may share answers, in both layers: a string or a zero-argument
        callable evaluated per call (e.g. reading a contextvar). It is part of the exact key
        and of the semantic scope, together with the proxy's key/team/org/user/end-user ids
        from ``metadata`` (``user`` is in the key as a request parameter). Embeddings are
        shared by all tenants: a vector depends on the model and the text only. A callable that
        fails or returns a non-string leaves that call uncached (``tenant_errors``).
    :param kwargs: any other ``litellm.Cache`` argument (``supported_call_types``, ...).
    """

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        ttl: float | None = None,
        namespace: str | None = None,
        max_messages: int | None = None,
        mode: CacheMode | None = CacheMode.default_on,
        backend: CacheBackend | None = None,
        semantic: SemanticCache | None = None,
        tenant: Tenant = None,
        **kwargs: Any,
    ) -> None:
        if semantic is not None and not isinstance(semantic, SemanticCache):
            raise TypeError(
                f"semantic must be a stratacache.semantic.SemanticCache, not {type(semantic)}"
            )
        self.semantic = semantic
        self.tenant = check_tenant(tenant)
        self.backend = backend if backend is not None else CacheBackend(cache, namespace=namespace)
        super().__init__(
            _backend=self.backend, ttl=ttl, max_messages=max_messages, mode=mode, **kwargs
        )
        self._stats = AdapterStats("litellm.LiteLLMCache")
        #: Called with ``(call kwargs, cached response or None, latency it saved or None)`` after
        #: every lookup; ``install()`` points it at its :class:`StatsCallback`.
        self.on_lookup: Callable[[Mapping[str, Any], Any, float | None], None] | None = None

    def __repr__(self) -> str:
        return f"<LiteLLMCache backend={self.backend!r}>"

    def stats(self) -> dict[str, Any]:
        """This adapter's own counters (``semantic_hits``, ``semantic_skipped: <reason>``,
        problems), the semantic layer's under ``semantic``, and the backend's (entries, the
        tiers) under ``backend``. Hits and savings per model are :func:`install`'s
        ``Installation.stats.stats()``."""
        out: dict[str, Any] = {**self._stats.snapshot(), "backend": self.backend.stats()}
        if self.semantic is not None:
            out["semantic"] = self.semantic.stats()
        return out

    # -- keys ---------------------------------------------------------------------------------

    def get_cache_key(self, **kwargs: Any) -> str:
        # Computed afresh on every call (litellm asks 2-3 times per request): a memo would need
        # a name for the request that is equal exactly when the key is, and call ids are reused
        # by callers and proxies. It must not raise: litellm calls it outside try/except.
        try:
            key = request_key(kwargs, self._get_model_param_value(kwargs))
        except Exception as exc:
            self._stats.problem(
                "key_errors", "request not cached: no key (%s: %s)", type(exc).__name__, exc
            )
            return f"{UNCACHEABLE}{time.monotonic_ns()}"
        try:
            key = self._tenant_key(key, kwargs)
        except Exception as exc:
            self._stats.problem(
                "tenant_errors", "no tenant for this call, cache bypassed (%s: %s)",
                type(exc).__name__, exc,
            )  # fmt: skip
            return f"{UNCACHEABLE}{time.monotonic_ns()}"
        return str(self._add_namespace_to_cache_key(key, **kwargs))

    def _tenant_key(self, key: str, kwargs: Mapping[str, Any]) -> str:
        """``key`` in the request's tenant partition: ``install(tenant=)`` and the proxy ids
        (``user`` is already in the key). Embeddings stay shared; a call whose type is not
        known to be an embedding is partitioned (fail closed: that costs hits, never leaks)."""
        call_type = getattr(kwargs.get("litellm_logging_obj"), "call_type", None)
        if getattr(call_type, "value", call_type) in ("embedding", "aembedding"):
            return key
        who = request_tenant(kwargs, self.tenant)
        if who["tenant"] is None and not who["ids"]:
            return key
        return tenant_key(key, canonical_json({"tenant": who["tenant"], "ids": who["ids"]}))

    # -- entries ------------------------------------------------------------------------------

    def _add_cache_logic(self, result: Any, **kwargs: Any) -> Any:
        cache_key, cached_data, kwargs = super()._add_cache_logic(  # type: ignore[no-untyped-call]
            result, **kwargs
        )
        logging_obj = kwargs.get("litellm_logging_obj")
        started = getattr(logging_obj, "start_time", None)
        if started is not None and "embedding" not in (result if isinstance(result, dict) else {}):
            try:
                latency = max(0.0, time.time() - started.timestamp())
                cached_data = {**cached_data, "sc": {"latency": round(latency, 6)}}
            except Exception:  # a start time we cannot read only costs the latency figure
                self._stats.count("latency_unknown")
        return cache_key, cached_data, kwargs

    def get_cache_logic(self, cached_result: Any, max_age: float | None) -> Any:
        value = super().get_cache_logic(cached_result, max_age)
        meta = cached_result.get("sc") if isinstance(cached_result, dict) else None
        _last_entry.latency = meta.get("latency") if value is not None and meta else None
        return value

    def _looked_up(self, kwargs: Mapping[str, Any], value: Any) -> Any:
        """Shared by the sync and async lookups: remember what a hit saved and report it."""
        latency = _last_entry.latency if value is not None else None
        if value is not None:
            _remember_hit(kwargs.get("litellm_call_id"), latency)
        if self.on_lookup is not None and self.should_use_cache(**kwargs) is True:  # type: ignore[no-untyped-call]
            self.on_lookup(kwargs, value, latency)
        return value

    def get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> Any:
        if _is_sync_embedding(kwargs):
            return self._looked_up(kwargs, self._get_embeddings(kwargs))
        _last_entry.latency = None
        value = super().get_cache(dynamic_cache_object, **kwargs)
        if value is None and self.semantic is not None:
            request = self._semantic_request(kwargs)
            if request is not None:
                found = self.semantic.lookup(*request)
                value = self._semantic_hit(found, kwargs)
        return self._looked_up(kwargs, value)

    async def async_get_cache(self, dynamic_cache_object: Any = None, **kwargs: Any) -> Any:
        _last_entry.latency = None
        value = await super().async_get_cache(dynamic_cache_object, **kwargs)
        if value is None and self.semantic is not None:
            request = self._semantic_request(kwargs)
            if request is not None:
                found = await self.semantic.alookup(*request)
                value = self._semantic_hit(found, kwargs)
        return self._looked_up(kwargs, value)

    def add_cache(self, result: Any, **kwargs: Any) -> None:
        if isinstance(result, EmbeddingResponse) and "input" in kwargs:
            self._add_embeddings(result, kwargs)
            return
        super().add_cache(result, **kwargs)  # type: ignore[no-untyped-call]
        if self.semantic is not None:
            stored = self._semantic_entry(result, kwargs)
            if stored is not None:
                self.semantic.store(*stored)

    async def async_add_cache_pipeline(
        self, result: Any, dynamic_cache_object: Any = None, **kwargs: Any
    ) -> None:
        if self._vectors_storable(result, kwargs):
            await super().async_add_cache_pipeline(result, dynamic_cache_object, **kwargs)

    async def async_add_cache(
        self, result: Any, dynamic_cache_object: Any = None, **kwargs: Any
    ) -> None:
        await super().async_add_cache(result, dynamic_cache_object, **kwargs)
        if self.semantic is not None:
            stored = self._semantic_entry(result, kwargs)
            if stored is not None:
                await self.semantic.astore(*stored)

    # -- semantic layer -----------------------------------------------------------------------

    def _semantic_request(self, kwargs: Mapping[str, Any]) -> tuple[str, Any] | None:
        """``(last user text, scope)`` for a request the semantic layer may serve, else None.

        Never raises: a request we cannot scope exactly is left to the exact layer.
        """
        try:
            if self.should_use_cache(**kwargs) is not True:  # type: ignore[no-untyped-call]
                return None
            reason = skip_reason(kwargs)
            if reason is not None:
                self._stats.count(f"semantic_skipped: {reason}")
                return None
            messages = kwargs["messages"]
            prompt = last_user_text(messages)
            if prompt is None:
                return None
            params = {k: v for k, v in kwargs.items() if k not in ("cache_key", "preset_cache_key")}
            params["messages"] = scope_messages(messages)
            key = self.get_cache_key(**params)
            if key.startswith(UNCACHEABLE):
                return None
            scope = {"litellm": key, "tenant": request_tenant(kwargs, self.tenant)}
        except Exception as exc:
            self._stats.problem("semantic_errors", "semantic layer skipped: %s", exc)
            return None
        return prompt, scope

    def _semantic_hit(self, found: Any, kwargs: Mapping[str, Any]) -> Any:
        """A semantic entry as litellm's exact path returns one, or None (expired, too old)."""
        if not isinstance(found, dict) or not isinstance(found.get("response"), dict):
            return None
        expires = found.get("expires")
        if isinstance(expires, int | float) and expires <= time.time():
            return None
        control = kwargs.get("cache") or {}
        max_age = control.get("s-maxage") or control.get("s-max-age") or float("inf")
        value = self.get_cache_logic(found, max_age)
        if value is not None:
            self._stats.count("semantic_hits")
        return value

    def _semantic_entry(self, result: Any, kwargs: dict[str, Any]) -> tuple[str, Any, Any] | None:
        """``(prompt, entry, scope)`` to store, or None: the exact path's checks, mirrored."""
        request = self._semantic_request(kwargs)
        if request is None:
            return None
        try:
            response = result
            if isinstance(response, BaseModel):
                response = response.model_dump_json(exclude_unset=True)
            if isinstance(response, str | bytes):
                response = json.loads(response)
            if not isinstance(response, dict) or "choices" not in response:
                return None
            check_response(response)
            _, data, options = self._add_cache_logic(response, **kwargs)
            ttl = self.backend._ttl(options)
            if ttl is False:
                return None
            entry = {**data, "response": response}
            if ttl:
                entry["expires"] = time.time() + float(ttl)
        except Uncacheable as exc:
            self._stats.count(f"semantic_skipped: {exc}")
            return None
        except Exception as exc:
            self._stats.problem("semantic_errors", "not stored semantically: %s", exc)
            return None
        prompt, scope = request
        return prompt, entry, scope

    # -- sync embeddings, per item ------------------------------------------------------------

    def _vectors_storable(self, result: Any, kwargs: Mapping[str, Any]) -> bool:
        """False when any vector of an embedding response is empty, not finite or of another
        length than the rest (or than ``dimensions=``): then none of them is stored, since the
        response as a whole comes from a faulty provider answer."""
        data = getattr(result, "data", None)
        if not isinstance(result, EmbeddingResponse) or not isinstance(data, list):
            return True
        vectors = [item.get("embedding") if isinstance(item, Mapping) else None for item in data]
        if any(not isinstance(v, list) for v in vectors):
            return True  # base64 strings: litellm's own checks apply
        dim = kwargs.get("dimensions")
        if all(storable_vectors(vectors, dim if isinstance(dim, int) else None)):
            return True
        self._stats.problem(
            "skipped_writes", "embeddings not cached: an empty, non-finite or wrong-length vector"
        )
        return False

    def _items(self, kwargs: dict[str, Any]) -> list[Any]:
        raw = kwargs["input"]
        return [raw] if isinstance(raw, str) else list(raw)

    def _add_embeddings(self, result: EmbeddingResponse, kwargs: dict[str, Any]) -> None:
        """Store one entry per input item, exactly as litellm's async pipeline does."""
        try:
            if self.should_use_cache(**kwargs) is not True:  # type: ignore[no-untyped-call]
                return
            items = self._items(kwargs)
            if len(result.data) != len(items) or not self._vectors_storable(result, kwargs):
                return
            kwargs = dict(kwargs)
            if self.ttl is not None:
                kwargs["ttl"] = self.ttl
            cache_list = []
            for idx, item in enumerate(items):
                key, data, kwargs = self.add_embedding_response_to_cache(result, item, kwargs, idx)
                cache_list.append((key, data))
            kwargs.pop("cache_key", None)
            self.backend.set_cache_pipeline(cache_list, **kwargs)
        except Exception as exc:
            self._stats.problem("skipped_writes", "embeddings not cached: %s", exc)

    def _get_embeddings(self, kwargs: dict[str, Any]) -> Any:
        try:
            if self.should_use_cache(**kwargs) is not True:  # type: ignore[no-untyped-call]
                return None
            items = self._items(kwargs)
            keys = [self.get_cache_key(**{**kwargs, "input": item}) for item in items]
            control = kwargs.get("cache") or {}
            max_age = control.get("s-maxage") or control.get("s-max-age") or float("inf")
            found = [
                self.get_cache_logic(raw, max_age) if raw is not None else None
                for raw in self.backend.batch_get_cache(keys)
            ]
            hits = [f if isinstance(f, dict) and f.get("embedding") else None for f in found]
            if all(h is None for h in hits):
                return None
            missing = [i for i, h in enumerate(hits) if h is None]
            fresh: EmbeddingResponse | None = None
            if missing:
                fresh = self._embed_missing(kwargs, [items[i] for i in missing])
                if fresh is None:
                    return None
        except Exception as exc:
            self._stats.problem("bad_entries", "embedding lookup failed: %s", exc)
            return None
        return _merge_embeddings(hits, missing, fresh, kwargs.get("model"))

    def _embed_missing(self, kwargs: dict[str, Any], items: list[Any]) -> EmbeddingResponse | None:
        """One provider call for the items the cache lacks; it stores them per item itself."""
        call = {k: v for k, v in kwargs.items() if k not in _PER_CALL and v is not None}
        control = dict(call.get("cache") or {})
        control["no-cache"] = True
        call["cache"] = control
        call["input"] = items
        try:
            response = litellm.embedding(**call)
        except Exception as exc:
            # The outer call then sends the whole list and surfaces the provider's error itself.
            self._stats.problem(
                "partial_embedding_errors", "partial embedding call failed: %s", exc
            )
            return None
        self._stats.count("partial_embedding_calls")
        return response if isinstance(response, EmbeddingResponse) else None


def _is_sync_embedding(kwargs: dict[str, Any]) -> bool:
    call_type = getattr(kwargs.get("litellm_logging_obj"), "call_type", None)
    return getattr(call_type, "value", call_type) == "embedding" and "input" in kwargs


def _merge_embeddings(
    hits: list[dict[str, Any] | None],
    missing: list[int],
    fresh: EmbeddingResponse | None,
    model: Any,
) -> dict[str, Any]:
    """The full response dict, in input order, that litellm turns into an EmbeddingResponse."""
    vectors: list[Any] = [h["embedding"] if h is not None else None for h in hits]
    prompt_tokens = sum(int(h.get("prompt_tokens") or 0) for h in hits if h is not None)
    if fresh is not None:
        for position, item in zip(missing, fresh.data, strict=True):
            vectors[position] = item["embedding"]
        usage = getattr(fresh, "usage", None)
        prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
    cached_model = next((h.get("model") for h in hits if h is not None and h.get("model")), None)
    return {
        "object": "list",
        "model": cached_model or model,
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
