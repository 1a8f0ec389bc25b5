"""``stratacache run -- CMD``: run an unmodified program with caching installed.

The launcher only prepares the environment (the bootstrap directory first on ``PYTHONPATH``,
``STRATACACHE_AUTO=1`` and the options as ``STRATACACHE_*`` variables) and then *replaces
itself* with CMD (``execvpe``): same pid, same signals, same exit code, same terminal, and
every Python process CMD starts inherits the activation through the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stratacache.errors import StrataCacheError

__all__ = ["BOOTSTRAP_DIR", "RunOptions", "build_env", "launch"]

#: The directory holding the bootstrap ``sitecustomize.py``: what goes on ``PYTHONPATH``.
BOOTSTRAP_DIR = str(Path(__file__).resolve().parent / "_bootstrap")


@dataclass
class RunOptions:
    command: list[str]
    tiers: list[str] = field(default_factory=list)
    namespace: str | None = None
    semantic: bool = False
    rate_limits: list[str] = field(default_factory=list)
    rate_limit_redis: str | None = None
    quiet: bool = False
    strict: bool = False


def build_env(options: RunOptions, base: Mapping[str, str]) -> dict[str, str]:
    """The program's environment: ``base`` plus the activation and the options."""
    env = dict(base)
    if options.tiers:
        env["STRATACACHE_URLS"] = ",".join(options.tiers)
    if options.namespace:
        env["STRATACACHE_NAMESPACE"] = options.namespace
    if options.semantic:
        env["STRATACACHE_SEMANTIC"] = "1"
    if options.rate_limits:
        env["STRATACACHE_RATE_LIMITS"] = ",".join(options.rate_limits)
    if options.rate_limit_redis:
        env["STRATACACHE_RATE_LIMIT_REDIS"] = options.rate_limit_redis
    if options.quiet:
        env["STRATACACHE_QUIET"] = "1"
    if options.strict:
        env["STRATACACHE_STRICT"] = "1"
    # The program's first Python process becomes the run's reporter, not an ancestor's pid.
    env.pop("STRATACACHE_RUN", None)
    env["STRATACACHE_AUTO"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *_other_paths(env)])
    return env


def _other_paths(env: Mapping[str, str]) -> list[str]:
    """``PYTHONPATH`` entries other than the bootstrap directory."""
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]


def _uncached(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the activation removed (the bootstrap stays off even if inherited)."""
    env["STRATACACHE_AUTO"] = "0"
    paths = _other_paths(env)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    return env


def launch(options: RunOptions, base: Mapping[str, str] | None = None) -> int:
    """Check the configuration, then exec the command; returns only on failure."""
    from stratacache import _auto

    command = list(options.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("stratacache run: no command (stratacache run -- python app.py)", file=sys.stderr)
        return 2
    env = build_env(options, os.environ if base is None else base)
    try:
        _auto.check(env)
    except Exception as exc:  # a launcher bug must not stop the program either
        if options.strict:
            print(f"stratacache run: {exc} (--strict: not started)", file=sys.stderr)
            return 2
        reason = str(exc) if isinstance(exc, StrataCacheError) else f"{type(exc).__name__}: {exc}"
        print(f"stratacache run: {reason}; running {command[0]} uncached", file=sys.stderr)
        env = _uncached(env)
    sys.stdout.flush()
    sys.stderr.flush()
    return _exec(command, env)


def _exec(command: Sequence[str], env: dict[str, str]) -> int:
    """Replace this process by ``command``; returns (the shell's exit code) only on failure."""
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - the user's own command
    except FileNotFoundError:
        print(f"stratacache run: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"stratacache run: permission denied: {command[0]}", file=sys.stderr)
        return 126
