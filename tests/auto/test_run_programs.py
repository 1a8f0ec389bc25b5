"""`stratacache run` on the unmodified programs in examples/auto, end to end.

Each program runs in its own process under the launcher, twice, against the loopback
provider, with a private ``STRATACACHE_DIR``. What the provider itself counted decides whether a
call was cached; what the program printed must not change with caching.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stratacache.testing import OpenAICompatServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "auto"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAICompatServer]:
    """One provider for the module: tests compare its counters before and after each run."""
    with OpenAICompatServer(latency=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where the programs' processes keep bytecode when the environment forbids writing it
    next to the sources (PYTHONDONTWRITEBYTECODE): importing the frameworks from source in
    every process would cost seconds per run. None: the environment's own bytecode is used."""
    if not sys.dont_write_bytecode:
        return None
    return tmp_path_factory.mktemp("pycache")


@dataclass
class Run:
    pid: int
    returncode: int
    stdout: str
    stderr: str
    requests: Counter[str]
    """What the provider received during this run, per endpoint."""

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def summaries(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("stratacache:")]

    def hits(self) -> dict[str, tuple[int, int]]:
        """``{framework: (hits, misses)}`` from the one summary line."""
        (line,) = self.summaries()
        found = re.findall(r"(langchain|litellm|llamaindex) (\d+) hits? / (\d+) miss", line)
        return {name: (int(hits), int(misses)) for name, hits, misses in found}

    def report(self, cache_dir: Path) -> dict[str, Any]:
        """The root process' report file (``stratacache run`` execs: same pid)."""
        report: dict[str, Any] = json.loads((cache_dir / "runs" / f"{self.pid}.json").read_text())
        return report

    def __str__(self) -> str:
        return (
            f"rc={self.returncode} requests={dict(self.requests)}\n--- stdout\n{self.stdout}"
            f"\n--- stderr\n{self.stderr}"
        )


def _env(server: OpenAICompatServer, cache_dir: Path, pycache: Path | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRATACACHE_", "OPENAI_"))
    }
    env.update(
        STRATACACHE_DIR=str(cache_dir),
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="test",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm must not fetch its cost map
    )
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run(
    server: OpenAICompatServer,
    cache_dir: Path,
    pycache: Path | None,
    program: Sequence[str],
    *options: str,
    launcher: bool = True,
    raw: bool = False,
    timeout: float = 90,
) -> Run:
    """``stratacache run [options] -- python program...``, or the program alone; ``raw``: the
    command is ``program`` itself."""
    command = list(program) if raw else [sys.executable, *program]
    if launcher:
        command = [sys.executable, "-m", "stratacache.cli", "run", *options, "--", *command]
    before = Counter(server.stats.requests)
    proc = subprocess.Popen(
        command,
        env=_env(server, cache_dir, pycache),
        cwd=cache_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command} timed out\n{stdout}\n{stderr}")
    after = Counter(server.stats.requests)
    return Run(proc.pid, proc.returncode, stdout, stderr, after - before)


def example(name: str) -> list[str]:
    return [str(EXAMPLES / name)]


def twice(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None, name: str
) -> tuple[Run, Run]:
    """Two runs of one program under the launcher, sharing one cache directory."""
    cache_dir = tmp_path / "cache"
    first = run(server, cache_dir, pycache, example(name))
    assert first.returncode == 0, first
    second = run(server, cache_dir, pycache, example(name))
    assert second.returncode == 0, second
    assert second.stdout == first.stdout, "caching changed what the program printed"
    assert first.total > 0, first
    assert second.total == 0, f"the second run reached the provider\n{second}"
    assert "Traceback" not in first.stderr + second.stderr, f"{first}\n{second}"
    return first, second


def assert_all_hits(second: Run, cache_dir: Path, frameworks: dict[str, int]) -> None:
    """The second run's summary line and report file: every call a hit, none a miss."""
    assert len(second.summaries()) == 1, second
    summary = second.hits()
    report = second.report(cache_dir)
    assert report["pid"] == second.pid and report["ended"] is True, report
    for framework, calls in frameworks.items():
        hits, misses = summary.get(framework, (0, 0))
        assert hits >= calls and misses == 0, f"{framework}: {second.summaries()}"
        counted = report["frameworks"][framework]
        assert counted["hits"] >= calls and counted["misses"] == 0, report
        assert counted["calls_avoided"] >= calls and counted["tokens_saved"] > 0, report


# -- one program per framework -------------------------------------------------------------------


def test_langchain_program(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    first, second = twice(server, tmp_path, pycache, "langchain_app.py")
    assert first.requests == Counter(chat=4), first  # five questions, one asked twice
    assert first.stdout.count("A: ") == 5
    assert_all_hits(second, tmp_path / "cache", {"langchain": 5})

    # `stratacache stats --json` shows the same from another shell.
    env = _env(server, tmp_path / "cache", pycache)
    out = subprocess.run(
        [sys.executable, "-m", "stratacache.cli", "stats", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    runs = {entry["pid"]: entry for entry in json.loads(out.stdout)["runs"]}
    assert {first.pid, second.pid} <= runs.keys(), runs
    assert runs[second.pid]["frameworks"]["langchain"]["hits"] >= 5
    assert runs[first.pid]["frameworks"]["langchain"]["misses"] == 4


def test_litellm_program(server: OpenAICompatServer, tmp_path: Path, pycache: Path | None) -> None:
    first, second = twice(server, tmp_path, pycache, "litellm_app.py")
    assert first.requests == Counter(chat=2, embeddings=1), first
    assert_all_hits(second, tmp_path / "cache", {"litellm": 3})


def test_llamaindex_program(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    first, second = twice(server, tmp_path, pycache, "llamaindex_app.py")
    # One batch for the documents, one per distinct question; the repeat is served.
    assert first.requests == Counter(chat=2, embeddings=3), first
    assert_all_hits(second, tmp_path / "cache", {"llamaindex": 3})


def test_program_using_all_three(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    first, second = twice(server, tmp_path, pycache, "all_three.py")
    # LangChain 3, LiteLLM 3, LlamaIndex 1 chat; one document batch and one query embedding.
    assert first.requests == Counter(chat=7, embeddings=2), first
    assert_all_hits(second, tmp_path / "cache", {"langchain": 3, "litellm": 3, "llamaindex": 2})


def test_multiprocessing_program(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    cache_dir = tmp_path / "cache"
    first = run(server, cache_dir, pycache, example("multiprocessing_app.py"))
    assert first.returncode == 0, first
    asked = [body["messages"][-1]["content"] for body in server.stats.bodies[-first.total :]]
    # Both pools reached the provider (a repeat may race its first ask in the other worker).
    assert any(q.startswith("spawn worker") for q in asked), asked
    assert any(q.startswith("fork worker") for q in asked), asked
    reports_before = set((cache_dir / "runs").glob("*.json"))

    second = run(server, cache_dir, pycache, example("multiprocessing_app.py"))
    assert second.returncode == 0, second
    assert second.stdout == first.stdout
    assert second.total == 0, f"a worker reached the provider\n{second}"

    # Every worker reported its own hits: LiteLLM in the spawned ones, LangChain in the forked.
    workers = [
        json.loads(path.read_text())
        for path in set((cache_dir / "runs").glob("*.json")) - reports_before
        if path.stem != str(second.pid)
    ]
    assert workers and all(w["root"] == second.pid for w in workers), workers
    totals: Counter[str] = Counter()
    for worker in workers:
        for framework, counted in worker["frameworks"].items():
            totals[framework] += counted["hits"]
            assert counted["misses"] == 0, worker
    assert totals == Counter(litellm=3, langchain=3), workers
    # The parent imported LangChain (its installation is what the fork workers inherit) but
    # made no call itself.
    assert second.report(cache_dir)["frameworks"]["langchain"]["hits"] == 0
    # The root's summary line adds its workers' counts to its own.
    assert len(second.summaries()) == 1, second
    assert second.hits() == {"langchain": (3, 0), "litellm": (3, 0)}, second


# -- the launcher and the one-liners share entries -----------------------------------------------


def test_one_liner_and_launcher_share_entries(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    cache_dir = tmp_path / "cache"
    plain = run(server, cache_dir, pycache, example("oneliner_langchain_app.py"), launcher=False)
    assert plain.returncode == 0, plain
    assert plain.requests == Counter(chat=4), plain
    launched = run(server, cache_dir, pycache, example("langchain_app.py"))
    assert launched.returncode == 0, launched
    assert launched.total == 0, f"the launcher missed the one-liner's entries\n{launched}"
    assert launched.stdout == plain.stdout


# -- what the bootstrap must not do --------------------------------------------------------------

PROBE = """
import os, sys
here = os.path.dirname(sys.modules["sitecustomize"].__file__)
print("bootstrap", here == os.environ["PYTHONPATH"].split(os.pathsep)[0])
print("auto", os.environ.get("STRATACACHE_AUTO"))
names = ("stratacache", "litellm", "langchain_core", "langchain_openai", "llama_index", "openai")
print("imported", sorted(m for m in sys.modules if m.split(".")[0] in names))
"""


def test_a_program_without_frameworks_imports_none(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    out = run(server, tmp_path / "cache", pycache, ["-c", PROBE])
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == ["bootstrap True", "auto 1", "imported []"], out
    assert out.total == 0
    assert "Traceback" not in out.stderr, out
    # That is what keeps the start-up cost at ~2 ms (benchmarks/bench_bootstrap.py): tests
    # assert behaviour, the benchmark measures time.


# -- options and failure modes -------------------------------------------------------------------


def test_quiet_prints_no_summary(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    out = run(server, tmp_path / "cache", pycache, example("langchain_app.py"), "--quiet")
    assert out.returncode == 0, out
    assert out.requests == Counter(chat=4), out  # still cached: the repeat was served
    assert out.stderr == "", out


def test_broken_configuration_runs_the_program_uncached(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    cache_dir = tmp_path / "cache"
    out = run(server, cache_dir, pycache, example("langchain_app.py"), "--tiers", "bogus://x")
    assert out.returncode == 0, out
    assert out.requests == Counter(chat=5), out  # uncached: the repeat reached the provider
    answers = [line for line in out.stdout.splitlines() if line.startswith("A: ")]
    assert len(answers) == 5, out
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, f"expected one error line\n{out}"
    assert errors[0].startswith("stratacache") and "bogus" in errors[0], out
    assert "uncached" in errors[0], out

    strict = run(
        server, cache_dir, pycache, example("langchain_app.py"), "--tiers", "bogus://x", "--strict"
    )
    assert strict.returncode != 0, strict
    assert "bogus" in strict.stderr, strict


# -- the same without the launcher: STRATACACHE_AUTO=1 and the bootstrap on PYTHONPATH ------------


def bootstrap_env(*settings: str) -> list[str]:
    """``env PYTHONPATH=<bootstrap> STRATACACHE_AUTO=1 ...``, as a container would set it."""
    path = subprocess.run(
        [sys.executable, "-m", "stratacache.cli", "run", "--print-path"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert os.path.isfile(os.path.join(path, "sitecustomize.py")), path
    return ["env", f"PYTHONPATH={path}", "STRATACACHE_AUTO=1", *settings, sys.executable]


def test_environment_activation_without_the_launcher(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    cache_dir = tmp_path / "cache"
    command = [*bootstrap_env(), str(EXAMPLES / "langchain_app.py")]
    first = run(server, cache_dir, pycache, command, launcher=False, raw=True)
    assert first.returncode == 0, first
    assert first.requests == Counter(chat=4), first
    second = run(server, cache_dir, pycache, command, launcher=False, raw=True)
    assert second.returncode == 0, second
    assert second.total == 0, second
    assert second.stdout == first.stdout
    assert second.hits() == {"langchain": (5, 0)}, second


def test_broken_environment_configuration_prints_one_error(
    server: OpenAICompatServer, tmp_path: Path, pycache: Path | None
) -> None:
    """Without the launcher nothing checks the configuration up front: the first framework
    import finds it broken. Still one line, however many frameworks the program imports."""
    command = [*bootstrap_env("STRATACACHE_URLS=bogus://x"), str(EXAMPLES / "all_three.py")]
    out = run(server, tmp_path / "cache", pycache, command, launcher=False, raw=True)
    assert out.returncode == 0, out
    assert out.requests == Counter(chat=8, embeddings=4), out  # nothing cached
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bogus" in lines[0], f"expected one error line\n{out}"
