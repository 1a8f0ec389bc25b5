"""Fewer, fuller calls: micro-batching, prompt packing and bounded concurrency.

::

    from stratacache.batching import MicroBatcher, PromptPacker, gather_limited, run_graph

    batcher = MicroBatcher(embeddings.aembed_documents, max_items=256, max_wait=0.005)
    vectors = await asyncio.gather(*(batcher.submit(q) for q in queries))   # one call

    answers = await gather_limited(8, *(llm.ainvoke(p) for p in prompts))  # <= 8 in flight
    result = await run_graph([Task("a", fetch), Task("b", summarize, deps=("a",))],
                             max_concurrency=4, timeout=30, retry=Retry(attempts=3))

:class:`PromptPacker` is opt-in: it packs several small prompts into one LLM call and splits
the answers back apart, retrying alone any item whose answer cannot be parsed. See
``docs/batching.md`` for when it pays off.
"""

from __future__ import annotations

from stratacache.batching._graph import (
    DependencyFailed,
    GraphResult,
    Task,
    gather_limited,
    run_graph,
)
from stratacache.batching._micro import BatchSizeError, MicroBatcher
from stratacache.batching._packer import PromptPacker, pack_prompts, split_answers
from stratacache.batching._retry import Retry, is_transient, retry_after_of
from stratacache.errors import GraphCycleError

__all__ = [
    "BatchSizeError",
    "DependencyFailed",
    "GraphCycleError",
    "GraphResult",
    "MicroBatcher",
    "PromptPacker",
    "Retry",
    "Task",
    "gather_limited",
    "is_transient",
    "pack_prompts",
    "retry_after_of",
    "run_graph",
    "split_answers",
]
