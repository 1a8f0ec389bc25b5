"""``cache_streaming(model)``: ``stream()`` / ``astream()`` served from and stored to the cache.

LangChain never consults the LLM cache on ``stream``/``astream`` (upstream #13119). This wrapper
returns a copy of the model whose class is a thin subclass of the original (same name, module
and serialization, so ``bind_tools``, ``with_structured_output`` and the cache key are those of
the original model), overriding only ``stream`` and ``astream``:

* the key is exactly the one ``invoke`` uses (same ``prompt``/``llm_string`` pair through the
  same ``BaseCache``), so a streamed answer is a hit for ``invoke`` and vice versa;
* a hit is replayed as a stream (one content chunk, then a final chunk with usage), with the
  usual callbacks, and without taking a rate-limiter slot;
* a miss streams from the provider and stores the merged message only once the stream has run
  to its end: a consumer that stops early, a dropped connection or an error stores nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, LLMResult
from langchain_core.runnables.config import ensure_config
from pydantic import PrivateAttr

from stratacache.integrations._shared import AdapterStats
from stratacache.tiered import TieredCache

__all__ = ["cache_streaming"]

_subclasses: dict[type[BaseChatModel], type[BaseChatModel]] = {}
_subclasses_lock = threading.Lock()
_stats = AdapterStats("cache_streaming")


class _Binding:
    """Which cache a wrapped model streams through (resolved per call, like LangChain does)."""

    def __init__(self, cache: BaseCache | None) -> None:
        self.cache = cache
        self._fallback: BaseCache | None = None

    def resolve(self, model: BaseChatModel) -> BaseCache | None:
        if model.cache is False:
            return None
        if self.cache is not None:
            return self.cache
        if isinstance(model.cache, BaseCache):
            return model.cache
        found = get_llm_cache()
        if found is not None:
            return found
        if self._fallback is None:
            from stratacache.integrations.langchain.cache import LLMCache

            self._fallback = LLMCache()
        return self._fallback


class _Call:
    """The cache key of one call, computed exactly as ``BaseChatModel._generate_with_cache``."""

    __slots__ = ("cache", "llm_string", "prompt")

    def __init__(self, cache: BaseCache, prompt: str, llm_string: str) -> None:
        self.cache = cache
        self.prompt = prompt
        self.llm_string = llm_string


def _call(
    model: BaseChatModel, input: Any, stop: list[str] | None, kwargs: dict[str, Any]
) -> _Call | None:
    binding = cast("_Binding | None", getattr(model, "_sc_stream", None))
    cache = binding.resolve(model) if binding is not None else None
    if cache is None:
        return None
    try:
        messages: list[BaseMessage] = model._convert_input(input).to_messages()
        params = {
            k: v
            for k, v in kwargs.items()
            if k not in ("ls_structured_output_format", "structured_output_format")
        }
        llm_string = model._get_llm_string(stop=stop, **params)
        prompt = dumps(
            [m.model_copy(update={"id": None}) if m.id is not None else m for m in messages]
        )
    except Exception as exc:
        _stats.problem("key_errors", "could not key a stream (%s: %s)", type(exc).__name__, exc)
        return None
    return _Call(cache, prompt, llm_string)


def _hit(value: Any) -> AIMessage | None:
    if not isinstance(value, list) or not value:
        return None
    first = value[0]
    if isinstance(first, ChatGeneration) and isinstance(first.message, AIMessage):
        return first.message
    if isinstance(first, Generation):
        return AIMessage(content=first.text)
    return None


def _replay_chunks(message: AIMessage, run_id: str) -> list[AIMessageChunk]:
    chunks = [
        AIMessageChunk(
            content=message.content,
            additional_kwargs=message.additional_kwargs,
            name=message.name,
            id=run_id,
            tool_call_chunks=[
                tool_call_chunk(
                    name=tc["name"], args=json.dumps(tc["args"]), id=tc.get("id"), index=i
                )
                for i, tc in enumerate(message.tool_calls)
            ],
        ),
        AIMessageChunk(
            content="" if isinstance(message.content, str) else [],
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
            id=run_id,
            chunk_position="last",
        ),
    ]
    return chunks


def _merged(chunks: list[AIMessageChunk]) -> list[Generation] | None:
    if not chunks:
        return None
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    message = message_chunk_to_message(total)
    if not isinstance(message, AIMessage):
        return None
    return [ChatGeneration(message=message)]


def _start_args(
    model: BaseChatModel, input: Any, stop: list[str] | None, kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    messages = model._convert_input(input).to_messages()
    params = model._get_invocation_params(stop=stop, **kwargs)
    return messages, params


def _stream(
    self: BaseChatModel,
    input: Any,
    config: Any = None,
    *,
    stop: list[str] | None = None,
    **kwargs: Any,
) -> Iterator[AIMessageChunk]:
    base = cast("type[BaseChatModel]", type(self).__mro__[1])
    call = _call(self, input, stop, kwargs)
    cached = None
    if call is not None:
        try:
            cached = _hit(call.cache.lookup(call.prompt, call.llm_string))
        except Exception as exc:
            _stats.problem("lookup_errors", "cache lookup failed (%s)", exc)
    if cached is not None:
        config = ensure_config(config)
        messages, params = _start_args(self, input, stop, kwargs)
        manager = CallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"),
            self.tags, config.get("metadata"), self.metadata,
        )  # fmt: skip
        (run,) = manager.on_chat_model_start(
            {"name": type(self).__name__}, [messages], invocation_params=params,
            options={"stop": stop}, name=config.get("run_name"),
            run_id=config.pop("run_id", None), batch_size=1,
        )  # fmt: skip
        chunks = _replay_chunks(cached, f"lc_run--{run.run_id}")
        for chunk in chunks:
            run.on_llm_new_token(
                chunk.content if isinstance(chunk.content, str) else "",
                chunk=ChatGenerationChunk(message=chunk),
            )
            yield chunk
        run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=cached)]]))
        return
    received: list[AIMessageChunk] = []
    for chunk in base.stream(self, input, config, stop=stop, **kwargs):
        received.append(chunk)
        yield chunk
    # Reached only when the provider's stream ended normally and the consumer read it all.
    if call is not None:
        generations = _merged(received)
        if generations is not None:
            try:
                call.cache.update(call.prompt, call.llm_string, generations)
            except Exception as exc:
                _stats.problem("store_errors", "storing a stream failed (%s)", exc)


async def _astream(
    self: BaseChatModel,
    input: Any,
    config: Any = None,
    *,
    stop: list[str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[AIMessageChunk]:
    base = cast("type[BaseChatModel]", type(self).__mro__[1])
    call = _call(self, input, stop, kwargs)
    cached = None
    if call is not None:
        try:
            cached = _hit(await call.cache.alookup(call.prompt, call.llm_string))
        except Exception as exc:
            _stats.problem("lookup_errors", "cache lookup failed (%s)", exc)
    if cached is not None:
        config = ensure_config(config)
        messages, params = _start_args(self, input, stop, kwargs)
        manager = AsyncCallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"),
            self.tags, config.get("metadata"), self.metadata,
        )  # fmt: skip
        (run,) = await manager.on_chat_model_start(
            {"name": type(self).__name__}, [messages], invocation_params=params,
            options={"stop": stop}, name=config.get("run_name"),
            run_id=config.pop("run_id", None), batch_size=1,
        )  # fmt: skip
        chunks = _replay_chunks(cached, f"lc_run--{run.run_id}")
        for chunk in chunks:
            await run.on_llm_new_token(
                chunk.content if isinstance(chunk.content, str) else "",
                chunk=ChatGenerationChunk(message=chunk),
            )
            yield chunk
        await run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=cached)]]))
        return
    received: list[AIMessageChunk] = []
    async for chunk in base.astream(self, input, config, stop=stop, **kwargs):
        received.append(chunk)
        yield chunk
    if call is not None:
        generations = _merged(received)
        if generations is not None:
            try:
                await call.cache.aupdate(call.prompt, call.llm_string, generations)
            except Exception as exc:
                _stats.problem("store_errors", "storing a stream failed (%s)", exc)


def _subclass(cls: type[BaseChatModel]) -> type[BaseChatModel]:
    with _subclasses_lock:
        sub = _subclasses.get(cls)
        if sub is None:
            namespace = {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "__annotations__": {"_sc_stream": "Any"},
                "_sc_stream": PrivateAttr(default=None),
                "stream": _stream,
                "astream": _astream,
            }
            sub = cast("type[BaseChatModel]", type(cls.__name__, (cls,), namespace))
            _subclasses[cls] = sub
        return sub


def cache_streaming(
    model: BaseChatModel, cache: BaseCache | TieredCache | None = None
) -> BaseChatModel:
    """A copy of ``model`` whose ``stream()``/``astream()`` use the LLM cache.

    :param cache: the ``BaseCache`` to use (a ``TieredCache`` is wrapped in ``LLMCache``); it
        also becomes the copy's ``cache=`` unless the model already had one. Default: the
        model's own ``cache=``, else the global ``set_llm_cache`` one, else an ``LLMCache()``
        on the default tiers. ``model.cache=False`` disables it.

    The result is an instance of a subclass of ``type(model)``, so ``isinstance`` checks,
    ``bind_tools`` and ``with_structured_output`` keep working; it cannot be pickled.
    """
    if not isinstance(model, BaseChatModel):
        raise TypeError(
            f"cache_streaming expects a LangChain chat model, not {type(model).__name__}"
        )
    if isinstance(cache, TieredCache):
        from stratacache.integrations.langchain.cache import LLMCache

        cache = LLMCache(cache)
    original = type(model)
    if getattr(original, "stream", None) is _stream:  # already wrapped: rebind only
        original = cast("type[BaseChatModel]", original.__mro__[1])
    sub = _subclass(original)
    wrapped = sub.__new__(sub)
    state = dict(model.__dict__)
    if cache is not None and state.get("cache") is None:
        # The same cache for invoke(), so a streamed answer is an invoke() hit and vice versa.
        state["cache"] = cache
    object.__setattr__(wrapped, "__dict__", state)
    object.__setattr__(wrapped, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    object.__setattr__(wrapped, "__pydantic_extra__", model.__pydantic_extra__)
    private = dict(model.__pydantic_private__ or {})
    private["_sc_stream"] = _Binding(cache)
    object.__setattr__(wrapped, "__pydantic_private__", private)
    return wrapped
