"""The pieces of ``stratacache run``: the post-import hook, the launcher's environment, the
configuration, the per-process reports and the LlamaIndex Settings hook.

The whole-program behaviour (real programs run twice against the loopback provider) is in
``test_run_programs.py``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stratacache import _auto
from stratacache._launcher import BOOTSTRAP_DIR, RunOptions, _uncached, build_env
from stratacache._stats import FRAMEWORK_FIELDS, GLOBAL_SAVINGS
from stratacache.errors import ConfigurationError

boot = importlib.import_module("stratacache._bootstrap.sitecustomize")


def _python(
    code: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRATACACHE_")}
    base["STRATACACHE_DIR"] = str(tmp_path / "cache")
    env = build_env(RunOptions(command=["python"]), base)
    env.update(extra)
    return env


# -- configuration --------------------------------------------------------------------------------


def test_rate_limit_specs() -> None:
    assert _auto.parse_rate_limits("gpt-4o-mini=500:200000, ollama/llama3:8b=60") == {
        "gpt-4o-mini": {"rpm": 500.0, "tpm": 200000.0},
        "ollama/llama3:8b": {"rpm": 60.0},
    }
    assert _auto.parse_rate_limits(["m=:1000"]) == {"m": {"tpm": 1000.0}}
    assert _auto.parse_rate_limits('{"m": {"rpm": 5, "tpm": 0}}') == {"m": {"rpm": 5.0}}


@pytest.mark.parametrize("spec", ["gpt-4o", "=500", "m=fast", "m=0", "m=-1:5", "m=:", '{"m": 5}'])
def test_a_bad_rate_limit_is_a_configuration_error(spec: str) -> None:
    with pytest.raises(ConfigurationError, match=r"rate limit|RATE_LIMITS"):
        _auto.parse_rate_limits(spec)


def test_config_from_env() -> None:
    config = _auto.AutoConfig.from_env(
        {"STRATACACHE_NAMESPACE": "app", "STRATACACHE_SEMANTIC": "1", "STRATACACHE_QUIET": "no"}
    )
    assert (config.namespace, config.semantic, config.quiet, config.strict) == (
        "app", True, False, False,
    )  # fmt: skip
    with pytest.raises(ConfigurationError):
        _auto.AutoConfig.from_env({"STRATACACHE_NAMESPACE": "bad namespace!"})


def test_check_opens_the_tiers_and_restores_the_environment(tmp_path: Path) -> None:
    before = dict(os.environ)
    env = {"STRATACACHE_URLS": f"memory://,disk://{tmp_path}/d", "STRATACACHE_NAMESPACE": "x"}
    assert _auto.check(env).namespace == "x"
    with pytest.raises(ConfigurationError, match="unknown tier scheme"):
        _auto.check({"STRATACACHE_URLS": "bogus://x"})
    assert dict(os.environ) == before


# -- the launcher's environment -------------------------------------------------------------------


def test_build_env_puts_the_bootstrap_first_once_and_maps_every_option() -> None:
    options = RunOptions(
        command=["python", "app.py"], tiers=["memory://", "redis://h:1/0"], namespace="ns",
        semantic=True, rate_limits=["m=5", "n=1:2"], rate_limit_redis="redis://h:1/1",
        quiet=True, strict=True,
    )  # fmt: skip
    base = {"PYTHONPATH": f"/a{os.pathsep}{BOOTSTRAP_DIR}", "STRATACACHE_RUN": "1", "X": "y"}
    env = build_env(options, base)
    assert env["PYTHONPATH"] == os.pathsep.join([BOOTSTRAP_DIR, "/a"])
    assert "STRATACACHE_RUN" not in env  # the program's first process reports, not our parent
    assert env["X"] == "y"
    assert {k: v for k, v in env.items() if k.startswith("STRATACACHE_")} == {
        "STRATACACHE_AUTO": "1",
        "STRATACACHE_URLS": "memory://,redis://h:1/0",
        "STRATACACHE_NAMESPACE": "ns",
        "STRATACACHE_SEMANTIC": "1",
        "STRATACACHE_RATE_LIMITS": "m=5,n=1:2",
        "STRATACACHE_RATE_LIMIT_REDIS": "redis://h:1/1",
        "STRATACACHE_QUIET": "1",
        "STRATACACHE_STRICT": "1",
    }
    off = _uncached(dict(env))
    assert off["STRATACACHE_AUTO"] == "0"
    assert off["PYTHONPATH"] == "/a"


# -- the post-import hook -------------------------------------------------------------------------


@pytest.fixture
def fake_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A package ``fakefw_<n>`` on sys.path and a hook that records what it fired for."""
    name = f"fakefw_{tmp_path.name[-8:].replace('-', '_')}"
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import os\nif os.environ.get('FAKEFW_FAIL'): 1 / 0\nDONE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fired: list[tuple[str, bool]] = []
    monkeypatch.setattr(boot, "_fire", lambda n: fired.append((n, sys.modules[n].DONE)))
    finder = boot.PostImportFinder([name])
    sys.meta_path.insert(0, finder)
    yield name, fired
    sys.meta_path.remove(finder)
    sys.modules.pop(name, None)


def test_the_hook_fires_once_after_the_module_has_fully_executed(fake_framework: Any) -> None:
    name, fired = fake_framework
    module = importlib.import_module(name)
    assert fired == [(name, True)]
    assert type(module.__loader__).__name__ == "SourceFileLoader"  # the real loader, unwrapped
    assert "exec_module" not in vars(module.__loader__)  # the patch removed itself
    del sys.modules[name]
    importlib.import_module(name)
    assert fired == [(name, True)]


def test_a_failed_import_fires_nothing_and_a_later_success_fires(
    fake_framework: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, fired = fake_framework
    monkeypatch.setenv("FAKEFW_FAIL", "1")
    with pytest.raises(ZeroDivisionError):
        importlib.import_module(name)
    assert fired == []
    monkeypatch.delenv("FAKEFW_FAIL")
    importlib.import_module(name)
    assert fired == [(name, True)]


def test_bootstrap_chains_to_the_sitecustomize_it_shadows(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['CHAINED'] = 'yes'\n")
    env = _env(tmp_path)
    env["PYTHONPATH"] += os.pathsep + str(other)
    out = _python(
        """
        import os, sys
        hooked = "PostImportFinder" in [type(f).__name__ for f in sys.meta_path]
        print(os.environ.get("CHAINED"), hooked, "stratacache" in sys.modules)
        """,
        env,
    )
    assert out.stdout.split() == ["yes", "True", "False"], out.stderr


def test_off_unless_stratacache_auto_is_set(tmp_path: Path) -> None:
    for value in ("0", "off", ""):
        out = _python(
            "import sys; print(any(type(f).__name__ == 'PostImportFinder' for f in sys.meta_path))",
            _env(tmp_path, STRATACACHE_AUTO=value),
        )
        assert out.stdout.strip() == "False", (value, out.stderr)


def test_strict_mode_fails_the_import_and_lenient_mode_runs_uncached(tmp_path: Path) -> None:
    code = """
        import langchain_core.globals as g
        print("cache:", type(g.get_llm_cache()).__name__)
    """
    lenient = _python(code, _env(tmp_path, STRATACACHE_NAMESPACE="not a namespace!"))
    assert lenient.returncode == 0
    assert "cache: NoneType" in lenient.stdout
    errors = [line for line in lenient.stderr.splitlines() if "runs uncached" in line]
    assert errors == [
        "stratacache: the program runs uncached: ConfigurationError: invalid namespace "
        "'not a namespace!': use 1-64 characters from letters, digits, '_', '-', '.'"
    ], lenient.stderr
    strict = _python(
        code, _env(tmp_path, STRATACACHE_NAMESPACE="not a namespace!", STRATACACHE_STRICT="1")
    )
    assert strict.returncode != 0
    assert "ConfigurationError" in strict.stderr


def test_what_each_framework_gets_is_what_the_one_liners_install(tmp_path: Path) -> None:
    out = _python(
        """
        import litellm, langchain_core.globals as g
        import stratacache.litellm as scl
        inst = scl.current()
        lc = g.get_llm_cache()
        print(type(lc).__name__, lc.cache.namespace, litellm.cache is inst.cache)
        print(inst.rate_limit is not None)
        """,
        _env(tmp_path, STRATACACHE_RATE_LIMITS="openai/gpt-4o-mini=600:100000",
             LITELLM_LOCAL_MODEL_COST_MAP="True"),
    )  # fmt: skip
    lines = out.stdout.splitlines()
    # --rate-limit: LLMCache plus a grant per miss (test_langchain_limits.py), same namespace
    assert lines[0] == "RateLimitedLLMCache lc-llm True", out.stderr
    assert lines[1] == "True"


def test_a_namespace_prefixes_every_framework(tmp_path: Path) -> None:
    out = _python(
        "import langchain_core.globals as g; print(g.get_llm_cache().cache.namespace)",
        _env(tmp_path, STRATACACHE_NAMESPACE="myapp"),
    )
    assert out.stdout.strip() == "myapp.lc-llm", out.stderr


# -- reporting ------------------------------------------------------------------------------------


def _counts(**values: float) -> dict[str, float]:
    return {k: values.get(k, 0) for k in FRAMEWORK_FIELDS}


def test_the_summary_line() -> None:
    line = _auto.format_line(
        {
            "litellm": _counts(
                hits=1, misses=2, calls_avoided=1, tokens_saved=7, cost_saved_usd=3e-6
            ),
            "langchain": _counts(),
            "llamaindex": _counts(embedding_hits=5, embedding_misses=1, calls_avoided=2),
        },
        ["langchain", "litellm", "llamaindex"],
    )
    assert line == (
        "stratacache: litellm 1 hit / 2 misses, 1 provider call avoided, 7 tokens saved, "
        "$0.000003 saved; llamaindex 0 hits / 0 misses, embeddings 5/6 texts cached, "
        "2 provider calls avoided, 0 tokens saved"
    )
    assert _auto.format_line({}, ["litellm"]) == (
        "stratacache: caching installed in litellm; no call went through the cache"
    )


def test_savings_are_counted_per_framework() -> None:
    before = GLOBAL_SAVINGS.by_framework().get("test-fw", _counts())
    GLOBAL_SAVINGS.record_hit(tokens=10, cost=0.5, framework="test-fw")
    GLOBAL_SAVINGS.record_miss("test-fw")
    GLOBAL_SAVINGS.record_embeddings("test-fw", 3, 0)
    GLOBAL_SAVINGS.record_embeddings("test-fw", 3, 1)
    after = GLOBAL_SAVINGS.by_framework()["test-fw"]
    delta = {k: after[k] - before.get(k, 0) for k in FRAMEWORK_FIELDS}
    assert delta == _counts(
        hits=1, misses=1, calls_avoided=2, tokens_saved=10, cost_saved_usd=0.5,
        embedding_hits=6, embedding_misses=1,
    )  # fmt: skip


def test_reports_stay_whole_json_and_runs_add_their_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STRATACACHE_RUN", str(os.getpid()))
    rt = _auto._Runtime()
    rt.installed["litellm"] = object()
    GLOBAL_SAVINGS.record_hit(tokens=12345, framework="litellm")
    rt.write()
    rt.write(ended=True)  # shorter content ("true" < "false"): padded, still valid JSON
    path = tmp_path / "runs" / f"{os.getpid()}.json"
    mine = json.loads(path.read_text())
    assert mine["ended"] is True
    # a child of this run, a dead process that never said it ended, and garbage
    child = {**mine, "pid": 2**22 + 7, "started": mine["started"] + 1, "ended": False}
    child["frameworks"] = {"litellm": _counts(hits=2, calls_avoided=2)}
    (tmp_path / "runs" / "child.json").write_text(json.dumps(child))
    (tmp_path / "runs" / "junk.json").write_text("{not json")
    (runs,) = _auto.summarize_runs(tmp_path / "runs")
    assert runs["pid"] == os.getpid()
    assert runs["processes"] == 2
    assert runs["running"] is False  # the child's pid is not alive
    assert runs["frameworks"]["litellm"]["hits"] == mine["frameworks"]["litellm"]["hits"] + 2
    assert runs["line"].startswith("stratacache: ")
    assert "litellm " in runs["line"]


# -- LlamaIndex: Settings ----------------------------------------------------------------------


@pytest.fixture
def settings_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    from llama_index.core import Settings

    from stratacache.integrations.llamaindex import install as li
    from stratacache.tiered import TieredCache

    cls = type(Settings)
    saved = {n: cls.__dict__[n] for n in ("llm", "embed_model")}
    slots = (Settings._llm, Settings._embed_model)
    cache = TieredCache.from_urls("memory://", namespace="auto-test")
    monkeypatch.setattr(_auto._Runtime, "cache", lambda self: cache)
    rt = _auto._Runtime()
    rt.config = _auto.AutoConfig()
    rt.config_error = None
    _auto._install_llamaindex(rt)
    yield Settings
    li.uninstall()
    for name, prop in saved.items():
        setattr(cls, name, prop)
    Settings._llm, Settings._embed_model = slots
    cache.close()


def test_llamaindex_models_set_after_import_are_cached(settings_hook: Any) -> None:
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    from stratacache.llamaindex import CachedEmbedding, CachedLLM

    settings = settings_hook
    llm = MockLLM(max_tokens=8)
    settings.llm = llm
    wrapped = settings.llm
    assert isinstance(wrapped, CachedLLM)
    assert wrapped.inner is llm
    assert settings.llm is wrapped  # read again: not wrapped twice
    settings.embed_model = MockEmbedding(embed_dim=4)
    assert isinstance(settings.embed_model, CachedEmbedding)
    assert isinstance(settings.llm, CachedLLM)
    first = settings.llm.complete("hello").text
    assert settings.llm.complete("hello").text == first
    assert settings.llm.stats()["hits"] >= 1


def test_llamaindex_model_that_cannot_be_cached_is_declined_once(
    settings_hook: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_index.core.embeddings import MockEmbedding

    from stratacache.integrations.llamaindex import install as li
    from stratacache.integrations.llamaindex.embedding import CachedEmbedding

    class Refuse(CachedEmbedding):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ConfigurationError("no model identity")

    monkeypatch.setattr(li, "CachedEmbedding", Refuse)
    settings = settings_hook
    model = MockEmbedding(embed_dim=4)
    settings.embed_model = model
    with caplog.at_level(logging.WARNING, logger="stratacache"):
        for _ in range(5):
            assert settings.embed_model is model
    assert sum("not cached" in r.getMessage() for r in caplog.records) == 1


def test_a_rate_limit_reaches_the_llamaindex_model_unless_it_has_its_own() -> None:
    from llama_index.core.llms import MockLLM

    from stratacache.integrations.llamaindex.ratelimit import RateLimiter

    config = _auto.AutoConfig(rate_limits={"*": {"rpm": 600.0, "tpm": 100000.0}})
    own = MockLLM()
    mine = RateLimiter(rpm=5)
    own.rate_limiter = mine
    _auto._limit_llamaindex(config, own)
    assert own.rate_limiter is mine  # the program's own limiter is kept
    llm = MockLLM()
    _auto._limit_llamaindex(config, llm)
    assert isinstance(llm.rate_limiter, RateLimiter)
    assert llm.rate_limiter.limiter.rpm == 600.0


# -- the command line -----------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stratacache.cli", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_run_prints_the_bootstrap_path_and_fails_like_a_shell() -> None:
    out = _cli("run", "--print-path")
    assert out.stdout.strip() == BOOTSTRAP_DIR
    assert (Path(BOOTSTRAP_DIR) / "sitecustomize.py").is_file()
    missing = _cli("run", "--", "no-such-command-here")
    assert missing.returncode == 127
    assert "command not found: no-such-command-here" in missing.stderr
    empty = _cli("run")
    assert empty.returncode == 2
    assert "no command" in empty.stderr


def test_run_passes_the_exit_status_and_arguments_through(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATACACHE_")}
    env["STRATACACHE_DIR"] = str(tmp_path)
    code = "import os, sys; print(os.environ['STRATACACHE_AUTO'], sys.argv[1:]); sys.exit(7)"
    out = _cli("run", "--quiet", "--", sys.executable, "-c", code, "a", "--b", env=env)
    assert out.returncode == 7
    assert out.stdout.strip() == "1 ['a', '--b']"


def test_sigusr1_prints_the_summary_while_the_program_runs(tmp_path: Path) -> None:
    out = _python(
        """
        import os, signal, time
        from langchain_core.language_models.fake_chat_models import FakeListChatModel
        model = FakeListChatModel(responses=["a", "b"])
        model.invoke("q"); model.invoke("q")
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1.0)  # the reporter thread prints it
        print("still running")
        """,
        _env(tmp_path, STRATACACHE_QUIET="1"),  # quiet: no line at exit, so this one is USR1's
    )
    assert out.stdout.strip() == "still running", out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("stratacache:")]
    assert lines == [
        "stratacache: langchain 1 hit / 1 miss, 1 provider call avoided, 0 tokens saved"
    ], out.stderr


def test_sigusr1_before_any_framework_says_so(tmp_path: Path) -> None:
    out = _python(
        "import os, signal, time; os.kill(os.getpid(), signal.SIGUSR1); time.sleep(0.2)",
        _env(tmp_path),
    )
    assert out.returncode == 0
    assert "stratacache: no LangChain, LiteLLM or LlamaIndex import yet" in out.stderr
