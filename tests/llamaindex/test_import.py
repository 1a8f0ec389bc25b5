from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_import_stratacache_never_imports_llama_index() -> None:
    out = _run("""
        import sys, stratacache
        assert not any(m.startswith("llama_index") for m in sys.modules), "imported"
    """)
    assert out.returncode == 0, out.stderr


def test_missing_extra_raises_dependency_error() -> None:
    out = _run("""
        import sys
        sys.modules["llama_index.core"] = None
        from stratacache.errors import DependencyError
        try:
            import stratacache.llamaindex
        except DependencyError as exc:
            assert "stratacache[llamaindex]" in str(exc)
        else:
            raise SystemExit("no error")
    """)
    assert out.returncode == 0, out.stderr
