from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stratacache.semantic._embedders import LocalEmbedder


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real offline e5 model; loaded once per process however many tests use it."""
    from stratacache.semantic._embedders import LocalEmbedder

    return LocalEmbedder()
