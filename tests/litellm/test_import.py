"""Import boundaries: the core never pulls in litellm; a missing extra is a clear error."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_core_import_does_not_import_litellm() -> None:
    out = _run(
        "import sys, stratacache, stratacache.integrations._shared; "
        "print(any(m.startswith('litellm') for m in sys.modules))"
    )
    assert out == "False"


def test_missing_litellm_raises_dependency_error() -> None:
    out = _run(
        "import sys; sys.modules['litellm'] = None\n"
        "from stratacache.errors import DependencyError\n"
        "try:\n    import stratacache.litellm\n"
        "except DependencyError as e:\n    print('stratacache[litellm]' in str(e))"
    )
    assert out == "True"


def test_public_names() -> None:
    import stratacache.litellm as scl

    for name in ("install", "uninstall", "CacheBackend", "RateLimitCallback"):
        assert name in scl.__all__ and hasattr(scl, name)
