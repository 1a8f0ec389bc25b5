"""Import boundaries: the core never pulls in LangChain; a missing extra is a clear error."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_core_import_does_not_import_langchain() -> None:
    out = _run(
        "import sys, stratacache, stratacache.integrations._shared; "
        "print(any(m.startswith('langchain') for m in sys.modules))"
    )
    assert out == "False"


def test_missing_langchain_core_raises_dependency_error() -> None:
    out = _run(
        "import sys; sys.modules['langchain_core'] = None\n"
        "from stratacache.errors import DependencyError\n"
        "try:\n    import stratacache.langchain\n"
        "except DependencyError as e:\n    print('stratacache[langchain]' in str(e))"
    )
    assert out == "True"
