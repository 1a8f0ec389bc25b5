"""The loopback provider behind :mod:`stratacache.testing` (aiohttp in a background thread)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, get_args

from aiohttp import web

__all__ = [
    "Defect",
    "OpenAICompatServer",
    "ServerStats",
    "count_tokens",
    "embedding_for",
    "format_duration",
    "prompt_tokens",
    "reply_for",
]

JSON = dict[str, Any]

#: What :meth:`OpenAICompatServer.misbehave_next` can make a request get instead of a good
#: answer: the failure modes real providers show that a cache must never store.
Defect = Literal[
    "empty",  # chat: content "" and no tool call; embeddings: every vector is []
    "no_choices",  # chat: ``choices: []``; embeddings: ``data: []``
    "content_filter",  # chat: a cut answer with ``finish_reason: "content_filter"``
    "unfinished",  # chat: no ``finish_reason`` (a stream ends with [DONE] but no finish chunk)
    "error_body",  # a 200 whose body (or first stream event) is ``{"error": {...}}``
    "stream_error",  # a stream that sends ``after`` chunks, then an error event, then ends
    "drop",  # the connection is closed before any response byte
    "slow",  # the answer comes after ``delay`` seconds (a client-side timeout)
    "nan",  # embeddings: the first vector holds a NaN
    "wrong_dim",  # embeddings: the first vector has half the dimensions
]


# -- deterministic model behaviour -------------------------------------------------------------


def count_tokens(text: str) -> int:
    """About four characters per token, like OpenAI's rule of thumb; 0 only for ""."""
    return (len(text) + 3) // 4


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> int:
    """Tokens the server charges for a prompt: each message's text plus one per message."""
    total = sum(count_tokens(_text(m.get("content"))) + 1 for m in messages)
    if tools:
        total += count_tokens(json.dumps(tools, sort_keys=True))
    return total


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def reply_for(messages: Sequence[Mapping[str, Any]], model: str) -> str:
    """The answer the server gives, so a test can predict it without a request.

    It echoes the last user (or tool) message and carries a digest of the whole conversation
    and model: a cache that mixes up two prompts differing only in history is caught.
    """
    normalized = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in messages]
    tag = _digest({"model": model, "messages": normalized})[:8]
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"Echo {tag}: tool said {_text(last.get('content'))}"
    users = [m for m in messages if m.get("role") == "user"]
    text = _text(users[-1].get("content")) if users else ""
    return f"Echo {tag}: {text}"


def embedding_for(text: str | Sequence[int], dim: int = 64) -> list[float]:
    """A unit vector of ``dim`` floats from SHA-256 of the text (or token ids).

    Values are rounded through float32 so that the JSON and base64 encodings agree exactly.
    """
    key = text if isinstance(text, str) else json.dumps(list(text))
    raw = b""
    counter = 0
    while len(raw) < dim * 4:
        raw += hashlib.sha256(f"{counter}:{key}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dim}I", raw[: dim * 4])
    values = [(i / 0xFFFFFFFF) * 2.0 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    vec = [v / norm for v in values]
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *vec)))


def format_duration(seconds: float) -> str:
    """Go-style duration as OpenAI's ``x-ratelimit-reset-*`` headers: ``12ms``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if minutes >= 1:
        return f"{int(minutes)}m{secs_text}s"
    return f"{secs_text}s"


def _schema_value(schema: Mapping[str, Any], text: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return text
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {k: _schema_value(v, text) for k, v in schema.get("properties", {}).items()}
    return text


def _tool_arguments(tool: Mapping[str, Any], text: str) -> str:
    params = tool.get("function", {}).get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties", {})
    return json.dumps({k: _schema_value(v, text) for k, v in props.items()})


def default_tool_rule(body: Mapping[str, Any]) -> str | None:
    """Which tool to call, if any: forced by ``tool_choice``, or named in the last user turn."""
    tools = body.get("tools") or []
    names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
    names = [n for n in names if n]
    if not names:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        forced = choice.get("function", {}).get("name")
        return str(forced) if forced else None
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if choice == "required" and last.get("role") != "tool":
        return str(names[0])
    if last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    for name in names:
        if name in text:
            return str(name)
    return None


# -- counters and rate-limit buckets -----------------------------------------------------------


@dataclass
class ServerStats:
    """What the server saw. Read it from any thread; :meth:`OpenAICompatServer.reset` clears it."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests received per endpoint: ``chat``, ``embeddings``, ``models``."""
    total: int = 0
    rate_limited: int = 0
    """429 responses sent."""
    failures_injected: int = 0
    """Error statuses sent by :meth:`~OpenAICompatServer.fail_next`, and dropped connections."""
    defects_injected: int = 0
    """200 answers made defective by :meth:`~OpenAICompatServer.misbehave_next`."""
    streams_interrupted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    bodies: list[JSON] = field(default_factory=list)
    """The JSON body of every request, in arrival order."""

    @property
    def served(self) -> int:
        """Requests answered with a 200."""
        return self.total - self.rate_limited - self.failures_injected


class _Bucket:
    """A provider-side token bucket: the independent yardstick the client limiter is tested by.

    Holds ``capacity`` units and refills at ``rate`` per second. A request that is larger than
    the bucket is admitted once the bucket is full and leaves it in debt, like the client does.
    ``tolerance`` seconds of refill absorb network jitter between client grant and arrival.
    """

    def __init__(self, per_minute: float, burst_seconds: float, tolerance: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.tolerance = tolerance
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def shortfall(self, cost: float) -> float:
        """Seconds until ``cost`` would be admitted (0 when it is admitted now)."""
        need = min(cost, self.capacity) - self.rate * self.tolerance
        return max(0.0, (need - self.level) / self.rate)

    def reset_after(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class _Fault:
    remaining: int
    status: int
    defect: Defect | None = None
    after: int = 1
    delay: float = 0.0


# -- the server ----------------------------------------------------------------------------------


class OpenAICompatServer:
    """An OpenAI-compatible HTTP server on a free loopback port; see the module docstring."""

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst_seconds: float = 1.0,
        jitter_tolerance: float = 0.2,
        latency: float | Callable[[str], float] = 0.0,
        dim: int = 64,
        interrupt_stream_after: int | None = None,
        tool_rule: Callable[[Mapping[str, Any]], str | None] = default_tool_rule,
        price_per_million: tuple[float, float] = (0.15, 0.60),
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.burst_seconds = burst_seconds
        self.jitter_tolerance = jitter_tolerance
        self.latency = latency
        self.dim = dim
        self.interrupt_stream_after = interrupt_stream_after
        self.tool_rule = tool_rule
        self.price_per_million = price_per_million
        self.host = host
        self._port = port
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._faults: list[_Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._seq = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._thread is None:
            raise RuntimeError("the server is not running; call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients take as ``base_url`` / ``api_base``."""
        return f"{self.url}/v1"

    def start(self) -> OpenAICompatServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(256)
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        async def boot() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/embeddings", self._embeddings)
            app.router.add_get("/v1/models", self._models)
            app.router.add_get("/stratacache/stats", self._stats)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # reported to start() below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="stratacache-testing-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread.join(5)
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            future.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    async def __aenter__(self) -> OpenAICompatServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await asyncio.to_thread(self.stop)

    # -- test controls -------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear counters, request log, injected faults and rate-limit buckets."""
        with self._lock:
            self.stats = ServerStats()
            self._buckets.clear()
            self._faults.clear()

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Make the next ``n`` requests (any endpoint) fail with ``status``."""
        with self._lock:
            self._faults.append(_Fault(n, status))

    def misbehave_next(
        self, defect: Defect, n: int = 1, *, after: int = 1, delay: float = 5.0
    ) -> None:
        """Make the next ``n`` requests (any endpoint) get ``defect`` instead of a good answer.

        Queued behind earlier :meth:`fail_next` faults. ``after``: content chunks a
        ``stream_error`` stream sends first; ``delay``: seconds a ``slow`` answer takes.
        """
        if defect not in get_args(Defect):
            raise ValueError(f"unknown defect {defect!r}; one of {get_args(Defect)}")
        with self._lock:
            self._faults.append(_Fault(n, 200, defect, after, delay))

    def reply_for(self, messages: Sequence[Mapping[str, Any]], model: str) -> str:
        return reply_for(messages, model)

    def embedding_for(self, text: str | Sequence[int], dim: int | None = None) -> list[float]:
        return embedding_for(text, dim or self.dim)

    # -- request plumbing ----------------------------------------------------------------------

    def _bucket(self, name: str, per_minute: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.limit != per_minute:
            bucket = _Bucket(per_minute, self.burst_seconds, self.jitter_tolerance)
            self._buckets[name] = bucket
        return bucket

    def _admit(
        self, endpoint: str, body: JSON, cost: int
    ) -> tuple[web.Response | None, JSON, _Fault | None]:
        """Count the request and charge the buckets; a response is returned only on refusal,
        a fault only when the request must get a defective answer."""
        now = time.monotonic()
        headers: dict[str, str] = {}
        with self._lock:
            self.stats.total += 1
            self.stats.requests[endpoint] += 1
            self.stats.bodies.append(body)
            if self._faults:
                fault = self._faults[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.pop(0)
                if fault.defect is not None:
                    if fault.defect == "drop":
                        self.stats.failures_injected += 1
                    else:
                        self.stats.defects_injected += 1
                    return None, headers, fault
                self.stats.failures_injected += 1
                error = {"message": "injected failure", "type": "server_error", "code": None}
                return web.json_response({"error": error}, status=fault.status), headers, None
            limits = [("requests", self.rpm, 1), ("tokens", self.tpm, cost)]
            active = [(n, self._bucket(n, lim), c) for n, lim, c in limits if lim]
            for _, bucket, _ in active:
                bucket.refill(now)
            waits = {n: b.shortfall(c) for n, b, c in active}
            short = max(waits, key=waits.__getitem__, default="requests")
            wait = waits.get(short, 0.0)
            if wait <= 0:
                for _, bucket, c in active:
                    bucket.level -= c
            for name, bucket, _ in active:
                headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit))
                headers[f"x-ratelimit-remaining-{name}"] = str(
                    max(0, math.floor(bucket.level + 1e-9))
                )
                headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_after())
            if wait > 0:
                self.stats.rate_limited += 1
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                error = {
                    "message": f"Rate limit reached; try again in {wait * 1000:.0f}ms.",
                    "type": short,
                    "code": "rate_limit_exceeded",
                }
                response = web.json_response({"error": error}, status=429, headers=headers)
                return response, headers, None
        return None, headers, None

    @staticmethod
    async def _defect_first(
        request: web.Request, body: JSON, fault: _Fault | None
    ) -> web.Response | None:
        """Apply the defects that replace or delay the whole answer (same for every endpoint);
        a response is returned only when it replaces the answer."""
        if fault is None:
            return None
        if fault.defect == "slow":
            await asyncio.sleep(fault.delay)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=500)  # the client gave up: nothing to answer
        elif fault.defect == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never written: the connection is gone
        elif fault.defect in ("error_body", "stream_error") and not body.get("stream"):
            error = {"message": "injected error body", "type": "server_error", "code": None}
            return web.json_response({"error": error})
        return None

    async def _delay(self, path: str) -> None:
        latency = self.latency(path) if callable(self.latency) else self.latency
        if latency > 0:
            await asyncio.sleep(latency)

    def _account(self, model: str, prompt: int, completion: int) -> None:
        price_in, price_out = self.price_per_million
        with self._lock:
            self.stats.prompt_tokens += prompt
            self.stats.completion_tokens += completion
            self.stats.cost_usd += (prompt * price_in + completion * price_out) / 1e6

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._seq += 1
            return f"{prefix}-{self._seq:08d}"

    @staticmethod
    async def _json(request: web.Request) -> JSON | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            error = {"message": "body must be a JSON object", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
        return body

    # -- endpoints -----------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        """Counters for a server running in another process (``python -m stratacache.testing``)."""
        with self._lock:
            stats = self.stats
            payload = {
                "requests": dict(stats.requests), "total": stats.total,
                "rate_limited": stats.rate_limited, "served": stats.served,
                "failures_injected": stats.failures_injected,
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens, "cost_usd": stats.cost_usd,
            }  # fmt: skip
        return web.json_response(payload)

    async def _models(self, request: web.Request) -> web.Response:
        with self._lock:
            self.stats.total += 1
            self.stats.requests["models"] += 1
        return web.json_response(
            {"object": "list", "data": [{"id": "loopback", "object": "model", "owned_by": "me"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        model = str(body.get("model", ""))
        if not isinstance(messages, list) or not messages:
            error = {"message": "messages must be a non-empty list", "type": "invalid_request"}
            return web.json_response({"error": error}, status=400)
        tools = body.get("tools")
        n_prompt = prompt_tokens(messages, tools)
        tools = tools if isinstance(tools, list) else []
        tool_name = self.tool_rule(body) if tools else None
        text, finish, tool_call = "", "stop", None
        if tool_name is not None:
            tool = next(t for t in tools if t.get("function", {}).get("name") == tool_name)
            users = [m for m in messages if m.get("role") == "user"]
            args = _tool_arguments(tool, _text(users[-1].get("content")) if users else "")
            call_id = "call_" + _digest({"m": messages, "t": tool_name})[:24]
            tool_call = {"id": call_id, "type": "function",
                         "function": {"name": tool_name, "arguments": args}}  # fmt: skip
            finish, n_completion = "tool_calls", count_tokens(tool_name + args)
        else:
            text = reply_for(messages, model)
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(max_tokens, int) and count_tokens(text) > max_tokens:
                text, finish = text[: max_tokens * 4], "length"
            n_completion = count_tokens(text)
        choices = max(1, int(body.get("n") or 1))
        refusal, headers, fault = self._admit("chat", body, n_prompt + n_completion * choices)
        if refusal is not None:
            return refusal
        replaced = await self._defect_first(request, body, fault)
        if replaced is not None:
            return replaced
        defect = fault.defect if fault is not None else None
        finish_reason: str | None = finish
        if defect in ("empty", "no_choices"):
            text, finish_reason, tool_call = "", "stop", None
        elif defect == "content_filter":  # the words before the filter cut in
            text, finish_reason, tool_call = text.split(" ")[0], "content_filter", None
        elif defect == "unfinished":
            finish_reason = None
        await self._delay(request.path)
        self._account(model, n_prompt, n_completion * choices)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_completion * choices,
                 "total_tokens": n_prompt + n_completion * choices}  # fmt: skip
        ident, created = self._next_id("chatcmpl"), int(time.time())
        if body.get("stream"):
            return await self._stream(
                request, headers, ident, created, model, text, finish_reason, tool_call, choices,
                usage if (body.get("stream_options") or {}).get("include_usage") else None,
                fault,
            )  # fmt: skip
        message: JSON = {"role": "assistant", "content": text if tool_call is None else None,
                         "refusal": None}  # fmt: skip
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        payload = {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": message, "finish_reason": finish_reason,
                         "logprobs": None}
                        for i in range(0 if defect == "no_choices" else choices)],
            "usage": usage, "system_fingerprint": "fp_loopback",
        }  # fmt: skip
        return web.json_response(payload, headers=headers)

    async def _stream(
        self, request: web.Request, headers: dict[str, str], ident: str, created: int,
        model: str, text: str, finish: str | None, tool_call: JSON | None, choices: int,
        usage: JSON | None, fault: _Fault | None = None,
    ) -> web.StreamResponse:  # fmt: skip
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        def chunk(delta: JSON, finish_reason: str | None, index: int = 0) -> bytes:
            data = {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_loopback",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                             "logprobs": None}],
            }  # fmt: skip
            return f"data: {json.dumps(data)}\n\n".encode()

        defect = fault.defect if fault is not None else None
        if defect == "no_choices":
            data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [], "usage": usage}  # fmt: skip
            await response.write(f"data: {json.dumps(data)}\n\ndata: [DONE]\n\n".encode())
            await response.write_eof()
            return response
        deltas: list[JSON] = []
        if tool_call is not None:
            args = tool_call["function"]["arguments"]
            half = len(args) // 2
            first = {"index": 0, "id": tool_call["id"], "type": "function",
                     "function": {"name": tool_call["function"]["name"],
                                  "arguments": ""}}  # fmt: skip
            deltas.append({"role": "assistant", "content": None, "tool_calls": [first]})
            for part in (args[:half], args[half:]):
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        else:
            deltas.append({"role": "assistant", "content": "", "refusal": None})
            words = text.split(" ")
            deltas.extend(
                {"content": w if i == len(words) - 1 else w + " "} for i, w in enumerate(words)
            )
        cut = self.interrupt_stream_after
        error_at = {"stream_error": fault.after if fault else 0, "error_body": 0}.get(defect or "")
        for index in range(choices):
            for sent, delta in enumerate(deltas):
                if error_at is not None and sent >= error_at:
                    error = {"message": "injected stream error", "type": "server_error"}
                    await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
                    await response.write_eof()
                    return response
                if cut is not None and sent >= cut:
                    with self._lock:
                        self.stats.streams_interrupted += 1
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write(chunk(delta, None, index))
                await asyncio.sleep(0)
            if finish is not None:
                await response.write(chunk({}, finish, index))
        if usage is not None:
            data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [], "usage": usage}  # fmt: skip
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        raw = body.get("input")
        inputs: list[str | list[int]]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [list(raw)]
        elif isinstance(raw, list) and raw:
            inputs = list(raw)
        else:
            error = {"message": "input must be a string or a non-empty list",
                     "type": "invalid_request_error"}  # fmt: skip
            return web.json_response({"error": error}, status=400)
        tokens = sum(len(x) if isinstance(x, list) else count_tokens(x) for x in inputs)
        refusal, headers, fault = self._admit("embeddings", body, tokens)
        if refusal is not None:
            return refusal
        replaced = await self._defect_first(request, body, fault)
        if replaced is not None:
            return replaced
        defect = fault.defect if fault is not None else None
        await self._delay(request.path)
        dim = int(body.get("dimensions") or self.dim)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs[: 0 if defect == "no_choices" else None]):
            vector = [] if defect == "empty" else embedding_for(item, dim)
            if i == 0 and defect == "nan":
                vector[0] = math.nan
            elif i == 0 and defect == "wrong_dim":
                vector = vector[: dim // 2]
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        model = str(body.get("model", ""))
        self._account(model, tokens, 0)
        payload = {"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
        return web.json_response(payload, headers=headers)
