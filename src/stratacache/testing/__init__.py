"""A loopback OpenAI-compatible provider for offline tests, benchmarks and demos.

:class:`OpenAICompatServer` serves ``/v1/chat/completions`` (plain, tools, SSE streaming) and
``/v1/embeddings`` on ``127.0.0.1`` from a background thread with its own event loop, so the
same object works from sync tests, async tests and separate processes (it is plain HTTP).
Real clients talk to it unchanged: the ``openai`` SDK, ``langchain-openai``, litellm's
``openai/`` provider with ``api_base`` and LlamaIndex's OpenAI classes.

::

    from stratacache.testing import OpenAICompatServer

    with OpenAICompatServer(rpm=1200, tpm=100_000) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        reply = client.chat.completions.create(model="m", messages=[...])
        assert reply.choices[0].message.content == server.reply_for(messages=[...], model="m")
        assert server.stats.requests["chat"] == 1 and server.stats.rate_limited == 0

Everything is deterministic so tests can assert on it:

* **Answers** are ``reply_for(messages, model)``: an echo of the last user message tagged with
  a digest of the whole conversation, so any change of prompt, history or model changes the
  answer. ``max_tokens`` truncates it (``finish_reason="length"``).
* **Tokens** are ``count_tokens(text)`` (about four characters per token) per message; usage
  is reported on every response, and on the final stream chunk when
  ``stream_options.include_usage`` is set.
* **Tool calls** are returned when the request has ``tools`` and the last message is a user
  message that names a tool (or ``tool_choice`` forces one); arguments are built from the
  tool's JSON schema. After a ``tool`` message the model answers in text, so agent loops end.
* **Embeddings** are unit vectors of ``dim`` floats derived from SHA-256 of the text
  (``embedding_for(text)``); list inputs, token-id inputs, ``dimensions`` and
  ``encoding_format="base64"`` (little-endian float32, as the OpenAI SDK expects) work.

Knobs (constructor arguments, all also settable at runtime as attributes):

* ``rpm`` / ``tpm``: enforce limits with a smoothed token bucket holding ``burst_seconds``
  worth of each rate (plus ``jitter_tolerance``, 0.2 s of refill, for the scheduling noise
  between a client's grant and the server's clock); an over-limit request gets a 429 with
  ``retry-after`` and
  ``retry-after-ms``. Every response carries ``x-ratelimit-{limit,remaining,reset}-
  {requests,tokens}`` headers in OpenAI's format (``reset`` as ``1s``/``6m0s``/``12ms``).
  A request costs its prompt tokens plus the completion tokens it will produce.
* ``latency``: seconds added to every request (a float, or a callable of the path).
* ``fail_next(n, status=500)``: the next ``n`` requests fail with that status.
* ``misbehave_next(defect, n=1)``: the next ``n`` requests get a defective answer instead
  (a :data:`Defect`): empty content, ``choices: []``, ``finish_reason="content_filter"``, no
  ``finish_reason``, a 200 carrying ``{"error": ...}``, an error event mid-stream, a dropped
  connection, a slow answer (client timeouts), and for embeddings empty, NaN or
  wrong-dimension vectors and ``data: []``: what a cache must never store.
* ``interrupt_stream_after``: cut every stream after that many content chunks by closing
  the connection, to test partial-stream handling.

:attr:`OpenAICompatServer.stats` counts requests per endpoint, totals, 429s, injected
failures, and keeps the JSON body of every request received; :meth:`~OpenAICompatServer.reset`
clears counters, buckets and injected faults.
"""

from __future__ import annotations

from stratacache.testing._server import (
    Defect,
    OpenAICompatServer,
    ServerStats,
    count_tokens,
    embedding_for,
    format_duration,
    prompt_tokens,
    reply_for,
)

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
