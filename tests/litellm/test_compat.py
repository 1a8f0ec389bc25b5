"""litellm#42195: cache hits crash where litellm's hit path cannot import the proxy.

The suite's own environment hides fastapi (see ``conftest.py``), as a plain
``pip install 'stratacache[litellm]'`` has it. The subprocess tests below run a fresh
interpreter both ways: without fastapi (hits crash unless the repair is applied) and with it
(litellm works by itself, so nothing may be patched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from typing import Any

from stratacache.integrations.litellm import _compat

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    if sys.argv[2] == "no-fastapi":
        sys.modules["fastapi"] = None  # a plain `pip install litellm`: no proxy extras
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import warnings; warnings.simplefilter("ignore")
    import asyncio
    import litellm
    from stratacache.integrations.litellm import _compat
    broken = _compat.hit_path_broken()
    if sys.argv[1] == "patch":
        import stratacache as sc, stratacache.litellm as scl
        scl.install(sc.TieredCache.from_urls("memory://"))
    else:
        litellm.cache = litellm.Cache()  # litellm's own in-memory cache
    msgs = [{"role": "user", "content": "hi"}]
    outcome = {"broken": broken, "patched": _compat.hit_patch_applied(), "hits": []}

    async def ahit():
        await litellm.acompletion(model="gpt-4o-mini", messages=msgs, mock_response="x",
                                  temperature=0.5)
        await asyncio.sleep(0.2)  # litellm writes async results from a background task
        return await litellm.acompletion(model="gpt-4o-mini", messages=msgs,
                                         mock_response="y", temperature=0.5)

    litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="first")
    for call in (
        lambda: litellm.completion(model="gpt-4o-mini", messages=msgs, mock_response="second"),
        lambda: asyncio.run(ahit()),
    ):
        try:
            hit = call()
            outcome["hits"].append(
                [hit._hidden_params.get("cache_hit"), hit.choices[0].message.content]
            )
        except ImportError as exc:
            outcome["hits"].append(["crash", exc.name])
    outcome["fastapi_imported"] = sys.modules.get("fastapi") is not None
    if sys.argv[1] == "patch":
        scl.uninstall()
        outcome["restored"] = not _compat.hit_patch_applied()
    print(json.dumps(outcome))
    """
)


def _run(mode: str, fastapi: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, fastapi],
        capture_output=True, text=True, timeout=180, env={**os.environ},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_without_fastapi_hits_crash_unless_repaired() -> None:
    plain = _run("plain", "no-fastapi")
    if plain["broken"]:  # the litellm in the lock is such a release (1.110.2)
        assert plain["hits"] == [["crash", "fastapi"], ["crash", "fastapi"]]
    else:  # a litellm whose hit path needs no proxy import
        assert plain["hits"] == [[True, "first"], [True, "x"]]
    repaired = _run("patch", "no-fastapi")
    assert repaired["hits"] == [[True, "first"], [True, "x"]]
    assert repaired["patched"] is repaired["broken"] is plain["broken"]
    assert repaired["fastapi_imported"] is False  # and the proxy was not dragged in
    assert repaired["restored"] is True


def test_with_fastapi_nothing_is_patched() -> None:
    installed = _run("patch", "with-fastapi")
    assert installed["broken"] is False, "with the proxy extras litellm's hit path must work"
    assert installed["patched"] is False
    assert installed["hits"] == [[True, "first"], [True, "x"]]


def test_repair_is_applied_exactly_when_needed_and_reverted() -> None:
    # This environment hides fastapi: with the lock's litellm (1.110.2) the hit path is broken.
    import litellm.caching.caching_handler as handler

    own = handler._should_defer_streaming_cache_hit_callbacks
    broken = _compat.hit_path_broken()
    try:
        assert _compat.apply_hit_patch() is broken
        assert _compat.hit_patch_applied() is broken
        assert not _compat.hit_path_broken()
        assert _compat.apply_hit_patch() is False  # idempotent
    finally:
        _compat.revert_hit_patch()
    assert handler._should_defer_streaming_cache_hit_callbacks is own


def test_repaired_function_answers_like_the_original() -> None:
    import litellm.caching.caching_handler as handler
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    repaired = _compat._tolerant_copy(handler._should_defer_streaming_cache_hit_callbacks)
    stream = object.__new__(CustomStreamWrapper)
    assert repaired(cached_result=stream) is True
    assert repaired(cached_result={"choices": []}) is False


def _module_with_hook(source: str) -> types.ModuleType:
    module = types.ModuleType("fake_handler")
    exec(textwrap.dedent(source), module.__dict__)
    return module


def test_repair_follows_behaviour_not_module_names() -> None:
    # Wherever the missing import moves, the rebuilt hook treats just that class as absent,
    # keeps every importable one, and reads module globals live.
    module = _module_with_hook(
        """
        class Local: ...
        def hook(*, cached_result):
            from collections import OrderedDict
            from nowhere_to_be_found.deeply.moved import Replay
            return isinstance(cached_result, (Local, OrderedDict, Replay))
        """
    )
    assert _compat.hit_path_broken(module.hook)
    repaired = _compat._tolerant_copy(module.hook)
    assert not _compat.hit_path_broken(repaired)
    from collections import OrderedDict

    assert repaired(cached_result=OrderedDict()) is True
    assert repaired(cached_result=module.Local()) is True
    assert repaired(cached_result=object()) is False

    class Newer: ...

    module.Local = Newer  # a rebinding in the module is seen, not a stale copy
    assert repaired(cached_result=Newer()) is True


def test_other_failures_are_not_repaired() -> None:
    module = _module_with_hook(
        """
        def hook(*, cached_result):
            raise RuntimeError("not an import problem")
        """
    )
    assert not _compat.hit_path_broken(module.hook)
