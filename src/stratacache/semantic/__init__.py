"""Semantic caching: answers to questions asked in other words, served only when safe.

``SemanticCache`` keeps entries in the exact tiers (so processes sharing Redis share them),
indexes them per scope partition with hnswlib (exact numpy search while a partition is small)
and decides with lexical guards rather than a cosine threshold alone: docs/semantic.md has
the design and the measured wrong-hit rates.
"""

from __future__ import annotations

from stratacache.semantic._cache import Decision, SemanticCache, Verifier
from stratacache.semantic._embedders import Embedder, LocalEmbedder, as_embedder

__all__ = ["Decision", "Embedder", "LocalEmbedder", "SemanticCache", "Verifier", "as_embedder"]
