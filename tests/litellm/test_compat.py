"""litellm#42195: cache hits crash without fastapi; the workaround is narrow and checked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from stratacache.integrations.litellm import _compat

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.modules["fastapi"] = None  # a plain `pip install litellm`: no proxy extras importable
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import warnings; warnings.simplefilter("ignore")
    import litellm
    PATCH = sys.argv[1] == "patch"
    if PATCH:
        import stratacache as sc, stratacache.litellm as scl
        scl.install(sc.TieredCache.from_urls("memory://"))
    else:
        litellm.cache = litellm.Cache()  # litellm's own in-memory cache
    msgs = [{"role": "user", "content": "hi"}]
    litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="first")
    try:
        hit = litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="second")
        print("hit", hit._hidden_params.get("cache_hit"), hit.choices[0].message.content)
    except ModuleNotFoundError as exc:
        print("crash", exc.name)
    print(sys.modules.get("fastapi") is not None)
    """
)


def _run(mode: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    return out.stdout.split("\n")


def test_hits_crash_without_the_workaround() -> None:
    # A litellm outside the verified range must fail here, so the workaround gets re-checked.
    assert _compat.AFFECTED[0] <= _compat.litellm_version() < _compat.AFFECTED[1]
    assert _run("plain")[0] == "crash fastapi"


def test_hits_work_without_fastapi_after_install() -> None:
    lines = _run("patch")
    assert lines[0] == "hit True first"
    assert lines[1] == "False"  # and the proxy was not dragged in


def test_patch_is_version_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "litellm_version", lambda: (1, 110, 0))
    assert _compat.apply_hit_patch() is False
    monkeypatch.setattr(_compat, "litellm_version", lambda: (1, 105, 9))
    assert _compat.apply_hit_patch() is False
    assert not _compat.hit_patch_applied()


def test_patch_is_skipped_when_the_import_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "_proxy_import_fails", lambda: False)
    assert _compat.apply_hit_patch() is False
    assert not _compat.hit_patch_applied()


def test_patched_function_answers_like_the_original() -> None:
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    stream = object.__new__(CustomStreamWrapper)
    assert _compat._safe_should_defer(cached_result=stream) is True
    assert _compat._safe_should_defer(cached_result={"choices": []}) is False
