"""``stratacache doctor``: what a user runs first when cache hits stop working after an upgrade.

The frameworks release weekly and change internals that a cache hit depends on, so every check
here exercises behaviour rather than reading version numbers: each configured tier gets a real
write, read and delete, and each installed framework gets one real cache miss and one hit,
through the same public hook a user's pipeline uses, against the loopback OpenAI-compatible
provider (or the framework's own fake model where the optional client is missing). A check
that raises is reported with its reason, never as a traceback, and makes the exit code 1.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import secrets
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "run_checks"]

#: Distributions whose versions decide whether a hit works; printed whether installed or not.
PACKAGES = (
    "stratacache", "langchain-core", "langchain-openai", "litellm", "llama-index-core",
    "llama-index-llms-openai", "openai", "pydantic", "redis", "diskcache", "numpy", "hnswlib",
    "fastapi",
)  # fmt: skip
QUESTION = "stratacache doctor: is this answer served from the cache?"


@dataclass
class Check:
    """One line of the report: ``ok`` False means broken (exit code 1); None means skipped."""

    name: str
    ok: bool | None
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _reason(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _tier_checks(cache: Any) -> Iterator[Check]:
    key, data = f"scdoctor:{secrets.token_hex(8)}", b"stratacache doctor probe"
    for tier in cache.tiers:
        start = time.perf_counter()
        try:
            tier.set(key, data, 60.0)
            got = tier.get(key)
            tier.delete(key)
        except Exception as exc:
            yield Check(f"tier {tier.name}", False, f"{tier!r} does not answer: {_reason(exc)}")
            continue
        took = (time.perf_counter() - start) * 1000
        if got != data:
            yield Check(f"tier {tier.name}", False, f"{tier!r} returned {got!r} for its probe")
        else:
            yield Check(f"tier {tier.name}", True, f"{tier!r} answers ({took:.1f} ms round trip)")


@contextmanager
def _provider() -> Iterator[Any]:
    """The loopback provider, or None where the ``testing`` extra (aiohttp) is missing."""
    try:
        from stratacache.testing import OpenAICompatServer
    except ImportError:
        yield None
        return
    with OpenAICompatServer(latency=0.0) as server:
        yield server


def _requests(server: Any) -> int:
    return int(server.stats.requests.get("chat", 0)) if server is not None else 0


def _hits(cache: Any) -> int:
    return sum(int(tier["hits"]) for tier in cache.stats()["tiers"])


def _hit_check(name: str, cache: Any, server: Any, ask: Callable[[], str], how: str) -> Check:
    """Ask twice: the second answer must equal the first, come from the cache and reach no
    provider."""
    try:
        first = ask()
        before, hits = _requests(server), _hits(cache)
        second = ask()
    except Exception as exc:
        return Check(name, False, f"cache hit failed through {how}: {_reason(exc)}")
    if second != first or _hits(cache) == hits:
        return Check(name, False, f"the repeat through {how} was not served from the cache")
    if server is not None and _requests(server) != before:
        return Check(name, False, f"the repeat through {how} reached the provider")
    return Check(name, True, f"miss then hit through {how}")


def _langchain(cache: Any, server: Any) -> Check:
    from stratacache.langchain import LLMCache

    llm_cache = LLMCache(cache)
    if server is not None and _installed("langchain_openai"):
        from langchain_openai import ChatOpenAI

        model: Any = ChatOpenAI(
            model="gpt-4o-mini", base_url=server.base_url, api_key="doctor",  # type: ignore[arg-type]
            max_retries=0, cache=llm_cache,
        )  # fmt: skip
        how = "ChatOpenAI(cache=LLMCache()) and the loopback provider"
    else:
        from langchain_core.language_models import FakeListChatModel

        model = FakeListChatModel(responses=["one", "two"], cache=llm_cache)
        how = "FakeListChatModel(cache=LLMCache())"
    return _hit_check("langchain", cache, server, lambda: str(model.invoke(QUESTION).content), how)


def _litellm(cache: Any, server: Any) -> Check:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost-map fetch
    import litellm

    import stratacache.litellm as scl
    from stratacache.integrations.litellm import _compat

    previous = scl.current()
    if previous is not None:
        return Check("litellm", None, "skipped: stratacache.litellm.install() is active here")
    scl.install(cache)
    try:
        where: dict[str, Any] = (
            {"api_base": server.base_url, "api_key": "doctor"}
            if server is not None
            else {"mock_response": "one"}
        )
        check = _hit_check(
            "litellm",
            cache,
            server,
            lambda: str(
                litellm.completion(
                    model="openai/gpt-4o-mini",
                    messages=[{"role": "user", "content": QUESTION}],
                    **where,
                )
                .choices[0]
                .message.content
            ),
            "stratacache.litellm.install() and litellm.completion",
        )
        if _compat.hit_patch_applied():
            check.detail += (
                "; litellm's hit path could not import what it needs (litellm#42195): repaired"
            )
        return check
    finally:
        scl.uninstall()


def _llamaindex(cache: Any, server: Any) -> Check:
    from llama_index.core.llms import ChatMessage

    from stratacache.llamaindex import CachedLLM

    if server is not None and _installed("llama_index.llms.openai"):
        from llama_index.llms.openai import OpenAI

        inner: Any = OpenAI(
            model="gpt-4o-mini", api_base=server.base_url, api_key="doctor", max_retries=0
        )
        how = "CachedLLM(OpenAI()) and the loopback provider"
    else:
        from llama_index.core.llms import MockLLM

        inner = MockLLM()
        how = "CachedLLM(MockLLM())"
    llm = CachedLLM(inner, cache=cache)
    message = [ChatMessage(role="user", content=QUESTION)]
    return _hit_check(
        "llamaindex", cache, server, lambda: str(llm.chat(message).message.content), how
    )


FRAMEWORKS: dict[str, tuple[str, Callable[[Any, Any], Check]]] = {
    "langchain": ("langchain_core", _langchain),
    "litellm": ("litellm", _litellm),
    "llamaindex": ("llama_index.core", _llamaindex),
}


def run_checks() -> tuple[dict[str, Any], list[Check]]:
    """Versions, then tiers of the configured default cache, then one hit per framework."""
    import stratacache as sc

    versions: dict[str, Any] = {"python": platform.python_version()}
    versions.update({dist: _version(dist) for dist in PACKAGES})
    checks: list[Check] = []
    try:
        configured = sc.TieredCache.default(namespace="doctor")
    except sc.StrataCacheError as exc:
        return versions, [Check("configuration", False, str(exc))]
    with configured:
        checks.extend(_tier_checks(configured))
        # The framework checks use a private in-memory cache: the user's tiers are not written,
        # and a tier that is down (reported above) does not hide a framework that is broken.
        with sc.TieredCache.from_urls("memory://", namespace="doctor") as cache, _provider() as srv:
            for name, (module, check) in FRAMEWORKS.items():
                if not _installed(module):
                    checks.append(Check(name, None, f"not installed ({module})"))
                    continue
                try:
                    checks.append(check(cache, srv))
                except Exception as exc:
                    checks.append(Check(name, False, f"set-up failed: {_reason(exc)}"))
    return versions, checks
