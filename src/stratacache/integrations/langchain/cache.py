"""``LLMCache``: LangChain's ``BaseCache`` over any :class:`~stratacache.TieredCache`.

The sync and async methods share every decision (key, encoding, what is cacheable, what a bad
entry means) through the ``_key`` / ``_accept`` / ``_encode`` helpers; only the cache I/O call
differs. Nothing here raises into the user's chain: a tier failure is a miss (the core already
guarantees that), and a bad key, a foreign or corrupt entry, or an unserializable generation is
a counted, once-logged miss or skipped write.
"""

from __future__ import annotations

from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.outputs import Generation

from stratacache._stats import GLOBAL_SAVINGS
from stratacache.integrations._shared import (
    AdapterStats,
    Tenant,
    check_tenant,
    default_cache,
    kind_namespace,
    tenant_scoped_key,
)
from stratacache.integrations.langchain._keys import calling_llm_identity, llm_cache_key
from stratacache.integrations.langchain._serde import (
    Uncacheable,
    decode_hit,
    encode_generations,
    remember,
)
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["LLMCache"]


class LLMCache(BaseCache):
    """Exact-match LLM/chat-model cache for ``set_llm_cache`` or a model's ``cache=``.

    :param cache: the tiers to use; default: the process-wide ``TieredCache.default()``.
    :param namespace: the namespace entries live in (default ``lc-llm``, or
        ``<cache namespace>.lc-llm``); :meth:`clear` drops exactly this namespace.
    :param ttl: lifetime of new entries in seconds (or ``"1h"``); default: the cache's TTL.
    :param tenant: who may share answers: a ``str``, or a zero-argument callable evaluated on
        every call (e.g. reading a contextvar set per request) returning a ``str`` or None.
        Entries are served **within one tenant only**; None (the default) is one partition of
        its own, for a single-tenant app. A callable that fails or returns a non-string makes
        that call bypass the cache (counted as ``tenant_errors``, logged once).

    The key is built from the parsed messages and model parameters, not LangChain's raw strings:
    message ids, provider tool-call ids, history metadata and transport settings (timeouts,
    retries, stream flags, API keys) are ignored; tools, ``tool_choice``, ``stop``, response
    format and all sampling parameters count. Parameter order never matters.

    A subclass (the semantic cache) can reuse :meth:`_key`, :meth:`_encode` and
    :meth:`_accept` and add its own lookup after an exact miss.
    """

    kind = "lc-llm"

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | str | None = None,
        tenant: Tenant = None,
    ) -> None:
        self.tenant = check_tenant(tenant)
        base = cache if cache is not None else default_cache()
        if not isinstance(base, TieredCache):
            raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
        self.cache = kind_namespace(base, self.kind, namespace)
        self.ttl = ttl
        self._stats = AdapterStats("LLMCache")

    # A BaseCache is consulted only if truthy (`if llm_cache:` in LangChain); never be falsy.
    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<LLMCache namespace={self.cache.namespace!r} cache={self.cache!r}>"

    # -- shared logic -------------------------------------------------------------------------

    def _key(self, prompt: str, llm_string: str) -> str | None:
        try:
            # A chat model's llm_string starts with its serialized configuration; a BaseLLM's
            # does not, so its configuration is read from the calling model.
            model = None if llm_string.startswith("{") else calling_llm_identity()
            key = llm_cache_key(prompt, llm_string, model)
        except Exception as exc:
            self._stats.problem(
                "key_errors", "could not build a key (%s: %s)", type(exc).__name__, exc
            )
            return None
        return tenant_scoped_key(key, self.tenant, self._stats)

    def _accept(self, raw: Any) -> tuple[list[Generation] | None, bool]:
        """Decode what the cache returned: ``(generations or None, delete the entry?)``."""
        if raw is MISS:
            self._stats.count("misses")
            GLOBAL_SAVINGS.record_miss("langchain")
            return None, False
        try:
            generations, tokens = decode_hit(raw)
        except Exception as exc:
            self._stats.problem("bad_entries", "unusable cache entry dropped (%s)", exc)
            GLOBAL_SAVINGS.record_miss("langchain")
            return None, True
        self._stats.count("hits")
        GLOBAL_SAVINGS.record_hit(tokens=tokens, framework="langchain")
        return generations, False

    def _encode(self, return_val: RETURN_VAL_TYPE) -> bytes | None:
        try:
            payload, revived = encode_generations(return_val)
        except Uncacheable as exc:
            self._stats.problem("skipped_writes", "result not cached: %s", exc)
            return None
        except Exception as exc:
            self._stats.problem(
                "skipped_writes", "result not cached: %s: %s", type(exc).__name__, exc
            )
            return None
        remember(payload, revived)
        return payload

    # -- BaseCache, sync ----------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        generations, drop = self._accept(self.cache.get(key, MISS))
        if drop:
            self.cache.delete(key)
        return generations

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        key = self._key(prompt, llm_string)
        payload = None if key is None else self._encode(return_val)
        if key is not None and payload is not None:
            self.cache.set(key, payload, ttl=self.ttl)

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of this cache's namespace (O(1); other namespaces are untouched)."""
        self.cache.clear()

    # -- BaseCache, async ---------------------------------------------------------------------

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        generations, drop = self._accept(await self.cache.aget(key, MISS))
        if drop:
            await self.cache.adelete(key)
        return generations

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        key = self._key(prompt, llm_string)
        payload = None if key is None else self._encode(return_val)
        if key is not None and payload is not None:
            await self.cache.aset(key, payload, ttl=self.ttl)

    async def aclear(self, **kwargs: Any) -> None:
        await self.cache.aclear()

    # -- introspection ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """This adapter's hits, misses, skipped writes and bad entries, plus the tiers' stats."""
        return {**self._stats.snapshot(), "cache": self.cache.stats()}
