"""The `stratacache` command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRATACACHE_DIR": str(env_dir)}
    env.pop("STRATACACHE_URLS", None)
    return subprocess.run(
        [sys.executable, "-m", "stratacache.cli", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_demo_serves_repeats_from_cache_and_survives_a_dead_redis(tmp_path: Path) -> None:
    out = run("demo", env_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "provider requests so far: 2" in out.stdout  # three questions, one repeated
    assert "memory hits 2, disk hits 2, provider requests still 2" in out.stdout
    assert "redis errors 3" in out.stdout


def test_stats_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stratacache as sc

    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STRATACACHE_URLS", raising=False)
    with sc.TieredCache.default(namespace="default") as cache:
        cache.set("k", "v")
    stats = run("stats", "--json", env_dir=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert '"kind": "disk"' in stats.stdout
    cleared = run("clear", env_dir=tmp_path)
    assert cleared.returncode == 0
    assert "cleared namespace 'default'" in cleared.stdout
    with sc.TieredCache.default(namespace="default") as cache:
        assert cache.get("k") is None
