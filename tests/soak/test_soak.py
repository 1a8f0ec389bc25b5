"""Soak (issue #13, item 9): benchmarks/soak.py in its own process, for a bounded time.

Mixed traffic through LangChain, LiteLLM and LlamaIndex (sync and async) on one memory + Redis
cache, with Redis SIGKILLed and restarted every 10 s. The process's resources must stay flat:
what the second half of the run reaches may not exceed what the first half reached by more
than a small allowance (a leak per call or per outage would: ~250 calls/s and 3 outages).
CI runs 40 s; ``STRATACACHE_SOAK_SECONDS=1800`` runs it longer on demand, with the same checks.
The figures are printed (``-s``) and their slopes are in docs/operations.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_procs import require_redis_binary

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("STRATACACHE_SOAK_SECONDS", "40"))

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(SECONDS * 3 + 240)]


def test_mixed_traffic_with_redis_restarts_stays_flat(tmp_path: Path) -> None:
    require_redis_binary()
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--seconds", str(SECONDS),
         "--restart-every", "10", "--json", str(out)],
        capture_output=True, text=True, timeout=SECONDS * 3 + 200, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    summary = json.loads(out.read_text())
    series = summary["series"]

    assert summary["exceptions"] == 0, summary["exception_examples"]
    assert summary["wrong_values"] == 0, summary["wrong_examples"]
    assert len(summary["restarts"]) >= 2
    assert summary["redis_serving"] is True  # the shared tier is used again after the outages
    assert summary["calls"] > summary["provider_requests"] > 0  # hits and misses both happened

    def grew(name: str) -> float:
        return float(series[name]["second_half_max"] - series[name]["first_half_max"])

    assert grew("fds") <= 8, series["fds"]  # no socket or file left open per call or outage
    assert grew("threads_ours") <= 2, (series["threads_ours"], summary["threads_at_end"])
    # connections on Redis: the pools reconnect after each restart instead of adding up
    assert series["redis_clients"]["last"] <= series["redis_clients"]["first_half_max"] + 4
    assert grew("rss_mb") <= 32, series["rss_mb"]
