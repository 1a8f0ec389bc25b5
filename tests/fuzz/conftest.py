"""Hypothesis settings for the fuzz tests: see ``_strategies`` (``STRATACACHE_FUZZ_EXAMPLES``)."""

from __future__ import annotations

from tests.fuzz import _strategies  # noqa: F401 - registers the "stratacache-fuzz" profile
