"""Several real processes sharing one disk directory and one Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import stratacache as sc

WRITER = """
import sys, stratacache as sc
cache = sc.TieredCache.from_urls("memory://", *sys.argv[3:], namespace="mp")
base = int(sys.argv[1])
for i in range(base, base + int(sys.argv[2])):
    cache.set(f"k{i}", {"i": i, "by": base})
errors = sum(t["errors"] for t in cache.stats()["tiers"])
print(errors)
"""

READER = """
import sys, stratacache as sc
cache = sc.TieredCache.from_urls("memory://", *sys.argv[2:], namespace="mp")
found = cache.get_many([f"k{i}" for i in range(int(sys.argv[1]))])
print(len(found))
"""

LEADER = """
import sys, time, stratacache as sc
log = sys.argv[1]
cache = sc.TieredCache.from_urls("memory://", *sys.argv[2:], namespace="mp")

def compute():
    with open(log, "a") as f:
        f.write("computed\\n")
    time.sleep(0.5)
    return "shared"

print(cache.get_or_set("hot", compute))
"""

MANY_KEYS = """
import sys, stratacache as sc
cache = sc.TieredCache.from_urls("memory://", *sys.argv[2:], namespace="mp")
computed = 0

def compute(i):
    global computed
    computed += 1
    return i

for i in range(int(sys.argv[1])):
    assert cache.get_or_set(f"key-{i}", lambda: compute(i)) == i
print(computed)
"""


def run_all(scripts: list[list[str]]) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in scripts
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


@pytest.mark.slow
@pytest.mark.redis
def test_concurrent_writers_then_readers_share_disk_and_redis(
    tmp_path: Path, redis_url: str
) -> None:
    disk = f"disk://{tmp_path}/shared"
    errors = run_all([[WRITER, str(base), "150", disk, redis_url] for base in (0, 150, 300)])
    assert errors == ["0", "0", "0"]
    counts = run_all([[READER, "450", disk], [READER, "450", redis_url]])
    assert counts == ["450", "450"]
    in_process = sc.TieredCache.from_urls(disk, namespace="mp")
    assert in_process.get("k299") == {"i": 299, "by": 150}
    in_process.close()


@pytest.mark.slow
@pytest.mark.parametrize("shared", ["disk", pytest.param("redis", marks=pytest.mark.redis)])
def test_single_flight_across_processes(
    tmp_path: Path, shared: str, request: pytest.FixtureRequest
) -> None:
    url = f"disk://{tmp_path}/shared" if shared == "disk" else request.getfixturevalue("redis_url")
    log = tmp_path / "computations.log"
    results = run_all([[LEADER, str(log), url] for _ in range(4)])
    assert results == ["shared"] * 4
    assert log.read_text().count("computed") == 1


@pytest.mark.slow
@pytest.mark.redis
def test_many_keys_are_each_computed_once_across_processes(redis_url: str) -> None:
    """The lease holder re-reads after taking the lease: a process that missed just before
    another one stored the value and released must not compute it again."""
    counts = run_all([[MANY_KEYS, "300", redis_url] for _ in range(4)])
    assert sum(map(int, counts)) == 300
