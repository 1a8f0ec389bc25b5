"""The native rate_limiter slot: scopes, duplicate acquires, async."""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatMessage

import stratacache as sc
from stratacache.llamaindex import CachedEmbedding, CachedLLM, RateLimiter
from tests.llamaindex.conftest import CountingEmbedding, CountingLLM


def test_custom_llm_chat_is_one_request(memory_cache: sc.TieredCache) -> None:
    limiter = RateLimiter(rpm=6000, tpm=100_000)
    llm = CountingLLM(max_tokens=4)
    llm.rate_limiter = limiter
    cached = CachedLLM(llm, cache=memory_cache)
    cached.chat([ChatMessage(role="user", content="hello there")])
    # CustomLLM.chat acquires for chat and again for the complete() it delegates to.
    assert limiter.acquired == 1
    assert limiter.tokens_charged > 0
    cached.chat([ChatMessage(role="user", content="hello there")])
    assert limiter.acquired == 1


async def test_async_embeddings_acquire_only_for_misses(memory_cache: sc.TieredCache) -> None:
    limiter = RateLimiter(rpm=6000, tpm=100_000)
    emb = CountingEmbedding(embed_dim=4, embed_batch_size=2, rate_limiter=limiter)
    cached = CachedEmbedding(emb, cache=memory_cache)
    await cached.aget_text_embedding_batch(["a", "b", "c"])
    assert limiter.acquired == 2  # two model-sized chunks
    await cached.aget_text_embedding_batch(["a", "b", "c"])
    assert limiter.acquired == 2


def test_unwrapped_use_charges_the_estimate() -> None:
    limiter = RateLimiter(rpm=6000, tpm=100_000, tokens_per_request=50)
    llm = CountingLLM()
    llm.rate_limiter = limiter
    llm.complete("x")
    assert limiter.acquired == 1 and limiter.tokens_charged == 50
