"""LiteLLM adapters; importing this package requires litellm (the `litellm` extra)."""

from __future__ import annotations

try:
    import litellm  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from stratacache.errors import missing_extra

    raise missing_extra("litellm", "litellm") from exc
