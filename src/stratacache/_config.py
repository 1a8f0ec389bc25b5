"""Turning URLs and human sizes into tiers; every mistake becomes a ConfigurationError."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qsl, urlsplit

from stratacache.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from stratacache.tiers.base import Tier
    from stratacache.tiers.encrypted import Keyring

__all__ = ["default_dir", "parse_duration", "parse_size", "redact_url", "tier_from_url"]

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
#: Largest size any backend can hold: SQLite (diskcache) stores sizes as signed 64-bit ints.
MAX_SIZE: int = 2**63 - 1
#: Longest TTL accepted: 100 years. Longer values (or inf) overflow Redis' expiry arithmetic,
#: and then every write to Redis fails, silently, as a counted tier error.
MAX_DURATION: float = 100 * 365 * 86400.0
_CREDENTIALS = re.compile(r"(://[^:@/]*:)[^@]*@")


def redact_url(url: object) -> str:
    """``url`` for messages: the password of ``scheme://user:password@host`` becomes ``***``.

    A regex, not urlsplit: the URLs that need a message are often the ones that do not parse.
    """
    return _CREDENTIALS.sub(r"\1***@", str(url))


def parse_size(text: str | int, what: str = "size") -> int:
    """``"256MB"`` -> 256_000_000, ``"1GiB"``/``"1G"`` -> 1_073_741_824, ``4096`` -> 4096."""
    if isinstance(text, int):
        value = text
    else:
        match = _NUMBER_UNIT.match(text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ConfigurationError(f"bad {what} {text!r}: write e.g. 4096, 256MB, 10GB or 1GiB")
        try:
            value = int(float(match.group(1)) * _SIZE_UNITS[unit])
        except OverflowError:  # "9999…9GB" is inf as a float
            value = MAX_SIZE + 1
    return check_size(value, what)


def check_size(value: int, what: str = "max_bytes") -> int:
    """A byte bound every tier can hold: a positive int no larger than :data:`MAX_SIZE`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be a whole number of bytes, got {value!r}")
    if not 0 < value <= MAX_SIZE:
        raise ConfigurationError(f"{what} must be positive and at most {MAX_SIZE}, got {value}")
    return value


def parse_duration(text: str | float | None, what: str = "ttl") -> float | None:
    """``"90"``/``90`` -> 90.0 s, ``"5m"``, ``"1h"``, ``"7d"``, ``"250ms"``; None stays None."""
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ConfigurationError(f"{what} must be seconds or a string like '5m', got {text!r}")
    if isinstance(text, int | float):
        try:
            value = float(text)
        except OverflowError:  # an int beyond float range
            value = math.inf
    else:
        match = _NUMBER_UNIT.match(text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _DURATION_UNITS:
            raise ConfigurationError(
                f"bad {what} {text!r}: write seconds or e.g. 250ms, 5m, 1h, 7d"
            )
        value = float(match.group(1)) * _DURATION_UNITS[unit]
    return check_duration(value, what, text)


def check_duration(value: float, what: str, shown: object = None) -> float:
    """A finite, positive duration of at most :data:`MAX_DURATION` seconds."""
    if not 0 < value <= MAX_DURATION:  # also False for NaN
        raise ConfigurationError(
            f"{what} must be positive and at most {MAX_DURATION:.0f} s (100 years), or None "
            f"for no expiry; got {value if shown is None else shown!r}"
        )
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
        # Names only, and the URL without its query: a misspelt option may hold a secret
        # (``?encryption_key=...``, ``?pasword=...``) that must not reach a log.
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} in {redact_url(url.split('?', 1)[0])!r}; "
            f"allowed: {sorted(allowed)}"
        )
    return opts


def split_url(url: str) -> SplitResult:
    """``urlsplit`` whose ValueError (``redis://[::1``) is a ConfigurationError without the
    password."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"bad URL {redact_url(url)!r}: {exc}") from None


def _memory(url: str) -> Tier:
    from stratacache.tiers.memory import MemoryTier

    opts = _options(split_url(url).query, {"max_bytes", "ttl", "name", "encrypt"}, url)
    if parse_bool(opts.get("encrypt", "0"), f"encrypt in {redact_url(url)!r}"):
        raise ConfigurationError(
            f"encrypt=1 applies to tiers that store data outside this process (disk://, "
            f"redis://, ...), not to {redact_url(url)!r}: a memory tier's values never leave "
            "the process that holds the key"
        )
    return MemoryTier(
        parse_size(opts.get("max_bytes", "256MB"), "max_bytes"),
        ttl=parse_duration(opts.get("ttl")),
        name=opts.get("name"),
    )


def _disk(url: str) -> Tier:
    from pathlib import Path

    from stratacache.tiers.disk import DiskTier

    parts = split_url(url)
    opts = _options(parts.query, {"max_bytes", "ttl", "name", "timeout", "encrypt"}, url)
    keyring = _keyring(opts, url)
    # disk:///abs/path, disk://relative/path and disk://~/path all name a directory.
    raw = parts.netloc + parts.path
    path = Path(raw).expanduser() if raw else default_dir() / "disk"
    tier = DiskTier(
        path,
        parse_size(opts.get("max_bytes", "1GB"), "max_bytes"),
        ttl=parse_duration(opts.get("ttl")),
        timeout=parse_duration(opts.get("timeout", "1"), "timeout") or 1.0,
        name=opts.get("name"),
    )
    return _sealed(tier, keyring)


def _redis(url: str) -> Tier:
    from stratacache.tiers.redis import RedisTier

    parts = split_url(url)
    allowed = {"ttl", "name", "timeout", "connect_timeout", "max_connections", "pipeline"}
    opts = _options(parts.query, allowed | {"encrypt"} | TLS_OPTIONS, url)
    keyring = _keyring(opts, url)
    tls = {k: v for k, v in opts.items() if k in TLS_OPTIONS}
    max_conn = opts.get("max_connections", "64")
    if not max_conn.isdigit():
        raise ConfigurationError(f"max_connections must be a whole number in {redact_url(url)!r}")
    tier = RedisTier(
        parts._replace(query="").geturl(),
        ttl=parse_duration(opts.get("ttl")),
        timeout=parse_duration(opts.get("timeout", "0.5"), "timeout") or 0.5,
        connect_timeout=parse_duration(opts.get("connect_timeout", "0.5"), "connect_timeout")
        or 0.5,
        max_connections=int(max_conn),
        pipeline=parse_bool(opts.get("pipeline", "1"), f"pipeline in {redact_url(url)!r}"),
        tls=tls or None,
        name=opts.get("name"),
    )
    return _sealed(tier, keyring)


def _keyring(opts: dict[str, str], url: str) -> Keyring | None:
    """The keys for ``?encrypt=1``, read (and checked) before the tier opens anything, so a
    missing key fails the construction without leaving a directory or connection behind."""
    if not parse_bool(opts.get("encrypt", "0"), f"encrypt in {redact_url(url)!r}"):
        return None
    from stratacache.tiers.encrypted import Keyring

    try:
        return Keyring()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (for encrypt=1 in {redact_url(url)!r})") from None


def _sealed(tier: Tier, keyring: Keyring | None) -> Tier:
    if keyring is None:
        return tier
    from stratacache.tiers.encrypted import EncryptedTier

    return EncryptedTier(tier, keyring)


#: TLS options of a ``rediss://`` URL, named as redis-py names them.
TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
)


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False}
_BOOLS.update({"no": False, "off": False})


def parse_bool(value: str | bool, what: str) -> bool:
    """``1/0``, ``true/false``, ``yes/no``, ``on/off`` (any case), as URL options are written."""
    if isinstance(value, bool):
        return value
    try:
        return _BOOLS[value.strip().lower()]
    except KeyError:
        raise ConfigurationError(f"{what} must be 1 or 0, not {value!r}") from None


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
            f"bad tier URL {redact_url(url)!r}: expected e.g. 'memory://', "
            "'disk:///var/cache/app', 'redis://localhost:6379/0'"
        )
    scheme = url.split("://", 1)[0].lower()
    factory = _FACTORIES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"unknown tier scheme {scheme!r} in {redact_url(url)!r}; known: {sorted(_FACTORIES)}"
        )
    return factory(url)
