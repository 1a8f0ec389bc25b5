"""LlamaIndex adapters; importing them requires llama-index-core (the `llamaindex` extra)."""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from stratacache.errors import missing_extra

    raise missing_extra("llama-index-core", "llamaindex") from exc
