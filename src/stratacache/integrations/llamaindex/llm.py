"""``CachedLLM``: exact-match caching for any LlamaIndex LLM (LlamaIndex has no LLM cache).

``complete``, ``chat``, ``stream_complete``, ``stream_chat`` and their async twins are cached;
sync and async share entries. Keys hold the model's whole configuration minus a documented
transport/secret deny-list (see ``_keys``), the messages (files keyed by their bytes) and the
call kwargs, so tools and ``tool_choice`` passed by ``chat_with_tools`` are part of the key.
Streams replay chunk by chunk and are stored only once fully consumed; errors, empty answers,
interrupted streams and answers the provider flags as filtered or unfinished (``raw``'s
``finish_reason``, see ``_cacheable``) are never stored.

``semantic=True`` (or a ready :class:`~stratacache.semantic.SemanticCache`) adds a second
layer, asked only after an exact miss: the last user message (or the ``complete`` prompt) is
matched semantically within a scope holding everything else exactly: the model's whole
configuration, the method, the call kwargs (tools, temperature...), the system prompt, every
earlier turn verbatim, and the ``tenant``. Every stored answer is written to both layers. The
``tenant`` is in the exact key too: no layer serves an answer across tenants.
Chats whose last message is not a plain-text user message (a tool result, an image) and calls
asking for several choices use the exact layer only.

Two wrapper classes exist so that ``isinstance(llm, FunctionCallingLLM)`` keeps holding;
``CachedLLM(x)`` picks the right one. The wrapper is left undecorated on purpose: a hit fires
no ``LLMChatStartEvent`` (nothing was sent) but a :class:`CacheHitEvent`, and a miss fires the
inner model's own events once.

:func:`patch_llm` applies the same logic to an existing object (for engines that captured it
before ``install()``), which also keeps provider overrides such as ``OpenAI.structured_predict``.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar, cast

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import PrivateAttr, SerializeAsAny
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

from stratacache._config import parse_duration
from stratacache._stats import GLOBAL_SAVINGS
from stratacache.errors import ConfigurationError
from stratacache.integrations._cacheable import finish_reasons, refused_finish
from stratacache.integrations._shared import (
    AdapterStats,
    Tenant,
    check_tenant,
    default_cache,
    kind_namespace,
    resolve_tenant,
    tenant_scoped_key,
)
from stratacache.integrations.llamaindex._keys import (
    Uncacheable,
    clean_kwargs,
    llm_identity,
    messages_for_key,
    request_state,
)
from stratacache.integrations.llamaindex.embedding import count_tokens
from stratacache.integrations.llamaindex.events import CacheHitEvent, CacheMissEvent, emit
from stratacache.integrations.llamaindex.ratelimit import metered, settle, usage_of
from stratacache.keys import make_key
from stratacache.semantic import SemanticCache
from stratacache.tiered import TieredCache
from stratacache.tiers.base import MISS

__all__ = ["CachedFunctionCallingLLM", "CachedLLM", "LLMCacher", "patch_llm", "unpatch_llm"]

R = TypeVar("R", ChatResponse, CompletionResponse)
_FORMAT = 1


def _text_of(resp: Any) -> str:
    if isinstance(resp, ChatResponse):
        return resp.message.content or ""
    return str(getattr(resp, "text", "") or "")


def _empty(resp: Any) -> bool:
    if isinstance(resp, ChatResponse):
        msg = resp.message
        if msg.content or msg.additional_kwargs.get("tool_calls"):
            return False
        return not any(not isinstance(b, TextBlock) for b in msg.blocks)
    return not _text_of(resp)


def _refused(responses: Sequence[Any]) -> str | None:
    """Why an answer (or a stream's chunks) must not be stored, read from the provider's
    ``raw`` responses: a filtered or failed finish reason, or, for OpenAI-shaped chunks, no
    finish reason at all (a stream that ended without finishing). None when storable."""
    reasons: list[Any] = []
    shaped = False
    for resp in responses:
        found = finish_reasons(getattr(resp, "raw", None))
        if found is not None:
            shaped = True
            reasons.extend(found)
    refused = refused_finish(reasons)
    if refused is not None:
        return f"finish_reason {refused}"
    if shaped and not any(reasons):
        return "no finish_reason"
    return None


def _dump(resp: Any) -> dict[str, Any]:
    data: dict[str, Any] = resp.model_dump(mode="json", exclude={"raw"})
    return data


def _prompt_text(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("prompt", ""))
    return "\n".join(m.content or "" for m in payload)


def _last_user_text(messages: Sequence[ChatMessage]) -> str | None:
    """The text of the last message if it is a plain-text user message, else None."""
    if not messages:
        return None
    last = messages[-1]
    if last.role != MessageRole.USER:
        return None
    texts = []
    for block in last.blocks:
        if isinstance(block, CachePoint):  # a provider prompt-caching marker, not content
            continue
        if not isinstance(block, TextBlock):
            return None
        texts.append(block.text)
    text = "\n".join(texts)
    return text if text.strip() else None


def _several_choices(llm: Any, kwargs: dict[str, Any]) -> bool:
    extra = getattr(llm, "additional_kwargs", None)
    for source in (kwargs, extra if isinstance(extra, dict) else {}):
        n = source.get("n")
        if n is not None and n != 1:
            return True
    return False


class LLMCacher:
    """Keying, lookup, encoding and store logic for one cache, shared by all LLM methods."""

    def __init__(
        self,
        cache: TieredCache,
        *,
        ttl: float | str | None,
        model_id: str | None,
        semantic: SemanticCache | None = None,
        tenant: Tenant = None,
    ) -> None:
        self.cache = cache
        self.ttl = ttl
        self.model_id = model_id
        self.semantic = semantic
        self.tenant = tenant
        self.stats = AdapterStats("llamaindex.CachedLLM")

    # -- shared logic -------------------------------------------------------------------------

    def key(self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any]) -> str | None:
        try:
            ident: Any = (
                llm_identity(llm)
                if self.model_id is None
                else {"model_id": self.model_id, "state": request_state(llm)}
            )
            prompt = payload if isinstance(payload, dict) else None
            # Not make_key's ``messages=``: its per-run id stripping is for LangChain-style
            # message dicts; ids inside LlamaIndex messages are content (see messages_for_key).
            chat = None if prompt is not None else messages_for_key(payload)
            key = make_key(
                namespace="li", llm=ident, method=method, prompt=prompt, chat=chat,
                kwargs=clean_kwargs(kwargs),
            )  # fmt: skip
        except Uncacheable as exc:
            self.stats.problem("uncacheable", "call not cached: %s", exc)
            return None
        except Exception as exc:
            self.stats.problem("key_errors", "could not build a key (%s: %s)",
                               type(exc).__name__, exc)  # fmt: skip
            return None
        return tenant_scoped_key(key, self.tenant, self.stats)

    def semantic_request(
        self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any]
    ) -> tuple[str, Any] | None:
        """``(text matched semantically, scope)``, or None when the call uses the exact layer
        only. The scope is this call's exact key with the matched text blanked, plus the tenant.
        """
        if self.semantic is None:
            return None
        try:
            if _several_choices(llm, kwargs):
                self.stats.count("semantic_skipped: n")
                return None
            if isinstance(payload, dict):
                prompt = str(payload.get("prompt") or "")
                if not prompt.strip():
                    return None
                blank: Any = {**payload, "prompt": ""}
            else:
                messages = list(payload)
                text = _last_user_text(messages)
                if text is None:
                    self.stats.count("semantic_skipped: not_user_text")
                    return None
                prompt = text
                blank = [*messages[:-1], messages[-1].model_copy(update={"blocks": []})]
            scope_key = self.key(llm, method, blank, kwargs)
            if scope_key is None:
                return None
            tenant = resolve_tenant(self.tenant)
        except Exception as exc:
            self.stats.problem("semantic_errors", "semantic layer skipped: %s", exc)
            return None
        return prompt, {"llamaindex": scope_key, "tenant": tenant}

    def _semantic_found(self, found: Any) -> Any:
        if found is None:
            return MISS
        self.stats.count("semantic_hits")
        return found

    def lookup(self, key: str, call: tuple[Any, str, Any, dict[str, Any]]) -> tuple[Any, Any]:
        """``(exact entry, else after an exact miss the semantic one, else MISS; the semantic
        request)``. The semantic request is only built when the exact layer missed."""
        raw = self.cache.get(key, MISS)
        request = None
        if raw is MISS and self.semantic is not None:
            request = self.semantic_request(*call)
            if request is not None:
                raw = self._semantic_found(self.semantic.lookup(*request))
        return raw, request

    async def alookup(
        self, key: str, call: tuple[Any, str, Any, dict[str, Any]]
    ) -> tuple[Any, Any]:
        raw = await self.cache.aget(key, MISS)
        request = None
        if raw is MISS and self.semantic is not None:
            request = self.semantic_request(*call)
            if request is not None:
                raw = self._semantic_found(await self.semantic.alookup(*request))
        return raw, request

    def put(self, key: str, value: dict[str, Any], request: tuple[str, Any] | None) -> None:
        """Store in the exact layer and, for a call the semantic layer may serve, in it too."""
        self.cache.set(key, value, ttl=self.ttl)
        if request is not None and self.semantic is not None:
            self.semantic.store(request[0], value, request[1])

    async def aput(self, key: str, value: dict[str, Any], request: tuple[str, Any] | None) -> None:
        await self.cache.aset(key, value, ttl=self.ttl)
        if request is not None and self.semantic is not None:
            await self.semantic.astore(request[0], value, request[1])

    def accept(self, raw: Any, key: str, method: str) -> dict[str, Any] | None:
        """A usable stored entry, or None (counted as a miss)."""
        if raw is not MISS:
            if isinstance(raw, dict) and raw.get("v") == _FORMAT and ("r" in raw or "s" in raw):
                tokens = raw.get("t") if isinstance(raw.get("t"), int) else None
                self.stats.count("hits")
                GLOBAL_SAVINGS.record_hit(tokens=tokens or 0, framework="llamaindex")
                emit(CacheHitEvent, kind="llm", method=method, key=key, tokens=tokens)
                return raw
            self.stats.problem("bad_entries", "an unusable cache entry was ignored")
        self.stats.count("misses")
        GLOBAL_SAVINGS.record_miss("llamaindex")
        emit(CacheMissEvent, kind="llm", method=method, key=key)
        return None

    def decode(self, entry: dict[str, Any], cls: type[R]) -> R | None:
        try:
            return cls.model_validate(entry["r"])
        except Exception as exc:
            self.stats.problem("bad_entries", "unusable cache entry ignored (%s)", exc)
            return None

    def decode_stream(self, entry: dict[str, Any], cls: type[R]) -> list[R] | None:
        try:
            return [cls.model_validate(c) for c in entry["s"]]
        except Exception as exc:
            self.stats.problem("bad_entries", "unusable cache entry ignored (%s)", exc)
            return None

    def encode(self, resp: Any, tokens: int | None) -> dict[str, Any] | None:
        if _empty(resp):
            self.stats.count("skipped_empty")
            return None
        reason = _refused([resp])
        if reason is not None:
            self.stats.count(f"skipped: {reason}")
            return None
        try:
            return {"v": _FORMAT, "r": _dump(resp), "t": tokens}
        except Exception as exc:
            self.stats.problem("skipped_writes", "response not cached: %s", exc)
            return None

    def encode_stream(self, chunks: list[Any], tokens: int | None) -> dict[str, Any] | None:
        if not chunks or _empty(chunks[-1]):
            self.stats.count("skipped_empty")
            return None
        reason = _refused(chunks)
        if reason is not None:
            self.stats.count(f"skipped: {reason}")
            return None
        try:
            return {"v": _FORMAT, "s": [_dump(c) for c in chunks], "t": tokens}
        except Exception as exc:
            self.stats.problem("skipped_writes", "stream not cached: %s", exc)
            return None

    @staticmethod
    def estimator(llm: Any, payload: Any, kwargs: dict[str, Any]) -> Callable[[], int]:
        def estimate() -> int:
            budget = kwargs.get("max_tokens") or getattr(llm, "max_tokens", None)
            if not isinstance(budget, int) or budget <= 0:
                budget = llm.metadata.num_output if llm.metadata.num_output > 0 else 256
            return count_tokens([_prompt_text(payload)]) + budget

        return estimate

    @staticmethod
    def tokens(resp: Any, payload: Any) -> int:
        used = usage_of(resp)
        if used is None:
            used = count_tokens([_prompt_text(payload), _text_of(resp)])
        return used

    # -- sync ---------------------------------------------------------------------------------

    def call(
        self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any],
        invoke: Callable[[], R], cls: type[R],
    ) -> R:  # fmt: skip
        key = self.key(llm, method, payload, kwargs)
        request = None
        if key is not None:
            raw, request = self.lookup(key, (llm, method, payload, kwargs))
            entry = self.accept(raw, key, method)
            hit = None if entry is None else self.decode(entry, cls)
            if hit is not None:
                return hit
        with metered(llm, self.estimator(llm, payload, kwargs)) as scope:
            resp = invoke()
        tokens = usage_of(resp)
        settle(scope, tokens if tokens is not None or scope is None else self.tokens(resp, payload))
        value = None if key is None else self.encode(resp, tokens)
        if key is not None and value is not None:
            self.put(key, value, request)
        return resp

    def stream(
        self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any],
        invoke: Callable[[], Generator[R, None, None]], cls: type[R],
    ) -> Generator[R, None, None]:  # fmt: skip
        key = self.key(llm, method, payload, kwargs)
        request = None
        if key is not None:
            raw, request = self.lookup(key, (llm, method, payload, kwargs))
            entry = self.accept(raw, key, method)
            replay = None if entry is None else self.decode_stream(entry, cls)
            if replay is not None:
                return (r for r in replay)
        with metered(llm, self.estimator(llm, payload, kwargs)) as scope:
            source = invoke()

        def record() -> Generator[R, None, None]:
            chunks: list[R] = []
            for chunk in source:
                chunks.append(chunk)
                yield chunk
            # Reached only when the stream ran to its end: partial streams are never stored.
            tokens = usage_of(chunks[-1]) if chunks else None
            settle(scope, tokens if tokens is not None or scope is None or not chunks
                   else self.tokens(chunks[-1], payload))  # fmt: skip
            value = None if key is None else self.encode_stream(chunks, tokens)
            if key is not None and value is not None:
                self.put(key, value, request)

        return record()

    # -- async --------------------------------------------------------------------------------

    async def acall(
        self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any],
        invoke: Callable[[], Awaitable[R]], cls: type[R],
    ) -> R:  # fmt: skip
        key = self.key(llm, method, payload, kwargs)
        request = None
        if key is not None:
            raw, request = await self.alookup(key, (llm, method, payload, kwargs))
            entry = self.accept(raw, key, method)
            hit = None if entry is None else self.decode(entry, cls)
            if hit is not None:
                return hit
        with metered(llm, self.estimator(llm, payload, kwargs)) as scope:
            resp = await invoke()
        tokens = usage_of(resp)
        settle(scope, tokens if tokens is not None or scope is None else self.tokens(resp, payload))
        value = None if key is None else self.encode(resp, tokens)
        if key is not None and value is not None:
            await self.aput(key, value, request)
        return resp

    async def astream(
        self, llm: Any, method: str, payload: Any, kwargs: dict[str, Any],
        invoke: Callable[[], Awaitable[AsyncGenerator[R, None]]], cls: type[R],
    ) -> AsyncGenerator[R, None]:  # fmt: skip
        key = self.key(llm, method, payload, kwargs)
        request = None
        if key is not None:
            raw, request = await self.alookup(key, (llm, method, payload, kwargs))
            entry = self.accept(raw, key, method)
            replay = None if entry is None else self.decode_stream(entry, cls)
            if replay is not None:

                async def replayed() -> AsyncGenerator[R, None]:
                    for r in replay:
                        yield r

                return replayed()
        with metered(llm, self.estimator(llm, payload, kwargs)) as scope:
            source = await invoke()

        async def record() -> AsyncGenerator[R, None]:
            chunks: list[R] = []
            async for chunk in source:
                chunks.append(chunk)
                yield chunk
            tokens = usage_of(chunks[-1]) if chunks else None
            settle(scope, tokens if tokens is not None or scope is None or not chunks
                   else self.tokens(chunks[-1], payload))  # fmt: skip
            value = None if key is None else self.encode_stream(chunks, tokens)
            if key is not None and value is not None:
                await self.aput(key, value, request)

        return record()


def _semantic_layer(
    semantic: bool | SemanticCache | None,
    base: TieredCache,
    namespace: str | None,
    ttl: float | str | None,
    tenant: Tenant,
) -> SemanticCache | None:
    check_tenant(tenant)
    if isinstance(semantic, SemanticCache):
        return semantic
    if semantic is None or semantic is False:
        return None
    if semantic is not True:
        raise ConfigurationError(
            f"semantic must be True, False or a SemanticCache, got {type(semantic).__name__}"
        )
    return SemanticCache(
        None,
        base,
        ttl=parse_duration(ttl),
        namespace=f"{namespace}.semantic" if namespace else None,
    )


def _make_cacher(
    cache: TieredCache | None,
    namespace: str | None,
    ttl: float | str | None,
    model_id: str | None,
    semantic: bool | SemanticCache | None = False,
    tenant: Tenant = None,
) -> LLMCacher:
    base = cache if cache is not None else default_cache()
    if not isinstance(base, TieredCache):
        raise TypeError(f"cache must be a stratacache.TieredCache, not {type(base).__name__}")
    return LLMCacher(
        kind_namespace(base, "li-llm", namespace), ttl=ttl, model_id=model_id,
        semantic=_semantic_layer(semantic, base, namespace, ttl, tenant), tenant=tenant,
    )  # fmt: skip


def _cp(prompt: str, formatted: bool) -> dict[str, Any]:
    return {"prompt": prompt, "formatted": formatted}


class CachedLLM(LLM):
    """``CachedLLM(OpenAI(...), cache=cache)``: a drop-in LLM that answers repeats from cache.

    :param llm: the model to wrap (positional); a ``FunctionCallingLLM`` gives a
        :class:`CachedFunctionCallingLLM`, which still works in agents and ``structured_predict``.
    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param namespace: default ``li-llm`` (or ``<cache namespace>.li-llm``).
    :param ttl: lifetime of new entries (seconds or ``"1h"``).
    :param model_id: replace the automatic model identity in keys (e.g. to share entries
        between two clients of the same deployment).
    :param semantic: True (a :class:`~stratacache.semantic.SemanticCache` with the offline
        ``LocalEmbedder`` over ``cache``) or a ready ``SemanticCache``: after an exact miss,
        serve an answer to the same question asked in other words, within the same model,
        configuration, call kwargs, earlier turns and tenant. Default False: exact only.
    :param tenant: who may share answers, in both layers: a string or a zero-argument
        callable evaluated on every call (e.g. reading a context variable) returning a string
        or None. Default None: the no-tenant partition (a single-tenant app). A callable that
        fails or returns a non-string makes that call bypass the cache (``tenant_errors``).
    """

    inner: SerializeAsAny[LLM]
    _cacher: LLMCacher = PrivateAttr()

    def __new__(cls, llm: Any = None, *args: Any, **kwargs: Any) -> CachedLLM:
        if cls is CachedLLM and isinstance(llm, FunctionCallingLLM):
            cls = CachedFunctionCallingLLM
        return super().__new__(cls)

    def __init__(
        self,
        llm: LLM,
        cache: TieredCache | None = None,
        *,
        namespace: str | None = None,
        ttl: float | str | None = None,
        model_id: str | None = None,
        semantic: bool | SemanticCache = False,
        tenant: Tenant = None,
        **kwargs: Any,
    ) -> None:
        # The high-level LLM methods (predict, structured_predict, ...) read these fields on
        # the wrapper itself, so they must be the inner model's.
        for name in ("system_prompt", "messages_to_prompt", "completion_to_prompt",
                     "output_parser", "pydantic_program_mode", "query_wrapper_prompt",
                     "callback_manager"):  # fmt: skip
            kwargs.setdefault(name, getattr(llm, name))
        cacher = _make_cacher(cache, namespace, ttl, model_id, semantic, tenant)
        super().__init__(inner=llm, **kwargs)  # type: ignore[call-arg]
        self._cacher = cacher

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.inner.metadata

    @property
    def semantic(self) -> SemanticCache | None:
        """The semantic layer, or None (exact matching only)."""
        return self._cacher.semantic

    def stats(self) -> dict[str, Any]:
        out = {**self._cacher.stats.snapshot(), "cache": self._cacher.cache.stats()}
        if self._cacher.semantic is not None:
            out["semantic"] = self._cacher.semantic.stats()
        return out

    def clear(self) -> None:
        """Drop every cached answer of this wrapper's namespace (O(1))."""
        self._cacher.cache.clear()

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._cacher.call(
            self.inner, "complete", _cp(prompt, formatted), kwargs,
            lambda: self.inner.complete(prompt, formatted=formatted, **kwargs), CompletionResponse,
        )  # fmt: skip

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self._cacher.stream(
            self.inner, "stream_complete", _cp(prompt, formatted), kwargs,
            lambda: self.inner.stream_complete(prompt, formatted=formatted, **kwargs),
            CompletionResponse,
        )  # fmt: skip

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._cacher.call(
            self.inner, "chat", messages, kwargs,
            lambda: self.inner.chat(messages, **kwargs), ChatResponse,
        )  # fmt: skip

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._cacher.stream(
            self.inner, "stream_chat", messages, kwargs,
            lambda: self.inner.stream_chat(messages, **kwargs), ChatResponse,
        )  # fmt: skip

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await self._cacher.acall(
            self.inner, "complete", _cp(prompt, formatted), kwargs,
            lambda: self.inner.acomplete(prompt, formatted=formatted, **kwargs),
            CompletionResponse,
        )  # fmt: skip

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await self._cacher.astream(
            self.inner, "stream_complete", _cp(prompt, formatted), kwargs,
            lambda: self.inner.astream_complete(prompt, formatted=formatted, **kwargs),
            CompletionResponse,
        )  # fmt: skip

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._cacher.acall(
            self.inner, "chat", messages, kwargs,
            lambda: self.inner.achat(messages, **kwargs), ChatResponse,
        )  # fmt: skip

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return await self._cacher.astream(
            self.inner, "stream_chat", messages, kwargs,
            lambda: self.inner.astream_chat(messages, **kwargs), ChatResponse,
        )  # fmt: skip


class CachedFunctionCallingLLM(CachedLLM, FunctionCallingLLM):
    """A :class:`CachedLLM` that is also a ``FunctionCallingLLM`` (agents, programs, tools).

    ``chat_with_tools`` (inherited) prepares kwargs through the inner model's plumbing and then
    calls the cached ``chat``, so the tool specs end up in the key and tool calls are replayed
    as the ``ToolCallBlock``s the inner model produced.
    """

    inner: SerializeAsAny[FunctionCallingLLM]

    @classmethod
    def class_name(cls) -> str:
        return "CachedFunctionCallingLLM"

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return self.inner._prepare_chat_with_tools_compat(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required,
            **kwargs,
        )  # fmt: skip

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self.inner._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        return self.inner.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


# -- in-place mode ----------------------------------------------------------------------------

_PATCHED = "__stratacache_llm__"
_LLM_METHODS = (
    "complete", "stream_complete", "chat", "stream_chat",
    "acomplete", "astream_complete", "achat", "astream_chat",
)  # fmt: skip
#: Patches whose cached method is running in this context: a CustomLLM's chat() calls its own
#: complete(), which must pass straight through instead of being cached (and metered) again.
_active: contextvars.ContextVar[frozenset[object]] = contextvars.ContextVar(
    "stratacache_llamaindex_active", default=frozenset()
)


def patch_llm(
    llm: LLM,
    cache: TieredCache | None = None,
    *,
    namespace: str | None = None,
    ttl: float | str | None = None,
    model_id: str | None = None,
    semantic: bool | SemanticCache = False,
    tenant: Tenant = None,
) -> LLM:
    """Cache an existing LLM object in place; ``unpatch_llm`` undoes it.

    ``semantic`` and ``tenant`` are :class:`CachedLLM`'s.

    Instance attributes shadow the eight call methods, so every holder of this object (query
    engines, agents built earlier) goes through the cache, and the class's own higher-level
    methods (e.g. ``OpenAI.structured_predict``) keep running.
    """
    if _PATCHED in vars(llm):
        return llm
    cacher = _make_cacher(cache, namespace, ttl, model_id, semantic, tenant)
    cls = type(llm)
    orig = {name: getattr(cls, name).__get__(llm) for name in _LLM_METHODS}
    # A token owned by this patch, not id(llm): ids are reused once an object is freed.
    me = object()

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _active.set(_active.get() | {me})
            try:
                return fn(*args, **kwargs)
            finally:
                _active.reset(token)

        return run

    def nested() -> bool:
        return me in _active.get()

    def complete(prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        def call() -> Any:
            return orig["complete"](prompt, formatted=formatted, **kw)

        if nested():
            return cast(CompletionResponse, call())
        out: CompletionResponse = guarded(cacher.call)(
            llm, "complete", _cp(prompt, formatted), kw, call, CompletionResponse
        )
        return out

    def stream_complete(prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponseGen:
        def call() -> Any:
            return orig["stream_complete"](prompt, formatted=formatted, **kw)

        if nested():
            return cast(CompletionResponseGen, call())
        out: CompletionResponseGen = guarded(cacher.stream)(
            llm, "stream_complete", _cp(prompt, formatted), kw, call, CompletionResponse
        )
        return out

    def chat(messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        def call() -> Any:
            return orig["chat"](messages, **kw)

        if nested():
            return cast(ChatResponse, call())
        out: ChatResponse = guarded(cacher.call)(llm, "chat", messages, kw, call, ChatResponse)
        return out

    def stream_chat(messages: Sequence[ChatMessage], **kw: Any) -> ChatResponseGen:
        def call() -> Any:
            return orig["stream_chat"](messages, **kw)

        if nested():
            return cast(ChatResponseGen, call())
        out: ChatResponseGen = guarded(cacher.stream)(
            llm, "stream_chat", messages, kw, call, ChatResponse
        )
        return out

    async def aguarded(coro: Awaitable[Any]) -> Any:
        token = _active.set(_active.get() | {me})
        try:
            return await coro
        finally:
            _active.reset(token)

    async def acomplete(prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        def call() -> Any:
            return orig["acomplete"](prompt, formatted=formatted, **kw)

        if nested():
            return cast(CompletionResponse, await call())
        out: CompletionResponse = await aguarded(
            cacher.acall(llm, "complete", _cp(prompt, formatted), kw, call, CompletionResponse)
        )
        return out

    async def astream_complete(
        prompt: str, formatted: bool = False, **kw: Any
    ) -> CompletionResponseAsyncGen:
        def call() -> Any:
            return orig["astream_complete"](prompt, formatted=formatted, **kw)

        if nested():
            return cast(CompletionResponseAsyncGen, await call())
        out: CompletionResponseAsyncGen = await aguarded(
            cacher.astream(
                llm, "stream_complete", _cp(prompt, formatted), kw, call, CompletionResponse
            )
        )
        return out

    async def achat(messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        def call() -> Any:
            return orig["achat"](messages, **kw)

        if nested():
            return cast(ChatResponse, await call())
        out: ChatResponse = await aguarded(
            cacher.acall(llm, "chat", messages, kw, call, ChatResponse)
        )
        return out

    async def astream_chat(messages: Sequence[ChatMessage], **kw: Any) -> ChatResponseAsyncGen:
        def call() -> Any:
            return orig["astream_chat"](messages, **kw)

        if nested():
            return cast(ChatResponseAsyncGen, await call())
        out: ChatResponseAsyncGen = await aguarded(
            cacher.astream(llm, "stream_chat", messages, kw, call, ChatResponse)
        )
        return out

    patches = {
        "complete": complete, "stream_complete": stream_complete, "chat": chat,
        "stream_chat": stream_chat, "acomplete": acomplete, "astream_complete": astream_complete,
        "achat": achat, "astream_chat": astream_chat,
    }  # fmt: skip
    for name, fn in patches.items():
        object.__setattr__(llm, name, fn)
    object.__setattr__(llm, _PATCHED, cacher)
    return llm


def unpatch_llm(llm: LLM) -> None:
    """Undo :func:`patch_llm` (a no-op for an unpatched model)."""
    state = vars(llm)
    if state.pop(_PATCHED, None) is None:
        return
    for name in _LLM_METHODS:
        state.pop(name, None)
