"""Turning URLs and human sizes into tiers; every mistake becomes a ConfigurationError."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from stratacache.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from stratacache.tiers.base import Tier

__all__ = ["default_dir", "parse_duration", "parse_size", "tier_from_url"]

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """``"256MB"`` -> 256_000_000, ``"1GiB"``/``"1G"`` -> 1_073_741_824, ``4096`` -> 4096."""
    if isinstance(text, int):
        value = text
    else:
        match = _NUMBER_UNIT.match(text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ConfigurationError(f"bad {what} {text!r}: write e.g. 4096, 256MB, 10GB or 1GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ConfigurationError(f"{what} must be positive, got {text!r}")
    return value


def parse_duration(text: str | float | None, what: str = "ttl") -> float | None:
    """``"90"``/``90`` -> 90.0 s, ``"5m"``, ``"1h"``, ``"7d"``, ``"250ms"``; None stays None."""
    if text is None:
        return None
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _NUMBER_UNIT.match(text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _DURATION_UNITS:
            raise ConfigurationError(
                f"bad {what} {text!r}: write seconds or e.g. 250ms, 5m, 1h, 7d"
            )
        value = float(match.group(1)) * _DURATION_UNITS[unit]
    if value <= 0:
        raise ConfigurationError(f"{what} must be positive (or None for no expiry), got {text!r}")
    return value


def default_dir() -> Path:
    """``$STRATACACHE_DIR``, else the platform's user cache dir."""
    from pathlib import Path

    env = os.environ.get("STRATACACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("stratacache", appauthor=False))


def _options(query: str, allowed: set[str], url: str) -> dict[str, str]:
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(opts) - allowed
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} in {url!r}; allowed: {sorted(allowed)}"
        )
    return opts


def _memory(url: str) -> Tier:
    from stratacache.tiers.memory import MemoryTier

    opts = _options(urlsplit(url).query, {"max_bytes", "ttl", "name"}, url)
    return MemoryTier(
        parse_size(opts.get("max_bytes", "256MB"), "max_bytes"),
        ttl=parse_duration(opts.get("ttl")),
        name=opts.get("name"),
    )


def _disk(url: str) -> Tier:
    from pathlib import Path

    from stratacache.tiers.disk import DiskTier

    parts = urlsplit(url)
    opts = _options(parts.query, {"max_bytes", "ttl", "name", "timeout"}, url)
    # disk:///abs/path, disk://relative/path and disk://~/path all name a directory.
    raw = parts.netloc + parts.path
    path = Path(raw).expanduser() if raw else default_dir() / "disk"
    return DiskTier(
        path,
        parse_size(opts.get("max_bytes", "1GB"), "max_bytes"),
        ttl=parse_duration(opts.get("ttl")),
        timeout=parse_duration(opts.get("timeout", "1"), "timeout") or 1.0,
        name=opts.get("name"),
    )


def _redis(url: str) -> Tier:
    from stratacache.tiers.redis import RedisTier

    parts = urlsplit(url)
    allowed = {"ttl", "name", "timeout", "connect_timeout", "max_connections"}
    opts = _options(parts.query, allowed, url)
    max_conn = opts.get("max_connections", "64")
    if not max_conn.isdigit():
        raise ConfigurationError(f"max_connections must be a whole number in {url!r}")
    return RedisTier(
        parts._replace(query="").geturl(),
        ttl=parse_duration(opts.get("ttl")),
        timeout=parse_duration(opts.get("timeout", "0.5"), "timeout") or 0.5,
        connect_timeout=parse_duration(opts.get("connect_timeout", "0.5"), "connect_timeout")
        or 0.5,
        max_connections=int(max_conn),
        name=opts.get("name"),
    )


_FACTORIES: dict[str, Callable[[str], Tier]] = {
    "memory": _memory,
    "disk": _disk,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def tier_from_url(url: str) -> Tier:
    """Build a tier from ``memory://``, ``disk://``, ``redis://``, ``rediss://``,
    ``unix://`` or ``redis+cluster://`` URLs."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"bad tier URL {url!r}: expected e.g. 'memory://', 'disk:///var/cache/app', "
            "'redis://localhost:6379/0'"
        )
    scheme = url.split("://", 1)[0].lower()
    factory = _FACTORIES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"unknown tier scheme {scheme!r} in {url!r}; known: {sorted(_FACTORIES)}"
        )
    return factory(url)
