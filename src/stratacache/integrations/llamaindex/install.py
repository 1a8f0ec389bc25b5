"""``install()`` / ``uninstall()``: caching for ``Settings.llm`` and ``Settings.embed_model``.

LlamaIndex components capture ``Settings.llm`` / ``Settings.embed_model`` when they are built,
so the default mode (replace the Settings entries with wrappers) reaches everything built
*after* ``install()``. ``in_place=True`` patches the existing model objects instead, which
also reaches engines built before, and keeps provider-specific overrides.

Settings are read through their private slots on purpose: the public getters instantiate a
default OpenAI model (and demand an API key) when nothing was set; an unset slot is left unset.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llama_index.core import Settings

from stratacache.errors import ConfigurationError
from stratacache.integrations._shared import Tenant, check_tenant
from stratacache.integrations.llamaindex.embedding import (
    CachedEmbedding,
    patch_embedding,
    unpatch_embedding,
)
from stratacache.integrations.llamaindex.llm import CachedLLM, patch_llm, unpatch_llm
from stratacache.semantic import SemanticCache
from stratacache.tiered import TieredCache

__all__ = ["install", "installed", "uninstall"]

logger = logging.getLogger("stratacache")
_lock = threading.Lock()
_state: dict[str, Any] | None = None


def install(
    cache: TieredCache | None = None,
    *,
    in_place: bool = False,
    llm: bool = True,
    embed_model: bool = True,
    ttl: float | str | None = None,
    semantic: bool | SemanticCache = False,
    tenant: Tenant = None,
) -> dict[str, Any]:
    """Cache ``Settings.llm`` and ``Settings.embed_model``; returns what was done.

    :param cache: the tiers; default: the process-wide ``TieredCache.default()``.
    :param in_place: patch the current model objects instead of replacing them.
    :param llm: / :param embed_model: which of the two to cache.
    :param ttl: lifetime of new LLM and embedding entries.
    :param semantic: the LLM's semantic layer (see :class:`CachedLLM`): True or a ready
        :class:`~stratacache.semantic.SemanticCache`.
    :param tenant: who may share the LLM's answers, exact and semantic (see
        :class:`CachedLLM`). Embeddings are shared by all tenants: a vector is a function of
        the model and the text alone, never another tenant's answer.

    Calling it again first undoes the previous install. An unset Settings slot stays unset
    (``"llm": None`` in the result): set the model, then call ``install()``.
    """
    global _state
    if not isinstance(semantic, bool | SemanticCache):
        raise ConfigurationError(
            f"semantic must be True, False or a SemanticCache, got {type(semantic).__name__}"
        )
    check_tenant(tenant)
    with _lock:
        _uninstall_locked()
        done: dict[str, Any] = {"llm": None, "embed_model": None, "in_place": in_place}
        state: dict[str, Any] = {"in_place": in_place, "llm": None, "embed_model": None}
        current_llm = Settings._llm
        if llm and current_llm is not None and not isinstance(current_llm, CachedLLM):
            if in_place:
                patch_llm(current_llm, cache, ttl=ttl, semantic=semantic, tenant=tenant)
            else:
                Settings._llm = CachedLLM(
                    current_llm, cache, ttl=ttl, semantic=semantic, tenant=tenant
                )
            state["llm"] = current_llm
            done["llm"] = type(current_llm).__name__
        current_emb = Settings._embed_model
        if embed_model and current_emb is not None and not isinstance(current_emb, CachedEmbedding):
            try:
                if in_place:
                    patch_embedding(current_emb, cache, ttl=ttl)
                else:
                    Settings._embed_model = CachedEmbedding(current_emb, cache, ttl=ttl)
            except ConfigurationError as exc:
                # install() also runs inside unmodified programs (stratacache run): a model we
                # cannot key stays uncached rather than stopping the program.
                logger.warning("stratacache.llamaindex.install: embed_model not cached: %s", exc)
            else:
                state["embed_model"] = current_emb
                done["embed_model"] = type(current_emb).__name__
        if done["llm"] is None and done["embed_model"] is None:
            logger.info("stratacache.llamaindex.install: no Settings.llm/embed_model to cache")
        _state = state
        return done


def _uninstall_locked() -> bool:
    global _state
    state, _state = _state, None
    if state is None:
        return False
    if state["llm"] is not None:
        if state["in_place"]:
            unpatch_llm(state["llm"])
        elif isinstance(Settings._llm, CachedLLM) and Settings._llm.inner is state["llm"]:
            Settings._llm = state["llm"]
    if state["embed_model"] is not None:
        if state["in_place"]:
            unpatch_embedding(state["embed_model"])
        elif (
            isinstance(Settings._embed_model, CachedEmbedding)
            and Settings._embed_model.inner is state["embed_model"]
        ):
            Settings._embed_model = state["embed_model"]
    return True


def uninstall() -> bool:
    """Undo :func:`install`; Settings entries the user replaced since are left alone."""
    with _lock:
        return _uninstall_locked()


def installed() -> bool:
    return _state is not None
