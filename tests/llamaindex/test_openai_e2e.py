"""Real llama-index-llms-openai / -embeddings-openai clients against the loopback server."""

from __future__ import annotations

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import stratacache as sc
from stratacache.llamaindex import CachedEmbedding, CachedLLM, RateLimiter
from stratacache.testing import OpenAICompatServer


def _llm(server: OpenAICompatServer, **kw: object) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="test", max_retries=0,
                  **kw)  # fmt: skip


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_chat_stream_and_tools_round_trip(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    cached = CachedLLM(_llm(server, temperature=0), cache=tiered)
    msgs = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
    first = cached.chat(msgs)
    assert cached.chat(msgs).message.content == first.message.content
    assert server.stats.requests["chat"] == 1
    deltas = [c.delta for c in cached.stream_chat(msgs)]
    assert [c.delta for c in cached.stream_chat(msgs)] == deltas
    assert server.stats.requests["chat"] == 2
    # Another api key or client object: same entry (credentials are never in the key).
    other = CachedLLM(OpenAI(model="gpt-4o-mini", api_base=server.base_url, api_key="other",
                             temperature=0), cache=tiered)  # fmt: skip
    other.chat(msgs)
    assert server.stats.requests["chat"] == 2

    tool = FunctionTool.from_defaults(_add)
    r1 = cached.chat_with_tools([tool], user_msg="please use _add on 1 and 2")
    r2 = cached.chat_with_tools([tool], user_msg="please use _add on 1 and 2")
    assert server.stats.requests["chat"] == 3
    sel1 = cached.get_tool_calls_from_response(r1, error_on_no_tool_call=False)
    sel2 = cached.get_tool_calls_from_response(r2, error_on_no_tool_call=False)
    assert sel1 and [(s.tool_name, s.tool_kwargs) for s in sel1] == [
        (s.tool_name, s.tool_kwargs) for s in sel2
    ]


async def test_async_chat_and_interrupted_stream(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    cached = CachedLLM(_llm(server), cache=tiered)
    msgs = [ChatMessage(role="user", content="tell me a long story about caches please")]
    server.interrupt_stream_after = 2
    try:
        gen = await cached.astream_chat(msgs)
        async for _ in gen:
            pass
    except Exception:  # the cut connection surfaces as a client error
        pass
    server.interrupt_stream_after = None
    gen = await cached.astream_chat(msgs)
    full = [c.delta async for c in gen]
    gen = await cached.astream_chat(msgs)
    assert [c.delta async for c in gen] == full
    assert server.stats.requests["chat"] == 2  # the cut stream was never stored
    await cached.achat(msgs)
    await cached.achat(msgs)
    assert server.stats.requests["chat"] == 3


def test_openai_embeddings_index_rebuild_makes_no_request(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    emb = OpenAIEmbedding(api_base=server.base_url, api_key="test", max_retries=0)
    cached = CachedEmbedding(emb, cache=tiered)
    docs = [Document(text=f"doc number {i}") for i in range(5)]
    VectorStoreIndex.from_documents(docs, embed_model=cached)
    cold = server.stats.requests["embeddings"]
    index = VectorStoreIndex.from_documents(docs, embed_model=cached)
    assert server.stats.requests["embeddings"] == cold
    index.as_retriever().retrieve("doc number 1")
    index.as_retriever().retrieve("doc number 1")
    assert server.stats.requests["embeddings"] == cold + 1


def test_rate_limiter_counts_real_tokens_and_skips_hits(
    server: OpenAICompatServer, tiered: sc.TieredCache
) -> None:
    limiter = RateLimiter(rpm=6000, tpm=1_000_000)
    cached = CachedLLM(_llm(server, rate_limiter=limiter), cache=tiered)
    msgs = [ChatMessage(role="user", content="count my tokens")]
    reply = cached.chat(msgs)
    used = reply.additional_kwargs["total_tokens"]
    assert limiter.acquired == 1
    assert limiter.tokens_charged == used  # the estimate was settled to the reported usage
    cached.chat(msgs)
    assert limiter.acquired == 1  # the hit took no budget

    emb = OpenAIEmbedding(api_base=server.base_url, api_key="test", rate_limiter=limiter)
    cemb = CachedEmbedding(emb, cache=tiered)
    cemb.get_text_embedding_batch(["alpha beta", "gamma"])
    cemb.get_text_embedding_batch(["alpha beta", "gamma"])
    assert limiter.acquired == 2
