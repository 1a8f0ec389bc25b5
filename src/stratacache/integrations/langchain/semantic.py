"""``SemanticLLMCache``: :class:`LLMCache` first, then the semantic layer.

LangChain consults a ``BaseCache`` with ``(prompt, llm_string)``. The exact layer is
:class:`~stratacache.integrations.langchain.cache.LLMCache` unchanged (same key, same
namespace, same entries: a plain ``LLMCache`` over the same tiers shares them). Only after an
exact miss is the question split in two for :class:`~stratacache.semantic.SemanticCache`:

* the **text** compared semantically: the last user turn of a chat, or the whole prompt of a
  text-completion model;
* the **scope**, which must match exactly: the model and every answer-changing parameter (the
  same parsed material as the exact key, so the deny-list of transport fields is the same),
  the system prompt and every earlier turn (normalised as in the exact key), the last turn's
  non-text fields (``name``...), and the tenant.

The semantic layer is skipped (the call goes to the model) when the last message is not a user
message (a tool result, an AI prefill), when its content is not a single plain text, and for
multi-generation requests (``n``/``best_of``/``candidate_count`` > 1). On a miss the answer is
written to both layers; an uncacheable answer (empty, an error, not serializable) to neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from langchain_core.caches import RETURN_VAL_TYPE
from langchain_core.outputs import Generation

from stratacache._config import parse_duration
from stratacache._stats import GLOBAL_SAVINGS
from stratacache.integrations._shared import (
    AdapterStats,
    Tenant,
    check_tenant,
    default_cache,
    kind_namespace,
    resolve_tenant,
)
from stratacache.integrations.langchain._keys import (
    _normalize_llm_string,
    _normalize_prompt,
    calling_llm_identity,
)
from stratacache.integrations.langchain._serde import decode_generations, usage_tokens
from stratacache.integrations.langchain.cache import LLMCache
from stratacache.keys import MESSAGE_VOLATILE_FIELDS, _strip_messages
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

if TYPE_CHECKING:
    from stratacache.semantic import Verifier

__all__ = ["SemanticLLMCache"]

#: Parameters that ask for several answers at once: one stored answer cannot stand for them.
_MULTI_FIELDS: Final = ("n", "best_of", "candidate_count")
#: Message types whose text is the user's question (``ChatMessage`` with role ``user`` too).
_USER_TYPES: Final = frozenset({"human", "HumanMessageChunk"})
#: Keys a plain text content block may carry.
_TEXT_BLOCK_KEYS: Final = frozenset({"type", "text", "id"})
_SCOPE_VERSION: Final = 1


class _Skip(Exception):
    """The semantic layer does not apply to this call (the reason is the message)."""


def _plain_text(content: Any) -> str:
    """The text of a message content that is plain text only, else :class:`_Skip`."""
    if isinstance(content, str):
        text = content
    elif (
        isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], dict)
        and content[0].get("type") == "text"
        and isinstance(content[0].get("text"), str)
        and set(content[0]) <= _TEXT_BLOCK_KEYS
    ):
        text = content[0]["text"]
    else:
        raise _Skip("not_plain_text")
    if not text.strip():
        raise _Skip("empty_text")
    return text


def _is_multi(fields: Any) -> bool:
    if not isinstance(fields, dict):
        return False
    for name in _MULTI_FIELDS:
        value = fields.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 1:
            return True
    return False


def _model_kwargs(model: Any) -> Any:
    return model.get("kwargs") if isinstance(model, dict) else None


class SemanticLLMCache(LLMCache):
    """An :class:`LLMCache` that also serves answers to questions asked in other words.

    ::

        from langchain_core.globals import set_llm_cache
        set_llm_cache(SemanticLLMCache(embeddings=emb, cache=cache))  # exact first, then semantic

    :param cache: the tiers (default: the process-wide ``TieredCache.default()``). Exact entries
        live in ``lc-llm`` (shared with a plain ``LLMCache``), semantic entries in ``lc-sem``
        (``<cache namespace>.lc-…`` for a namespaced cache).
    :param embeddings: any LangChain ``Embeddings`` (or anything
        :func:`stratacache.semantic.as_embedder` accepts); default: the offline
        :class:`~stratacache.semantic.LocalEmbedder`.
    :param threshold: None (default) for the guarded decision; a cosine in (0, 1] to also serve
        candidates that differ only in content words (see :class:`SemanticCache`).
    :param error_budget: share of wrong hits a learned threshold may risk.
    :param verifier: optional ``(new_question, cached_question, cached_answer_text) -> bool``
        (or async) consulted on borderline candidates; it receives the cached answer's text.
    :param tenant: who may share answers: a ``str``, or a zero-argument callable evaluated
        per request (e.g. reading a contextvar) returning a ``str`` or None. Both layers serve
        **within one tenant only**: the exact key is ``LLMCache``'s for the same tenant, and
        the tenant is part of the semantic scope, so a lookup searches only the caller's
        partition. The default None is one partition of its own (a single-tenant app).
    :param ttl: lifetime of new entries in both layers (seconds or ``"1h"``).
    :param namespace: the exact layer's namespace (as for ``LLMCache``); the semantic layer
        uses ``<namespace>.lc-sem``.
    """

    def __init__(
        self,
        cache: TieredCache | None = None,
        *,
        embeddings: Any = None,
        threshold: float | None = None,
        error_budget: float = 0.02,
        verifier: Verifier | None = None,
        tenant: Tenant = None,
        ttl: float | str | None = None,
        namespace: str | None = None,
    ) -> None:
        # Imported here: `import stratacache.langchain` must not need the semantic extra (numpy).
        from stratacache.semantic import SemanticCache

        check_tenant(tenant)
        base = cache if cache is not None else default_cache()
        super().__init__(base, namespace=namespace, ttl=ttl, tenant=tenant)
        self._stats = AdapterStats("SemanticLLMCache")
        self.user_verifier = verifier
        owner = base if namespace is None else base.with_namespace(namespace)
        view = kind_namespace(owner, "lc-sem", None)
        self.semantic = SemanticCache(
            embeddings,
            view,
            threshold,
            error_budget,
            verifier=None if verifier is None else self._verify,
            ttl=parse_duration(ttl),
            namespace=view.namespace,
        )

    def __repr__(self) -> str:
        return (
            f"<SemanticLLMCache namespace={self.cache.namespace!r} "
            f"semantic={self.semantic.cache.namespace!r} cache={self.cache!r}>"
        )

    # -- the split ------------------------------------------------------------------------------

    def _verify(self, new: str, cached_question: str, value: Any) -> Any:
        """The user's verifier, given the cached answer's text instead of stored bytes."""
        assert self.user_verifier is not None
        try:
            answer: Any = "\n".join(g.text for g in decode_generations(value))
        except ValueError:
            answer = value
        return self.user_verifier(new, cached_question, answer)

    def _tenant(self) -> str | None:
        return resolve_tenant(self.tenant)

    def _split(self, prompt: str, llm_string: str) -> tuple[str, dict[str, Any]]:
        """``(text compared semantically, scope that must match exactly)``.

        :raises _Skip: when the semantic layer does not apply.
        """
        # As LLMCache._key: a BaseLLM's configuration is read from the calling model.
        model = None if llm_string.startswith("{") else calling_llm_identity()
        llm = _normalize_llm_string(llm_string)
        if _is_multi(llm.get("params")) or _is_multi(_model_kwargs(llm.get("model"))):
            raise _Skip("multi_generation")
        if _is_multi(_model_kwargs(model)):
            raise _Skip("multi_generation")
        messages = _normalize_prompt(prompt)
        scope: dict[str, Any] = {"v": _SCOPE_VERSION, "llm": llm, "model": model}
        if isinstance(messages, str):
            if not messages.strip():
                raise _Skip("empty_text")
            text = messages
            scope["kind"] = "text"
        else:
            if not messages or not isinstance(messages[-1], dict):
                raise _Skip("no_user_turn")
            last = messages[-1]
            kind = last.get("type")
            if kind not in _USER_TYPES and not (kind == "chat" and last.get("role") == "user"):
                raise _Skip("not_user_turn")
            text = _plain_text(last.get("content"))
            scope["kind"] = "chat"
            scope["history"] = _strip_messages(messages[:-1])
            scope["turn"] = {
                k: v for k, v in last.items() if k != "content" and k not in MESSAGE_VOLATILE_FIELDS
            }
        scope["tenant"] = self._tenant()
        return text, scope

    def _query(self, prompt: str, llm_string: str, count: bool) -> tuple[str, Any] | None:
        try:
            text, scope = self._split(prompt, llm_string)
            self.semantic.partition(scope)  # validates: content that cannot be keyed is a skip
        except _Skip as skip:
            if count:
                self._stats.count("semantic_skipped")
                self._stats.count(f"semantic_skipped:{skip}")
            return None
        except Exception as exc:
            self._stats.problem(
                "semantic_errors", "semantic layer skipped (%s: %s)", type(exc).__name__, exc
            )
            return None
        return text, scope

    def _miss(self) -> None:
        self._stats.count("misses")
        GLOBAL_SAVINGS.record_miss("langchain")

    def _served(self, value: Any) -> list[Generation] | None:
        if value is None:
            self._miss()
            return None
        try:
            generations = decode_generations(value)
        except Exception as exc:
            self._stats.problem("bad_entries", "unusable semantic entry ignored (%s)", exc)
            self._miss()
            return None
        # ``hits`` counts every answer served from the cache, as in the LiteLLM and
        # LlamaIndex adapters (hit rate = hits / (hits + misses)); ``semantic_hits`` says how
        # many of them the semantic layer served.
        self._stats.count("hits")
        self._stats.count("semantic_hits")
        GLOBAL_SAVINGS.record_hit(tokens=usage_tokens(generations), framework="langchain")
        return generations

    @staticmethod
    def _single(return_val: Sequence[Generation]) -> bool:
        return isinstance(return_val, Sequence) and len(return_val) == 1

    # -- BaseCache, sync ------------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        raw = self.cache.get(key, MISS)
        if raw is not MISS:
            generations, drop = self._accept(raw)
            if drop:
                self.cache.delete(key)
            return generations
        query = self._query(prompt, llm_string, count=True)
        if query is None:
            self._miss()
            return None
        return self._served(self.semantic.lookup(*query))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        key = self._key(prompt, llm_string)
        payload = None if key is None else self._encode(return_val)
        if key is None or payload is None:
            return
        self.cache.set(key, payload, ttl=self.ttl)
        if not self._single(return_val):
            return
        query = self._query(prompt, llm_string, count=False)
        if query is not None:
            self.semantic.store(query[0], payload, query[1])

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of both layers (their namespaces only)."""
        self.cache.clear()
        self.semantic.clear()

    # -- BaseCache, async -----------------------------------------------------------------------

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        raw = await self.cache.aget(key, MISS)
        if raw is not MISS:
            generations, drop = self._accept(raw)
            if drop:
                await self.cache.adelete(key)
            return generations
        query = self._query(prompt, llm_string, count=True)
        if query is None:
            self._miss()
            return None
        return self._served(await self.semantic.alookup(*query))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        key = self._key(prompt, llm_string)
        payload = None if key is None else self._encode(return_val)
        if key is None or payload is None:
            return
        await self.cache.aset(key, payload, ttl=self.ttl)
        if not self._single(return_val):
            return
        query = self._query(prompt, llm_string, count=False)
        if query is not None:
            await self.semantic.astore(query[0], payload, query[1])

    async def aclear(self, **kwargs: Any) -> None:
        await self.cache.aclear()
        await self.semantic.aclear()

    # -- introspection --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``hits`` (every answer served, by either layer), ``semantic_hits`` (those the
        semantic layer served), ``misses`` (both layers missed or the semantic
        layer was skipped), ``semantic_skipped:<reason>``, the semantic layer's own stats under
        ``semantic`` and the tiers' under ``cache``."""
        return {
            **self._stats.snapshot(),
            "cache": self.cache.stats(),
            "semantic": self.semantic.stats(),
        }
