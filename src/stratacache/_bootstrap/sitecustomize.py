"""The bootstrap of ``stratacache run`` and ``STRATACACHE_AUTO=1``.

Python imports a module named ``sitecustomize`` at start-up from the first ``sys.path`` entry
that has one; ``stratacache run`` puts this directory first on ``PYTHONPATH`` (as
``opentelemetry-instrument`` does). The module must cost next to nothing in a program that uses
no framework, so it imports only the standard library: it registers a post-import hook for
``langchain_core``, ``litellm`` and ``llama_index.core`` and hands over to
``stratacache._auto`` only when the program itself imports one of them. It then imports the
``sitecustomize`` it shadows, if there is one, so the environment's own start-up code still runs.
"""

from __future__ import annotations

import os
import sys

# The bootstrap imports nothing it can avoid: it runs in every process, and `typing` alone
# costs ~12 ms of start-up. mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

#: Modules whose import installs caching: the top package of each framework we plug into.
TARGETS = ("langchain_core", "litellm", "llama_index.core")
_OFF = ("", "0", "false", "no", "off")


def enabled() -> bool:
    return os.environ.get("STRATACACHE_AUTO", "").strip().lower() not in _OFF


def _fire(name: str) -> None:
    """Hand over to the library; in strict mode its errors propagate to the importer."""
    try:
        from stratacache._auto import on_import
    except Exception as exc:  # stratacache not importable by this interpreter
        if os.environ.get("STRATACACHE_STRICT", "").strip().lower() not in _OFF:
            raise
        print(
            f"stratacache: caching not installed ({type(exc).__name__}: {exc}); "
            "the program runs uncached",
            file=sys.stderr,
        )
        return
    on_import(name)


class PostImportFinder:
    """A ``sys.meta_path`` entry that finds nothing itself: for a target module it asks the
    other finders, then wraps that spec's loader so ``_fire`` runs once the module has fully
    executed (never for a partially initialised module, never twice)."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.pending = set(targets)
        self._finding: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.pending or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:
            spec = None
            for finder in sys.meta_path:  # what the import system does next, minus us
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._finding.discard(fullname)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None
        # Patch this loader instance (file loaders are one per module) rather than wrapping it,
        # so that module.__loader__ keeps its real type; the patch removes itself.
        original = loader.exec_module
        finder = self

        def exec_module(module: ModuleType) -> None:
            loader.__dict__.pop("exec_module", None)
            original(module)
            if fullname in finder.pending:
                finder.pending.discard(fullname)
                _fire(fullname)

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):  # a loader we cannot patch: leave it alone
            return None
        return spec


def _chain() -> None:
    """Import the ``sitecustomize`` this one shadows (a venv's or a distribution's)."""
    from importlib.machinery import PathFinder

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        spec = PathFinder.find_spec("sitecustomize", rest)
        if spec is not None and spec.loader is not None:
            other = type(sys)("sitecustomize")
            other.__file__ = spec.origin
            other.__spec__ = spec
            other.__loader__ = spec.loader
            spec.loader.exec_module(other)
    except Exception as exc:  # the shadowed file's own error, reported as Python would
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{exc!r}", file=sys.stderr)


def _report(signum: int, frame: Any) -> None:
    auto = sys.modules.get("stratacache._auto")
    if auto is not None:
        auto.request_report()  # only sets a flag: the reporter thread prints
    else:
        os.write(2, b"stratacache: no LangChain, LiteLLM or LlamaIndex import yet\n")


def _on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints the summary line, unless the program handles SIGUSR1."""
    import _signal  # type: ignore[import-not-found]  # C module; `signal` imports enum: 5 ms

    usr1 = getattr(_signal, "SIGUSR1", None)
    if usr1 is not None and _signal.getsignal(usr1) == _signal.SIG_DFL:
        _signal.signal(usr1, _report)


def install() -> PostImportFinder | None:
    """Register the hook (once per interpreter); fire at once for a target already imported."""
    if not enabled():
        return None
    for entry in sys.meta_path:
        if isinstance(entry, PostImportFinder) or type(entry).__name__ == "PostImportFinder":
            return None
    os.environ.setdefault("STRATACACHE_RUN", str(os.getpid()))
    _on_sigusr1()
    finder = PostImportFinder(TARGETS)
    sys.meta_path.insert(0, finder)
    for name in TARGETS:
        if name in sys.modules:
            finder.pending.discard(name)
            _fire(name)
    return finder


if __name__ == "sitecustomize":
    _chain()
    install()
