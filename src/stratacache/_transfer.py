"""``stratacache export`` / ``stratacache import``: move live entries between caches as JSON lines.

Why: a fresh deployment (a new Redis, a CI runner, a laptop) starts cold and pays for every
LLM call again. An export taken from a warm cache and imported there makes its first requests
hits.

The format, one JSON object per line, so both sides stream::

    {"format": "stratacache-export", "version": 1, "created": 1764570000.0, ...}
    {"namespace": "lc-llm", "key": "sc1:llm:…", "value": "<base64>", "ttl": 86123.5}
    {"namespace": "app", "key_sha256": "<64 hex>", "value": "<base64>", "ttl": null}

* ``key`` is the key the caller passed to ``set()``. Keys longer than 200 characters (or that
  a backend cannot store as text) are stored under their sha256 only (see
  :meth:`TieredCache._storage_key`); their original text is gone, so those lines carry
  ``key_sha256`` instead and are restored under the same storage key, where the same caller
  key finds them again.
* ``value`` is the stored envelope (:mod:`stratacache.codec`), so its crc32 lets the import
  reject a corrupted line. The envelope's own absolute expiry is not trusted on import:
  ``ttl`` is.
* ``ttl`` is the time the entry had left when it was exported (null: no expiry). The import
  subtracts the time elapsed since the header's ``created`` and skips entries that are then
  expired, so an entry never outlives its original expiry (by more than the clock difference
  between the two machines), and lives at most as long as it would have in the source cache.

Only the current generation of each namespace is exported: older generations are entries a
``clear()`` already invalidated. An entry held by several tiers is exported once, from the
fastest tier that has a live copy. Import writes through the cache's normal write path
(:meth:`TieredCache._restore`, ``set_many`` by storage key) into the namespace's current
generation in every tier, each tier's TTL cap applied.

Nothing is held whole in memory: keys are listed per namespace and tier (the tier ``scan``
contract returns a list of keys), values are read and written in batches, and the file is
read and written line by line. A failing tier is a :class:`TierError` with a clear message,
never a partial result presented as complete.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from stratacache.codec import DecodeError, decode
from stratacache.errors import ConfigurationError, TierError
from stratacache.keys import check_namespace
from stratacache.tiered import TieredCache

__all__ = [
    "FORMAT",
    "VERSION",
    "ExportResult",
    "HeaderError",
    "ImportResult",
    "Progress",
    "export_cache",
    "import_cache",
]

FORMAT: Final = "stratacache-export"
VERSION: Final = 1
#: Entries read (export) or written (import) per tier call: big enough to amortise a round
#: trip to Redis, small enough that a batch of LLM responses stays a few MB.
BATCH: Final = 256
#: An import batch is also flushed past this many bytes of decoded envelopes.
BATCH_BYTES: Final = 8 * 1024**2
#: How many skipped lines are listed one by one; the rest are only counted by reason.
SHOWN_SKIPS: Final = 10
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class HeaderError(ValueError):
    """The input is not a stratacache export this version can read (exit code 2)."""


class Progress:
    """A counter on stderr: rewritten in place on a terminal, a plain line every ``every``
    entries otherwise (logs and CI output must not fill up with carriage returns)."""

    def __init__(self, label: str, stream: IO[str] | None = None, every: int = 1000) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0
        self._last = 0.0

    def tick(self, n: int = 1) -> None:
        before = self.count
        self.count += n
        if self.tty:
            now = time.monotonic()
            if now - self._last >= 0.1:
                self._last = now
                self.stream.write(f"\r{self.label} {self.count} entries")
                self.stream.flush()
        elif self.count // self.every > before // self.every:
            print(f"{self.label} {self.count} entries", file=self.stream, flush=True)

    def done(self) -> None:
        if self.tty and self._last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass
class ExportResult:
    entries: int = 0
    namespaces: int = 0
    #: Entries left out because they expired or failed their checksum.
    expired: int = 0
    corrupt: int = 0


@dataclass
class ImportResult:
    imported: int = 0
    #: ``(line number, reason)`` of the first :data:`SHOWN_SKIPS` skipped lines.
    shown: list[tuple[int, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    #: Entries of namespaces not selected with ``--namespace``: left out on purpose.
    filtered: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def skip(self, lineno: int, reason: str) -> None:
        self.reasons[reason] += 1
        if len(self.shown) < SHOWN_SKIPS:
            self.shown.append((lineno, reason))


def _trouble(cache: TieredCache) -> list[int]:
    """Per tier, the calls that failed, were skipped by an open breaker or found it busy.

    TieredCache serves all three as misses, which is right for a request but would make an
    export silently incomplete; comparing these counters around a step tells us."""
    return [h.stats.errors + h.stats.skipped + h.stats.busy for h in cache._health]


def _failing_since(cache: TieredCache, before: list[int]) -> list[str]:
    after = _trouble(cache)
    return [t.name for t, a, b in zip(cache.tiers, before, after, strict=True) if b > a]


def _checked_prefix(cache: TieredCache, namespace: str) -> str:
    before = _trouble(cache)
    prefix = cache._live_prefix(namespace)
    failing = _failing_since(cache, before)
    if failing:
        raise TierError(
            f"could not read the generation of namespace {namespace!r} from tier(s) "
            f"{', '.join(failing)}; is it reachable?"
        )
    return prefix


def namespaces_of(cache: TieredCache) -> list[str]:
    """Every namespace stratacache wrote in the shared tiers; TierError if one did not answer
    (a namespace that lives only there would be missed)."""
    before = _trouble(cache)
    names = cache._namespaces()
    failing = _failing_since(cache, before)
    if failing:
        raise TierError(f"could not list the namespaces of tier(s) {', '.join(failing)}")
    return names


def _tier_call(cache: TieredCache, i: int, method: str, *args: Any) -> Any:
    """A direct tier call, outside the breaker: an export must fail loudly, not read a dead
    tier as empty."""
    tier = cache.tiers[i]
    try:
        return getattr(tier, method)(*args)
    except Exception as exc:
        raise TierError(
            f"tier {tier.name} failed on {method}: {type(exc).__name__}: {exc}"
        ) from exc


def export_cache(
    cache: TieredCache,
    out: IO[str],
    namespaces: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the header and every live entry of ``namespaces`` (default: all) to ``out``.

    :raises TierError: a tier failed; what was written so far is incomplete.
    """
    names = [check_namespace(n) for n in namespaces] if namespaces else namespaces_of(cache)
    created = time.time()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created": created,
        "tiers": [t.name for t in cache.tiers],
    }
    out.write(json.dumps(header) + "\n")
    result = ExportResult()
    for namespace in dict.fromkeys(names):
        prefix = _checked_prefix(cache, namespace)
        written = 0
        #: Storage keys already exported from a faster tier: keys only, never values.
        seen: set[str] = set()
        for i in range(len(cache.tiers)):
            keys = [k for k in _tier_call(cache, i, "scan", prefix) if k not in seen]
            for start in range(0, len(keys), BATCH):
                batch = keys[start : start + BATCH]
                found = _tier_call(cache, i, "get_many", batch)
                now = time.time()
                for pk in batch:
                    data = found.get(pk)
                    if type(data) is not bytes:
                        continue  # gone (evicted, expired) since the scan
                    line = _export_line(namespace, pk[len(prefix) :], data, now, result)
                    if line is None:
                        continue
                    seen.add(pk)
                    out.write(line)
                    written += 1
                    if progress is not None:
                        progress.tick()
        result.entries += written
        result.namespaces += 1 if written else 0
    out.flush()
    return result


def _export_line(
    namespace: str, skey: str, data: bytes, now: float, result: ExportResult
) -> str | None:
    """One JSON line for a stored entry, or None for an expired, corrupt or foreign one."""
    try:
        _, expires_at = decode(data)
    except DecodeError:
        result.corrupt += 1
        return None
    ttl: float | None = None
    if expires_at is not None:
        ttl = round(expires_at - now, 3)
        if ttl <= 0:
            result.expired += 1
            return None
    entry: dict[str, Any] = {"namespace": namespace}
    if skey.startswith("k:"):
        entry["key"] = skey[2:]
    elif skey.startswith("h:") and _SHA256_HEX.fullmatch(skey[2:]):
        entry["key_sha256"] = skey[2:]
    else:
        result.corrupt += 1  # not a key TieredCache writes: nothing an import could restore
        return None
    entry["value"] = base64.b64encode(data).decode("ascii")
    entry["ttl"] = ttl
    return json.dumps(entry) + "\n"


def read_header(first: bytes | str | None) -> float:
    """Validate the header line; its ``created`` time.

    :raises HeaderError: missing, not JSON, not ours, or a version this code cannot read.
    """
    if first is None or not first.strip():
        raise HeaderError("empty input: no stratacache-export header line")
    try:
        header = json.loads(first)
    except ValueError as exc:
        raise HeaderError(f"line 1 is not a JSON header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise HeaderError(f'line 1 is not a stratacache export header ({{"format": "{FORMAT}"}})')
    version = header.get("version")
    if type(version) is not int or version != VERSION:
        raise HeaderError(f"export format version {version!r} is not supported (only {VERSION})")
    created = header.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise HeaderError("the header has no valid 'created' time")
    if not math.isfinite(created):
        raise HeaderError("the header has no valid 'created' time")
    return float(created)


def _parse_entry(
    raw: bytes | str, created: float, now: float
) -> tuple[str, str, Any, float | None] | str:
    """``(namespace, storage key, value, ttl to write)`` for a valid line, else the reason it
    is skipped."""
    try:
        entry = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return "bad json"
    if not isinstance(entry, dict):
        return "not a json object"
    namespace = entry.get("namespace")
    if not isinstance(namespace, str):
        return "bad namespace"
    try:
        check_namespace(namespace)
    except ConfigurationError:
        return "bad namespace"
    key, digest = entry.get("key"), entry.get("key_sha256")
    if isinstance(key, str) and digest is None:
        try:
            skey = TieredCache._storage_key(key)
        except Exception:  # pragma: no cover - _storage_key accepts every str
            return "bad key"
    elif key is None and isinstance(digest, str) and _SHA256_HEX.fullmatch(digest):
        skey = "h:" + digest
    else:
        return "bad key"
    b64 = entry.get("value")
    if not isinstance(b64, str):
        return "bad base64"
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return "bad base64"
    try:
        value, _ = decode(data)
    except DecodeError:
        return "bad value"
    ttl = entry.get("ttl", "missing")
    if ttl is None:
        return namespace, skey, value, None
    if type(ttl) not in (int, float) or not math.isfinite(ttl) or ttl <= 0:
        return "bad ttl"
    left = float(ttl) - max(0.0, now - created)
    if left <= 0:
        return "expired"
    return namespace, skey, value, left


def import_cache(
    cache: TieredCache,
    lines: Iterable[bytes | str],
    namespaces: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Validate and write every entry line after the header; the rest is reported, not raised.

    :raises HeaderError: the first line is not a readable header (nothing was written).
    :raises TierError: a tier did not take a write; entries before it were imported.
    """
    wanted = {check_namespace(n) for n in namespaces} if namespaces else None
    it = iter(lines)
    created = read_header(next(it, None))
    result = ImportResult()
    views: dict[str, TieredCache] = {}
    pending: dict[str, list[tuple[str, Any, float | None]]] = {}
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        for namespace, batch in pending.items():
            view = views.get(namespace)
            if view is None:
                _checked_prefix(cache, namespace)  # a tier that cannot tell the generation
                view = views[namespace] = cache.with_namespace(namespace)
            failed = view._restore(batch)
            if failed:
                raise TierError(
                    f"tier(s) {', '.join(failed)} did not take {len(batch)} entries of "
                    f"namespace {namespace!r}; {result.imported} entries were imported before"
                )
            result.imported += len(batch)
            if progress is not None:
                progress.tick(len(batch))
        pending.clear()
        pending_bytes = 0

    for lineno, raw in enumerate(it, start=2):
        if not raw.strip():
            continue  # a trailing newline or an editor's blank line is not an entry
        parsed = _parse_entry(raw, created, time.time())
        if isinstance(parsed, str):
            result.skip(lineno, parsed)
            continue
        namespace, skey, value, ttl = parsed
        if wanted is not None and namespace not in wanted:
            result.filtered += 1
            continue
        batch = pending.setdefault(namespace, [])
        batch.append((skey, value, ttl))
        pending_bytes += len(raw)
        if len(batch) >= BATCH or pending_bytes >= BATCH_BYTES:
            flush()
    flush()
    return result


def summary(result: ImportResult) -> list[str]:
    """The lines ``stratacache import`` prints: totals, then the first skipped lines."""
    reasons = ", ".join(f"{n} {reason}" for reason, n in result.reasons.most_common())
    head = f"imported {result.imported} entries, skipped {result.skipped}"
    if result.skipped:
        head += f" (reasons: {reasons})"
    if result.filtered:
        head += f"; left out {result.filtered} entries of other namespaces"
    out = [head]
    for lineno, reason in result.shown:
        out.append(f"  line {lineno}: {reason}")
    if result.skipped > len(result.shown):
        out.append(f"  ... and {result.skipped - len(result.shown)} more")
    return out
