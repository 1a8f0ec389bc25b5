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


def _doctor(env_dir: Path, prelude: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom stratacache.cli import main\nsys.exit(main(['doctor']))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
        env={**os.environ, "STRATACACHE_DIR": str(env_dir), "STRATACACHE_URLS": "", **env},
    )  # fmt: skip


NO_FASTAPI = "import sys; sys.modules['fastapi'] = None"


def _hit_path_broken_without_fastapi() -> bool:
    code = f"{NO_FASTAPI}\nfrom stratacache.integrations.litellm import _compat\n"
    code += "print(_compat.hit_path_broken())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_doctor_gets_one_offline_hit_through_every_framework(tmp_path: Path) -> None:
    out = run("doctor", env_dir=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("litellm", "langchain-core", "llama-index-core", "python"):
        assert f"  {name} " in out.stdout
    for line in ("ok     tier memory", "ok     tier disk", "ok     langchain",
                 "ok     litellm", "ok     llamaindex"):  # fmt: skip
        assert line in out.stdout
    assert "all checks passed" in out.stdout


def test_doctor_repairs_litellm_hits_without_fastapi(tmp_path: Path) -> None:
    out = _doctor(tmp_path, NO_FASTAPI)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = out.stdout.split("checks:")[1].splitlines()
    litellm_line = next(ln for ln in checks if " litellm " in ln)
    assert litellm_line.lstrip().startswith("ok")
    assert ("repaired" in litellm_line) is _hit_path_broken_without_fastapi()


def test_doctor_reports_a_broken_hit_path_and_exits_1(tmp_path: Path) -> None:
    # Without fastapi and with the repair disabled, the lock's litellm crashes on every hit:
    # exactly what a user who upgrades litellm would see, and what doctor must name.
    prelude = (
        f"{NO_FASTAPI}\n"
        "import stratacache.integrations.litellm.install as i, "
        "stratacache.integrations.litellm.backend as b\n"
        "i.apply_hit_patch = b.apply_hit_patch = lambda: False"
    )
    out = _doctor(tmp_path, prelude)
    if not _hit_path_broken_without_fastapi():  # a litellm without the bug has nothing to report
        assert out.returncode == 0, out.stdout
        return
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN litellm" in out.stdout
    assert "fastapi" in out.stdout
    assert "broken: litellm" in out.stdout


def test_doctor_names_a_tier_that_does_not_answer(tmp_path: Path) -> None:
    urls = "memory://,redis://:s3cret@127.0.0.1:1/0?connect_timeout=100ms"
    out = _doctor(tmp_path, STRATACACHE_URLS=urls)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN tier redis" in out.stdout
    assert "ok     tier memory" in out.stdout
    assert "s3cret" not in out.stdout + out.stderr


def test_clear_without_namespace_clears_every_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters never write under 'default': a bare `stratacache clear` must reach them."""
    import stratacache as sc

    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STRATACACHE_URLS", raising=False)
    names = ["lc-llm", "myapp.li-emb", "default"]
    with sc.TieredCache.default() as cache:
        for name in names:
            cache.with_namespace(name).set("k", name)
    only = run("clear", "--namespace", "lc-llm", env_dir=tmp_path)
    assert only.returncode == 0, only.stderr
    assert only.stdout.splitlines() == ["cleared namespace 'lc-llm'"]
    with sc.TieredCache.default(namespace="myapp.li-emb") as cache:
        assert cache.get("k") == "myapp.li-emb"
    everything = run("clear", env_dir=tmp_path)
    assert everything.returncode == 0, everything.stderr
    for name in names:
        assert f"cleared namespace {name!r}" in everything.stdout
        with sc.TieredCache.default(namespace=name) as cache:
            assert cache.get("k") is None


def test_bench_quick_json_has_no_spurious_misses_and_leaves_user_data_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stratacache bench` against the configured cache: every row of the JSON report is
    there, memory and disk never miss a stored key under concurrency, and only the bench's
    own namespace is written (and cleared)."""
    import json

    import stratacache as sc
    from stratacache import _bench

    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STRATACACHE_URLS", raising=False)
    with sc.TieredCache.default(namespace="default") as cache:
        cache.set("mine", "untouched")
    disk_only = {"STRATACACHE_URLS": f"disk://{tmp_path}/only-disk"}
    for extra_env, kinds in (({}, ["memory", "disk"]), (disk_only, ["disk"])):
        out = subprocess.run(
            [sys.executable, "-m", "stratacache.cli", "bench", "--quick", "--json",
             "--only", "concurrency"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "STRATACACHE_DIR": str(tmp_path), "STRATACACHE_URLS": "",
                 **extra_env},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["namespace"] == "stratacache-bench"
        assert [t["kind"] for t in report["tiers"]] == kinds
        cells = {(row["mode"], row["callers"]) for row in report["rows"]}
        assert cells == {
            *(("async", n) for n in (1, 50, 200, 2000)),
            *(("threads", n) for n in (1, 50, 200, 256)),
            ("aget_many", 1),
            ("get_many", 1),
        }
        for row in report["rows"]:
            assert row["backend"] == "+".join(kinds)
            assert row["calls"] >= row["callers"]
            assert row["throughput"] > 0 and row["p50_us"] <= row["p99_us"]
            assert (row["misses"], row["wrong"], row["raised"]) == (0, 0, 0), row
            assert (row["errors"], row["busy"], row["skipped"]) == (0, 0, 0), row
            assert [t["kind"] for t in row["tiers"]] == kinds
        names = {r["ratio"] for r in report["ratios"]}
        assert "2000 concurrent aget / one aget_many(2000)" in names
        assert "256 threads get / sequential get" in names
    with sc.TieredCache.default(namespace="default") as cache:
        assert cache.get("mine") == "untouched"
    with sc.TieredCache.default(namespace=_bench.NAMESPACE) as cache:
        assert cache.get(_bench.bench_key(0)) is None


@pytest.mark.slow
def test_bench_compares_with_the_frameworks_own_caches(tmp_path: Path) -> None:
    """`stratacache bench --only peers`: a row per comparison, both sides served the same
    cached answer, ratios printed; nothing written to the configured cache."""
    import json

    env = {**os.environ, "STRATACACHE_DIR": str(tmp_path / "conf"), "STRATACACHE_URLS": ""}
    out = subprocess.run(
        [sys.executable, "-m", "stratacache.cli", "bench", "--quick", "--json", "--only", "peers"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    measured = [row for row in report["peers"] if not row["skipped"]]
    assert {row["framework"] for row in measured} == {"langchain", "litellm"}
    for row in measured:
        assert row["peer_answer"] == row["stratacache_answer"], row
        assert row["ratio"] == pytest.approx(row["stratacache_us"] / row["peer_us"])
    assert "rows" not in report  # --only peers: no concurrency part
    assert not (tmp_path / "conf").exists() or not any((tmp_path / "conf").rglob("*.db"))
    text = subprocess.run(
        [sys.executable, "-m", "stratacache.cli", "bench", "--quick", "--only", "peers"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert "InMemoryCache" in text.stdout and "x" in text.stdout, text.stdout
