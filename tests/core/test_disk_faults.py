"""A sick disk is never the caller's exception, and never a torn entry.

Every fault is real, made with what this machine (root, ext4) and a laptop (a user) allow:

* read-only directory: ``chattr +i`` on the cache's directories when running as root (root
  ignores permission bits, so ``chmod`` would change nothing), ``chmod a-w`` otherwise. Both
  stop what a read-only directory stops: creating and removing files (new large values),
  while the open database files stay writable, exactly as after a ``chmod`` of a live cache;
* disk full: a 4 MiB tmpfs mounted in a private mount namespace (``unshare --mount``; as a
  user, ``unshare --user --map-root-user --mount``), so the kernel answers ENOSPC, not the
  EFBIG that the RLIMIT_FSIZE test in test_faults.py gets;
* directory deleted (``shutil.rmtree``) under the running process, then a file put in its
  place;
* two processes on one directory, one of them SIGKILLed again and again in the middle of
  writing large values.

In each: 0 exceptions reach the caller, errors are counted in ``stats()``, one warning is
logged, and every value read back is exactly one that was written.

Budget: under 25 s for this file on the shared two-core machine (``--durations``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache.tiers import MISS, DiskTier
from tests.redis_procs import REQUIRE_REDIS, require_binary
from tests.selfcheck import genuine, payload

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def poll(condition: Any, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` is true; fails past ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


# -- (a) read-only directory ------------------------------------------------------------------


def _directories(root: Path) -> list[Path]:
    return [Path(d) for d, _, _ in os.walk(root)]


@pytest.fixture
def make_read_only() -> Iterator[Any]:
    """A function that makes a directory tree read-only for this process; undone after."""
    undo: list[list[str]] = []

    def apply(root: Path) -> None:
        dirs = [str(d) for d in _directories(root)]
        if os.geteuid() == 0:
            chattr = require_binary("chattr")
            done = subprocess.run([chattr, "+i", *dirs], capture_output=True, text=True)
            if done.returncode != 0:  # e.g. a filesystem without inode flags
                message = f"chattr +i is not supported here: {done.stderr.strip()}"
                if REQUIRE_REDIS:
                    pytest.fail(message)
                pytest.skip(message)
            undo.append([chattr, "-i", *dirs])
        else:
            for d in dirs:
                os.chmod(d, 0o555)
            undo.append(["chmod", "755", *dirs])

    yield apply
    for command in undo:
        subprocess.run(command, check=True)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_directory_made_read_only_after_start(
    tmp_path: Path, make_read_only: Any, caplog: pytest.LogCaptureFixture, flavour: str
) -> None:
    cache = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path}/d", namespace="ro")
    disk_only = sc.TieredCache([cache.tiers[1]], namespace="ro")
    before = {f"old{i}": payload(f"old{i}", 0, 60_000 if i % 2 else 500) for i in range(10)}
    cache.set_many(before)
    make_read_only(tmp_path / "d")

    async def run() -> None:
        for i in range(30):
            key = f"new{i}"
            value = payload(key, 1, 60_000)  # over diskcache's 32 KB: needs a new file
            if flavour == "sync":
                cache.set(key, value)
                assert cache.get(key) == value  # memory still serves it
            else:
                await cache.aset(key, value)
                assert await cache.aget(key) == value
        # What was stored before stays readable from the disk itself.
        assert disk_only.get_many(list(before)) == before

    import asyncio

    with caplog.at_level(logging.WARNING, logger="stratacache"):
        asyncio.run(run())
    disk = cache.stats()["tiers"][1]
    assert disk["errors"] >= 1, disk
    assert disk["corrupt"] == 0
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)

    for d in _directories(tmp_path / "d"):  # writable again: the tier takes new files
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        os.chmod(d, 0o755)

    def stored() -> bool:
        cache.set("after", payload("after", 2, 60_000))
        return disk_only.get("after", MISS) == payload("after", 2, 60_000)

    poll(stored)  # the breaker may be open: its probe comes within its 2 s cap
    cache.close()


def test_a_read_only_directory_at_start_is_a_configuration_error(
    tmp_path: Path, make_read_only: Any
) -> None:
    """A database that cannot be written at start is wrong configuration, said at once (and
    TieredCache.default() then runs on memory, see test_config.py), not a sqlite3 error."""
    DiskTier(tmp_path / "d").close()
    for f in (tmp_path / "d").rglob("cache.db*"):
        f.unlink()  # only the directories remain, and they cannot take a new database
    make_read_only(tmp_path / "d")
    with pytest.raises(sc.ConfigurationError, match="writable directory"):
        DiskTier(tmp_path / "d")


# -- (b) disk full ----------------------------------------------------------------------------

DISK_FULL = """
import json, logging, os, sys
sys.path.insert(0, sys.argv[2])
import stratacache as sc
from stratacache.tiers import MISS
from tests.selfcheck import payload, genuine

root = sys.argv[1]
warnings = []
class Count(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger("stratacache").addHandler(Count())

filler = os.path.join(root, "filler")
with open(filler, "wb") as f:   # leave ~1 MiB of the 4 MiB free
    f.write(os.urandom(3 * 1024 * 1024))
cache = sc.TieredCache.from_urls("memory://", f"disk://{root}/c", namespace="full")
disk_only = sc.TieredCache([cache.tiers[1]], namespace="full")
exceptions = []
keys = [f"k{i}" for i in range(40)]
for i, key in enumerate(keys):   # ~4 MiB of values into ~1 MiB of room
    value = payload(key, 0, 100_000 if i % 4 else 2_000)
    try:
        cache.set(key, value)
        assert cache.get(key) == value      # memory keeps serving
    except Exception as exc:
        exceptions.append(repr(exc))
full = cache.stats()["tiers"][1]
on_disk = disk_only.get_many(keys)
torn = [k for k, v in on_disk.items() if not genuine(k, v)]
os.unlink(filler)                  # space again
import time
deadline = time.monotonic() + 10
recovered = False
while time.monotonic() < deadline and not recovered:
    cache.set("after", payload("after", 1, 100_000))
    recovered = disk_only.get("after", MISS) == payload("after", 1, 100_000)
    time.sleep(0.02)
fresh = sc.TieredCache.from_urls(f"disk://{root}/c", namespace="full")
print(json.dumps({
    "errors": full["errors"], "writes": full["writes"], "corrupt": full["corrupt"],
    "stored": len(on_disk), "torn": torn, "exceptions": exceptions, "warnings": warnings,
    "recovered": recovered,
    "fresh_reads_it": fresh.get("after", MISS) == payload("after", 1, 100_000),
}))
"""


def _private_mount_prefix(unshare: str) -> list[str]:
    if os.geteuid() == 0:
        return [unshare, "--mount", "--propagation", "private"]
    return [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]


def test_a_full_disk_is_a_counted_miss_and_never_a_torn_entry(tmp_path: Path) -> None:
    unshare = require_binary("unshare")
    mount = require_binary("mount")
    root = tmp_path / "small"
    root.mkdir()
    shell = f'{mount} -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"'
    command = [
        *_private_mount_prefix(unshare), "sh", "-c", shell, "sh", str(root),
        sys.executable, "-c", DISK_FULL, str(root), str(ROOT),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "mount" in done.stderr and "Traceback" not in done.stderr:
        message = f"cannot mount a small tmpfs here: {done.stderr.strip()}"
        if REQUIRE_REDIS:
            pytest.fail(message)
        pytest.skip(message)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["exceptions"] == []
    assert out["errors"] >= 1 and out["writes"] >= 1, out  # some fitted, the rest were refused
    assert out["torn"] == [] and out["corrupt"] == 0, out
    assert 1 <= out["stored"] < 40, out
    assert len(out["warnings"]) == 1, out["warnings"]
    assert out["recovered"] and out["fresh_reads_it"], out


# -- (c) directory deleted under a running process --------------------------------------------


def test_a_deleted_directory_is_recreated_and_shared_again(tmp_path: Path) -> None:
    """Deleted: misses at once, no exception; within ~1 s the tier opens the directory
    afresh, so what it writes is seen by other processes again, and their clear() by it. A
    file in the directory's place: every call a counted miss, until it is gone."""
    where = tmp_path / "d"
    cache = sc.TieredCache.from_urls(
        "memory://", f"disk://{where}", namespace="rm", generation_refresh=0.1
    )
    disk_only = sc.TieredCache([cache.tiers[1]], namespace="rm")
    cache.set("small", "s")
    cache.set("big", payload("big", 0, 60_000))
    shutil.rmtree(where)

    assert cache.get("small") == "s"  # memory still has it
    assert disk_only.get("big", MISS) is MISS  # its file went with the directory
    cache.set("during", 1)  # no exception, whatever the disk did with it
    # Re-created by the next call after the tier's once-a-second check.
    poll(lambda: disk_only.get("small", MISS) is MISS and (where / "cache.db").exists(), 5)

    # Shared again: another process's view (a separate tier on the same path) and ours agree.
    other = sc.TieredCache.from_urls(f"disk://{where}", namespace="rm", generation_refresh=0.1)
    cache.set("after", payload("after", 0, 60_000))
    assert other.get("after") == payload("after", 0, 60_000)
    other.clear()
    poll(lambda: cache.get("after", MISS) is MISS, 5)  # memory entry dropped by the new gen

    # A file where the directory must be: misses, counted, never raised; then recovery.
    shutil.rmtree(where)
    where.write_bytes(b"not a directory")
    errors = cache.stats()["tiers"][1]["errors"]
    # Until the next check (at most ~1 s) the old, unlinked database still answers.
    poll(lambda: cache.set("blocked", 0) or cache.stats()["tiers"][1]["errors"] > errors, 5)
    for i in range(50):
        cache.set(f"blocked{i}", i)
        assert cache.get(f"blocked{i}") == i  # memory serves
        assert disk_only.get(f"blocked{i}", MISS) is MISS
    where.unlink()

    def stored() -> bool:
        cache.set("back", 2)
        return disk_only.get("back", MISS) == 2

    poll(stored)
    cache.close()
    other.close()


# -- (d) two processes, one SIGKILLed mid-write -----------------------------------------------

WRITER = """
import json, os, random, sys
sys.path.insert(0, sys.argv[2])
import stratacache as sc
from stratacache.tiers import MISS
from tests.selfcheck import payload, genuine

cache = sc.TieredCache.from_urls(f"disk://{sys.argv[1]}", namespace="kill")
stop = sys.argv[3] if len(sys.argv) > 3 else None
rng = random.Random(os.getpid())
reads = torn = 0
exceptions = []
print("ready", flush=True)
while stop is None or not os.path.exists(stop):
    key = f"k{rng.randrange(24)}"
    try:
        if rng.random() < 0.6:
            size = rng.choice([300, 5_000, 80_000, 250_000])
            cache.set(key, payload(key, rng.randrange(10**9), size))
        else:
            value = cache.get(key, MISS)
            if value is not MISS:
                reads += 1
                torn += not genuine(key, value)
    except Exception as exc:
        exceptions.append(repr(exc))
stats = cache.stats()["tiers"][0]
print(json.dumps({"reads": reads, "torn": torn, "exceptions": exceptions,
                  "errors": stats["errors"], "corrupt": stats["corrupt"]}), flush=True)
"""


def test_a_writer_killed_mid_write_never_leaves_a_torn_entry(tmp_path: Path) -> None:
    where = tmp_path / "d"
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    survivor = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(where), str(ROOT), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert survivor.stdout is not None and survivor.stdout.readline().strip() == "ready"
    rng = random.Random(13)
    kills = 0
    try:
        for _wave in range(2):  # three victims at a time: their start-up overlaps
            victims = [
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, str(where), str(ROOT)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
                for _ in range(3)
            ]
            for victim in victims:
                assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
            for victim in victims:
                time.sleep(rng.uniform(0.05, 0.3))  # somewhere in its stream of large writes
                victim.send_signal(signal.SIGKILL)
                victim.wait(30)
                victim.stdout.close()  # type: ignore[union-attr]
                kills += victim.returncode == -signal.SIGKILL
    finally:
        stop.touch()
        out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert kills == 6
    assert report["exceptions"] == []
    assert report["reads"] > 0 and report["torn"] == 0 and report["corrupt"] == 0, report

    fresh = sc.TieredCache.from_urls(f"disk://{where}", namespace="kill")
    keys = [f"k{i}" for i in range(24)]
    found = fresh.get_many(keys)
    assert found, "nothing survived at all"
    assert all(genuine(k, v) for k, v in found.items())
    for key in keys:  # one by one too: get() and get_many() read differently
        value = fresh.get(key, MISS)
        assert value is MISS or genuine(key, value)
    assert fresh.stats()["tiers"][0]["corrupt"] == 0
    fresh.close()
