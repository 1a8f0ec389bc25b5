"""Workaround for litellm#42195: on a plain ``pip install litellm`` every cache hit can crash.

litellm's hit path (``litellm.caching.caching_handler._should_defer_streaming_cache_hit_callbacks``)
imports, on every hit, the module that holds the Anthropic pass-through replay iterator. That
module imports ``litellm.proxy`` and so needs fastapi, the proxy extra. The module has moved
between releases (``...anthropic.pass_through.messages.response_cache`` in 1.106,
``...anthropic.messages.native.response_cache`` in 1.110) and may move again, so nothing here
names it or trusts a version window. The need is detected by behaviour:

* the hook is called once with a plain object, the way a non-streamed hit calls it; if that
  raises :class:`ImportError` the hit path is broken in this environment, otherwise (fastapi
  installed, or a litellm that fixed it) nothing is touched;
* the repair is litellm's own function, rebuilt over its own code with one difference: a
  ``from M import C`` whose module cannot be imported yields a class that nothing is an
  instance of. A class whose module cannot be imported cannot have instances in this process,
  so every ``isinstance`` answer is the one litellm meant; only the crash is gone. Failed
  imports are remembered, because Python retries a failed import on every attempt (hundreds of
  µs on each hit).

:func:`revert_hit_patch` puts litellm's own function back.
"""

from __future__ import annotations

import builtins
import importlib.metadata
import logging
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "apply_hit_patch",
    "hit_patch_applied",
    "hit_path_broken",
    "litellm_version",
    "revert_hit_patch",
]

log = logging.getLogger("stratacache")

_HANDLER = "litellm.caching.caching_handler"
_FUNC = "_should_defer_streaming_cache_hit_callbacks"
_lock = threading.Lock()
_original: Callable[..., Any] | None = None
_patched: Callable[..., Any] | None = None


def litellm_version() -> str:
    """The installed litellm version, for log lines and ``stratacache doctor``."""
    return importlib.metadata.version("litellm")


def _handler() -> types.ModuleType:
    import litellm.caching.caching_handler as handler

    return handler


def hit_path_broken(func: Callable[..., Any] | None = None) -> bool:
    """Does litellm's hit hook raise ImportError here? Asked the way a plain hit asks it."""
    func = func if func is not None else getattr(_handler(), _FUNC, None)
    if func is None:
        return False
    try:
        func(cached_result={"choices": []})
    except ImportError:
        return True
    except Exception:
        log.debug("stratacache: probing litellm's hit hook raised", exc_info=True)
    return False


class _AbsentModule(types.ModuleType):
    """What a failed ``from M import C`` gets instead: every name is a fresh empty class."""

    def __getattr__(self, name: str) -> type:
        doc = "Stands in for a class whose module cannot be imported: it never has instances."
        absent = type(name, (), {"__module__": self.__name__, "__doc__": doc})
        setattr(self, name, absent)
        return absent


class _TolerantImport:
    """``__import__`` for the rebuilt function: real imports, failed ones remembered as absent."""

    def __init__(self) -> None:
        self._failed: dict[str, _AbsentModule] = {}

    def __call__(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: tuple[str, ...] | list[str] | None = (),
        level: int = 0,
    ) -> Any:
        absent = self._failed.get(name)
        if absent is not None and fromlist:
            return absent
        try:
            return builtins.__import__(name, globals, locals, fromlist or (), level)
        except ImportError as exc:
            if not fromlist:  # `import a.b` binds `a`: nothing sound to stand in for it
                raise
            log.info("stratacache: litellm's cache-hit path cannot import %s (%s)", name, exc)
            absent = self._failed.setdefault(name, _AbsentModule(name))
            return absent


class _Globals(dict[str, Any]):
    """The rebuilt function's globals: its own ``__builtins__``, everything else read live from
    litellm's module, so a name litellm rebinds later is seen, not a stale copy."""

    def __init__(self, module_globals: dict[str, Any], builtins_ns: dict[str, Any]) -> None:
        super().__init__(__builtins__=builtins_ns, __name__=module_globals.get("__name__"))
        self._module_globals = module_globals

    def __missing__(self, key: str) -> Any:
        return self._module_globals[key]


def _tolerant_copy(func: types.FunctionType) -> types.FunctionType:
    builtins_ns = dict(vars(builtins))
    builtins_ns["__import__"] = _TolerantImport()
    copy = types.FunctionType(
        func.__code__,
        _Globals(func.__globals__, builtins_ns),
        func.__name__,
        func.__defaults__,
        func.__closure__,
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__doc__ = func.__doc__
    copy.__qualname__ = func.__qualname__
    copy.__module__ = func.__module__
    copy.__wrapped__ = func  # type: ignore[attr-defined]
    return copy


def hit_patch_applied() -> bool:
    return _patched is not None and getattr(_handler(), _FUNC, None) is _patched


def apply_hit_patch() -> bool:
    """Repair litellm's hit hook if, and only if, it is broken here; True if this call did."""
    global _original, _patched
    handler = _handler()
    with _lock:
        current = getattr(handler, _FUNC, None)
        if not isinstance(current, types.FunctionType) or current is _patched:
            return False
        if not hit_path_broken(current):
            return False
        repaired = _tolerant_copy(current)
        if hit_path_broken(repaired):  # it fails for another reason: leave litellm as it is
            log.warning("stratacache: litellm's cache-hit hook fails to import; not repairable")
            return False
        _original, _patched = current, repaired
        setattr(handler, _FUNC, repaired)
    log.info(
        "stratacache: litellm %s cache hits import a module this environment lacks "
        "(litellm#42195); its hit hook now treats unimportable classes as absent",
        litellm_version(),
    )
    return True


def revert_hit_patch() -> None:
    """Put litellm's own function back (only if ours is the one installed)."""
    global _original, _patched
    handler = _handler()
    with _lock:
        if _original is not None and getattr(handler, _FUNC, None) is _patched:
            setattr(handler, _FUNC, _original)
        _original = _patched = None
