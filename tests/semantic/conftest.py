from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from stratacache.semantic._embedders import LocalEmbedder


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real offline e5 model; loaded once per process however many tests use it."""
    from stratacache.semantic._embedders import LocalEmbedder

    return LocalEmbedder()


class CountingLocal:
    """LocalEmbedder behind a counter and a memo: the tests embed the same texts often, and
    the real model is the slow part of the semantic tests."""

    def __init__(self, local: LocalEmbedder) -> None:
        self.local = local
        self.calls = 0
        self.memo: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        missing = [t for t in texts if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.local.embed(missing), strict=True))
        return np.vstack([self.memo[t] for t in texts])


@pytest.fixture(scope="session")
def memo_local(local_embedder: LocalEmbedder) -> CountingLocal:
    return CountingLocal(local_embedder)
