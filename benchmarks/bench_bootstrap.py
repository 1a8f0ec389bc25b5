"""Start-up cost of ``stratacache run`` / ``STRATACACHE_AUTO=1``, side by side in one process.

    python benchmarks/bench_bootstrap.py [--runs 40]

Each row is the median wall time of a fresh interpreter running a tiny program (cases run
round robin, so load drift hits them alike):

* ``python -c pass``: plain; with the bootstrap on ``PYTHONPATH`` and ``STRATACACHE_AUTO=1``;
  with the bootstrap present but off (``STRATACACHE_AUTO=0``). The target: ≤20 ms added for a
  program that imports no framework.
* a LangChain program (a chat model answering once): plain; under the bootstrap (which
  installs ``LLMCache`` when the program imports ``langchain_core``); and plain with the
  one-liner written in the program. The bootstrap should cost what the one-liner costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from stratacache._launcher import BOOTSTRAP_DIR

#: A minimal LangChain program: a chat model answering once.
LC_APP = (
    "from langchain_core.language_models.fake_chat_models import FakeListChatModel; "
    "FakeListChatModel(responses=['a']).invoke('hi')"
)
ONE_LINER = (
    "from langchain_core.globals import set_llm_cache; "
    "from stratacache.langchain import LLMCache; set_llm_cache(LLMCache()); " + LC_APP
)
CASES = [
    ("python -c pass", "pass", "plain", {}),
    ("python -c pass", "pass", "bootstrap on", {"STRATACACHE_AUTO": "1"}),
    ("python -c pass", "pass", "bootstrap off", {"STRATACACHE_AUTO": "0"}),
    ("LangChain chat model", LC_APP, "plain", {}),
    ("LangChain chat model", LC_APP, "bootstrap on", {"STRATACACHE_AUTO": "1"}),
    ("LangChain chat model", ONE_LINER, "one-liner in the code", {}),
]


def _once(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRATACACHE_")}
    base.pop("PYTHONPATH", None)
    base["STRATACACHE_DIR"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sc-bench-boot")
    base["STRATACACHE_QUIET"] = "1"
    envs = []
    for _program, code, mode, extra in CASES:
        env = dict(base, **extra)
        if mode.startswith("bootstrap"):
            env["PYTHONPATH"] = BOOTSTRAP_DIR
        _once(code, env)  # warm the .pyc files
        envs.append((code, env))
    # Round robin: every case once per round, so that drift in the machine's load hits all alike.
    samples: list[list[float]] = [[] for _ in CASES]
    for _ in range(args.runs):
        for i, (code, env) in enumerate(envs):
            samples[i].append(_once(code, env))
    results = {
        (program, mode): statistics.median(samples[i]) * 1000
        for i, (program, _, mode, _) in enumerate(CASES)
    }
    print(f"{'program':<24} {'mode':<24} {'median ms':>10} {'vs plain':>10}")
    for program, _, mode, _ in CASES:
        value = results[program, mode]
        plain = results[program, "plain"]
        print(f"{program:<24} {mode:<24} {value:>10.1f} {value - plain:>+9.1f}ms")


if __name__ == "__main__":
    main()
