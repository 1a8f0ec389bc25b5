"""LangChain adapters; importing this package requires langchain-core (the `langchain` extra)."""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from stratacache.errors import missing_extra

    raise missing_extra("langchain-core", "langchain") from exc
