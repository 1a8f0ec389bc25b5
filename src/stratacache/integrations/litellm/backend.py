"""``CacheBackend``: a litellm ``BaseCache`` over any :class:`~stratacache.TieredCache`.

litellm's ``Cache`` decides *whether* to read or write (``no-cache``, ``no-store``, ``mode``,
``s-maxage`` on read) and builds the entry ``{"timestamp", "response"}``; the backend decides
*what is worth keeping* and where it lives. Sync and async share that decision (``_entry`` on
the way in, ``_accept`` on the way out); only the tier call differs.

What is never stored: errors, responses without output (no choices, empty content and no tool
call), choices without a ``finish_reason`` (an assembled stream that never finished) or with a
filtered/failed one (``content_filter``, ``error``: see ``_cacheable``), empty or non-finite
embeddings, values that are not JSON-compatible, and anything with ``ttl <= 0``. A problem here
never reaches the caller: it is a counted, once-logged miss or skipped write.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from litellm.caching.base_cache import BaseCache

from stratacache.integrations._cacheable import refused_finish, storable_vectors
from stratacache.integrations._shared import AdapterStats, default_cache, kind_namespace
from stratacache.integrations.litellm._compat import apply_hit_patch
from stratacache.integrations.litellm._keys import UNCACHEABLE
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CacheBackend", "Uncacheable", "check_response"]


class Uncacheable(ValueError):
    """A response that must not be stored; the message says why."""


def _choice_has_output(choice: Any) -> bool:
    message = choice.get("message") or choice.get("delta") or {}
    if not isinstance(message, dict):
        return False
    if message.get("tool_calls") or message.get("function_call"):
        return True
    content = message.get("content")
    return bool(content) or bool(choice.get("text"))


def check_response(response: Any) -> None:
    """Raise :class:`Uncacheable` for an error, empty or unfinished response."""
    if not isinstance(response, dict):
        return
    if response.get("error"):
        raise Uncacheable("the response carries an error")
    if "choices" in response:
        choices = response["choices"]
        if not isinstance(choices, list) or not choices:
            raise Uncacheable("the response has no choices")
        if not any(isinstance(c, dict) and _choice_has_output(c) for c in choices):
            raise Uncacheable("the response has no output")
        if any(isinstance(c, dict) and c.get("finish_reason") is None for c in choices):
            raise Uncacheable("the response did not finish (interrupted stream?)")
        reason = refused_finish(c.get("finish_reason") for c in choices if isinstance(c, dict))
        if reason is not None:
            raise Uncacheable(f"the response finished with {reason!r}")
    if "embedding" in response:
        vector = response["embedding"]
        if not vector or (isinstance(vector, list) and not storable_vectors([vector])[0]):
            raise Uncacheable("the embedding is empty or not finite")
    if response.get("object") == "list" and not response.get("data"):
        raise Uncacheable("the embedding response has no data")


class CacheBackend(BaseCache):
    """``litellm.Cache(_backend=CacheBackend(cache))``, or ``litellm.cache.cache = CacheBackend()``.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: where entries live (default ``litellm``, or ``<cache namespace>.litellm``).
    :param ttl: lifetime of entries when litellm passes none (per-call ``cache={"ttl": n}`` or
        ``Cache(ttl=)`` win); default: the cache's own TTL.

    Used with a plain ``litellm.Cache`` the keys are litellm's (order-dependent, litellm#40128);
    :func:`stratacache.litellm.install` and :class:`~stratacache.litellm.LiteLLMCache` replace
    them with canonical ones. Constructing a backend applies the litellm#42195 workaround when
    the installed litellm needs it (see ``_compat``).
    """

    kind = "litellm"

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
    ) -> None:
        super().__init__(default_ttl=0)
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.cache = kind_namespace(base, self.kind, namespace)
        self.ttl = ttl
        self._stats = AdapterStats("litellm.CacheBackend")
        apply_hit_patch()

    def __repr__(self) -> str:
        return f"<CacheBackend namespace={self.cache.namespace!r} cache={self.cache!r}>"

    # -- shared logic -------------------------------------------------------------------------

    def _ttl(self, kwargs: dict[str, Any]) -> float | bool | None:
        """The entry's TTL; ``False`` means "do not store" (``ttl <= 0``)."""
        raw = kwargs.get("ttl")
        if raw is None:
            return self.ttl
        try:
            ttl = float(raw)
        except (TypeError, ValueError):
            self._stats.problem("bad_ttl", "ignored unusable ttl %r", raw)
            return self.ttl
        return False if ttl <= 0 else ttl

    def _entry(self, key: Any, value: Any) -> Any:
        """The value to store under ``key``, or None when it must not be stored."""
        if not isinstance(key, str) or key.startswith(UNCACHEABLE):
            self._stats.count("uncacheable")
            return None
        entry = value
        if isinstance(value, dict) and "response" in value:
            response = value["response"]
            if isinstance(response, str | bytes):
                # litellm falls back to literal_eval on read; keep such text as given
                with contextlib.suppress(ValueError):
                    response = json.loads(response)
            try:
                check_response(response)
            except Uncacheable as exc:
                self._stats.count("skipped_writes")
                self._stats.count(f"skipped: {exc}")
                return None
            entry = {**value, "response": response}
        return entry

    def _accept(self, raw: Any) -> tuple[Any, bool]:
        """What the cache returned as litellm expects it: ``(value or None, delete it?)``."""
        if raw is MISS:
            self._stats.count("misses")
            return None, False
        if not isinstance(raw, dict):
            self._stats.problem("bad_entries", "unusable cache entry dropped (%s)", type(raw))
            return None, True
        self._stats.count("hits")
        return raw, False

    def _write_error(self, exc: Exception) -> None:
        self._stats.problem("skipped_writes", "result not cached: %s: %s", type(exc).__name__, exc)

    # -- BaseCache, sync ----------------------------------------------------------------------

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        ttl = self._ttl(kwargs)
        entry = None if ttl is False else self._entry(key, value)
        if entry is None:
            return
        try:
            self.cache.set(key, entry, ttl=ttl or None)
        except Exception as exc:
            self._write_error(exc)

    def get_cache(self, key: str, **kwargs: Any) -> Any:
        if not isinstance(key, str) or key.startswith(UNCACHEABLE):
            return None
        value, drop = self._accept(self.cache.get(key, MISS))
        if drop:
            self.cache.delete(key)
        return value

    def set_cache_pipeline(self, cache_list: Iterable[tuple[str, Any]], **kwargs: Any) -> None:
        """Sync twin of :meth:`async_set_cache_pipeline` (used for sync per-item embeddings)."""
        ttl = self._ttl(kwargs)
        if ttl is False:
            return
        items = {k: e for k, v in cache_list if (e := self._entry(k, v)) is not None}
        if items:
            try:
                self.cache.set_many(items, ttl=ttl or None)
            except Exception as exc:
                self._write_error(exc)

    def batch_get_cache(self, keys: Sequence[str], **kwargs: Any) -> list[Any]:
        """Values for ``keys`` in order (None for a miss), read in one pass per tier."""
        wanted = [k for k in keys if isinstance(k, str) and not k.startswith(UNCACHEABLE)]
        return self._ordered(keys, self.cache.get_many(wanted))

    def _ordered(self, keys: Sequence[str], found: dict[str, Any]) -> list[Any]:
        out = []
        for key in keys:
            value, _ = self._accept(found.get(key, MISS))
            out.append(value)
        return out

    def delete_cache(self, key: str) -> None:
        self.cache.delete(key)

    def flush_cache(self) -> None:
        """Drop every entry of this backend's namespace (O(1); others are untouched)."""
        self.cache.clear()

    # -- BaseCache, async ---------------------------------------------------------------------

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        ttl = self._ttl(kwargs)
        entry = None if ttl is False else self._entry(key, value)
        if entry is None:
            return
        try:
            await self.cache.aset(key, entry, ttl=ttl or None)
        except Exception as exc:
            self._write_error(exc)

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        if not isinstance(key, str) or key.startswith(UNCACHEABLE):
            return None
        value, drop = self._accept(await self.cache.aget(key, MISS))
        if drop:
            await self.cache.adelete(key)
        return value

    async def async_set_cache_pipeline(self, cache_list: Any, **kwargs: Any) -> None:
        ttl = self._ttl(kwargs)
        if ttl is False:
            return
        items = {k: e for k, v in cache_list if (e := self._entry(k, v)) is not None}
        if items:
            try:
                await self.cache.aset_many(items, ttl=ttl or None)
            except Exception as exc:
                self._write_error(exc)

    async def async_batch_get_cache(self, keys: Sequence[str], **kwargs: Any) -> list[Any]:
        wanted = [k for k in keys if isinstance(k, str) and not k.startswith(UNCACHEABLE)]
        return self._ordered(keys, await self.cache.aget_many(wanted))

    async def delete_cache_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            await self.cache.adelete(key)

    async def ping(self) -> bool:
        return True

    async def disconnect(self) -> None:
        """The tiers may be shared with other adapters, so litellm's disconnect leaves them open."""

    async def test_connection(self) -> dict[str, Any]:
        return {"status": "success", "message": repr(self)}

    # -- introspection ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """This backend's hits, misses, skipped writes and bad entries, plus the tiers' stats."""
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
