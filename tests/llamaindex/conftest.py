from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from pydantic import PrivateAttr


class CountingLLM(MockLLM):
    """MockLLM that counts the completions it really produced.

    The counter is private state, not a field: every field of an LLM is part of its cache
    identity, so a counting field would give each call a new key.
    """

    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._calls = value

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self.calls += 1
        return super().complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self.calls += 1
        return super().stream_complete(prompt, formatted=formatted, **kwargs)


class CountingEmbedding(MockEmbedding):
    """Deterministic, text-dependent vectors; counts texts it embedded (privately, see above)."""

    _texts: int = PrivateAttr(default=0)
    _queries: int = PrivateAttr(default=0)

    @property
    def texts(self) -> int:
        return self._texts

    @property
    def queries(self) -> int:
        return self._queries

    def _vec(self, text: str) -> list[float]:
        base = sum(map(ord, text)) % 97
        return [((base + i) % 13) / 13.0 + 0.01 for i in range(self.embed_dim)]

    def _get_query_embedding(self, query: str) -> list[float]:
        self._queries += 1
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self._texts += 1
        return self._vec(text)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


@pytest.fixture(autouse=True)
def restore_settings() -> Iterator[None]:
    """Every test leaves llama_index Settings exactly as it found them."""
    import stratacache.llamaindex as scli

    saved = (Settings._llm, Settings._embed_model, Settings._callback_manager)
    yield
    scli.uninstall()
    Settings._llm, Settings._embed_model, Settings._callback_manager = saved


@pytest.fixture
def llm() -> CountingLLM:
    return CountingLLM(max_tokens=8)


@pytest.fixture
def emb() -> CountingEmbedding:
    return CountingEmbedding(embed_dim=8)
