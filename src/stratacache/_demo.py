"""``stratacache demo``: the user's own framework pipeline, cold and then warm, offline.

A newcomer arrives from LangChain, LiteLLM or LlamaIndex and wants to see *their* pipeline get
faster and cheaper, so the demo drives the real clients (``ChatOpenAI``, ``litellm.completion``,
a LlamaIndex query engine) with nothing but the documented one-liners installed. The provider is
the loopback OpenAI-compatible server of :mod:`stratacache.testing`, with realistic latency,
token usage and prices, so no key, network or server is needed and every number is measured.

Why child processes: the claim worth showing is that a *new process* starts warm (the memory
tier is empty, the disk tier answers). So each framework runs in its own child, once per phase
(``--phase cold|warm``), against one ``STRATACACHE_DIR`` in a temporary directory (never the
user's cache dir, and ``STRATACACHE_URLS`` is removed so no server tier is touched). The
provider runs in this (parent) process and frameworks run one after another, so the difference
of the provider's own counters around a child is exactly what that framework sent: the avoided
requests are confirmed by the provider, not by the cache's opinion of itself.

The workload is a RAG chain (exact repeats) and then a support chat whose users retype earlier
questions (served by the semantic layer from the first answer) and ask look-alike questions
that must never get a cached answer; each cached answer is checked against the one its
original question got.

Targets checked on the warm run, per framework: hit rate >= 90%, wall time -70%, cost -60%,
and no wrong answer in either run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratacache.testing import OpenAICompatServer

__all__ = ["FRAMEWORKS", "TARGETS", "main", "run_demo"]

FRAMEWORKS = ("langchain", "litellm", "llamaindex")
PHASES = ("cold", "warm")
#: warm-run targets, as fractions: hit rate, wall time saved, cost saved
TARGETS = {"hit_rate": 0.90, "time_saved": 0.70, "cost_saved": 0.60}

#: Provider behaviour: gpt-4o-mini-like latency (chat is slow, embeddings quicker) and prices
#: in USD per million input / output tokens.
CHAT_LATENCY = 0.30
EMBEDDING_LATENCY = 0.08
PRICES = (0.15, 0.60)
CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
#: how the child hands its measurements back: one stdout line with this prefix, so whatever a
#: framework prints on stdout cannot be mistaken for the result
RESULT_PREFIX = "STRATACACHE-DEMO-RESULT "

DOCS = (
    "stratacache keeps LLM answers in tiers: memory first, then disk, then an optional Redis.",
    "A read checks the fastest tier first; a hit in a slower tier is promoted to faster ones.",
    "Keys hash the model, the messages and every parameter that can change an answer.",
    "Timeouts, retries, credentials and request ids are left out of keys on purpose.",
    "A tier that fails, such as a Redis that is down, counts as a miss and is logged once.",
    "The circuit breaker skips a failing tier until it recovers, so calls stay fast.",
    "Embeddings are cached one text at a time, so a batch only sends the texts never seen.",
    "Retriever results are keyed by the query and by a fingerprint of the vector store.",
    "Streams are replayed chunk by chunk and stored only when they ran to their end.",
    "Rate limits count requests and tokens, and cache hits never use any of the budget.",
)
#: A support-bot style session: users repeat the popular questions.
QUESTIONS = (
    "How does stratacache choose which tier to read first?",
    "What happens when the Redis tier is down?",
    "How does stratacache choose which tier to read first?",
    "Which parameters are left out of cache keys?",
    "How are embeddings cached?",
    "What happens when the Redis tier is down?",
    "How does stratacache choose which tier to read first?",
    "Do cache hits count against rate limits?",
)
#: A support chat without retrieval (one system prompt, the user's question): where semantic
#: caching pays. Each question comes first as written, then as users retype it (case,
#: contractions, greetings, fillers, a plural, a typo), which the guarded default serves
#: from the first answer; one rewording in other words, which the default sends to the
#: provider (a ``verifier=`` or ``threshold=`` would serve it); and look-alike questions that
#: ask something else and must never get a cached answer. Each entry: (question, kind, the
#: question it rewords).
FAQ_SYSTEM = "You are the support assistant for stratacache. Answer in two sentences."
_CLEAR = "How do I clear the cache for one namespace?"
_TTL = "What is the default TTL of cached answers?"
_CLUSTER = "Does stratacache work with Redis Cluster?"
_INSTALL = "How do I install stratacache with LangChain support?"
_SHARE = "Is it safe to share one Redis between several apps?"
FAQ: tuple[tuple[str, str, str | None], ...] = (
    *((question, "new", None) for question in (_CLEAR, _TTL, _CLUSTER, _INSTALL, _SHARE)),
    ("hi, quick one: how do I clear the cache for one namespace", "paraphrase", _CLEAR),
    ("what's the default ttl of cached answers", "paraphrase", _TTL),
    ("Hello! Does stratacache work with Redis Cluster?", "paraphrase", _CLUSTER),
    ("How do I install stratacache with Langchain suport?", "paraphrase", _INSTALL),
    ("Hey team, is it safe to share one Redis between several apps?", "paraphrase", _SHARE),
    ("How can I clear the cache for one namespace, please?", "paraphrase", _CLEAR),
    ("does stratacache work with a redis cluster??", "paraphrase", _CLUSTER),
    ("What is the default TTL for cached answers?", "paraphrase", _TTL),
    ("Is it safe to share one Redis between several applications?", "other words", _SHARE),
    ("Does stratacache work with Redis Sentinel?", "look-alike", _CLUSTER),
    ("How do I clear the cache for every namespace?", "look-alike", _CLEAR),
    ("Is it not safe to share one Redis between several apps?", "look-alike", _SHARE),
)


# -- the child: one framework, one phase -------------------------------------------------------


def _langchain(base_url: str) -> dict[str, Any]:
    """A RAG chain: cached retriever over cached embeddings, then the chat model with
    ``set_llm_cache(LLMCache())``; exactly the one-liners of docs/langchain.md."""
    from langchain_core.documents import Document
    from langchain_core.globals import set_llm_cache
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    from stratacache.langchain import CachedEmbeddings, CachedRetriever, SemanticLLMCache

    def setup() -> Callable[[], dict[str, Any]]:
        llm_cache = SemanticLLMCache()
        set_llm_cache(llm_cache)
        # check_embedding_ctx_length=False: send text, not tiktoken ids (no tokenizer download)
        embeddings = CachedEmbeddings(
            OpenAIEmbeddings(
                model=EMBEDDING_MODEL,
                base_url=base_url,
                api_key="demo",  # type: ignore[arg-type]
                check_embedding_ctx_length=False,
            )
        )
        store = InMemoryVectorStore(embeddings)
        retriever = CachedRetriever(store.as_retriever(search_kwargs={"k": 2}))
        model = ChatOpenAI(
            model=CHAT_MODEL,
            base_url=base_url,
            api_key="demo",  # type: ignore[arg-type]
            temperature=0,
        )
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Answer from this context:\n{context}"), ("human", "{question}")]
        )

        def join(docs: list[Document]) -> str:
            return "\n".join(d.page_content for d in docs)

        chain = (
            {"context": retriever | join, "question": RunnablePassthrough()}
            | prompt
            | model
            | StrOutputParser()
        )
        support = (
            ChatPromptTemplate.from_messages([("system", FAQ_SYSTEM), ("human", "{question}")])
            | model
            | StrOutputParser()
        )

        def run() -> dict[str, Any]:
            store.add_documents(
                [Document(page_content=text, id=f"doc-{i}") for i, text in enumerate(DOCS)]
            )
            for question in QUESTIONS:
                chain.invoke(question)
            faq = _support_chat(lambda q: support.invoke({"question": q}), llm_cache.stats)
            return {
                "layers": {
                    "llm": _layer(llm_cache.stats()),
                    "embeddings": _layer(embeddings.stats()),
                    "retriever": _layer(retriever.stats()),
                },
                "faq": faq,
            }

        return run

    return _timed(setup)


def _litellm(base_url: str) -> dict[str, Any]:
    """A hand-rolled RAG loop on ``litellm.embedding`` + ``litellm.completion`` after
    ``stratacache.litellm.install()``, the way LiteLLM users write it."""
    import litellm

    import stratacache.litellm as scl

    def setup() -> Callable[[], dict[str, Any]]:
        installation = scl.install(semantic=True)
        return lambda: rag(installation)

    def rag(installation: scl.Installation) -> dict[str, Any]:
        common: dict[str, Any] = {"api_base": base_url, "api_key": "demo"}
        docs = litellm.embedding(model=f"openai/{EMBEDDING_MODEL}", input=list(DOCS), **common)
        vectors = [item["embedding"] for item in docs.data]
        for question in QUESTIONS:
            query = litellm.embedding(model=f"openai/{EMBEDDING_MODEL}", input=[question], **common)
            best = sorted(
                range(len(DOCS)), key=lambda i: -_dot(vectors[i], query.data[0]["embedding"])
            )[:2]
            context = "\n".join(DOCS[i] for i in best)
            litellm.completion(
                model=f"openai/{CHAT_MODEL}",
                messages=[
                    {"role": "system", "content": f"Answer from this context:\n{context}"},
                    {"role": "user", "content": question},
                ],
                temperature=0,
                **common,
            )

        def ask(question: str) -> str:
            response: Any = litellm.completion(
                model=f"openai/{CHAT_MODEL}",
                messages=[
                    {"role": "system", "content": FAQ_SYSTEM},
                    {"role": "user", "content": question},
                ],
                temperature=0,
                **common,
            )
            return str(response.choices[0].message.content)

        def counters() -> dict[str, Any]:
            semantic = installation.cache.stats().get("semantic_hits", 0)
            return {**_summed(installation.stats.stats()), "semantic_hits": semantic}

        faq = _support_chat(ask, counters)
        per_model = installation.stats.stats()  # {model: {hits, misses, tokens_saved, ...}}
        layers = {m: _layer(values) for m, values in per_model.items()}
        # per-model hits include the semantic ones; the cache says how many those were
        layers["semantic"] = {"semantic_hits": counters()["semantic_hits"]}
        return {"layers": layers, "faq": faq}

    return _timed(setup)


def _llamaindex(base_url: str) -> dict[str, Any]:
    """``Settings.llm``/``Settings.embed_model`` on the loopback, ``stratacache.llamaindex
    .install()``, then a ``VectorStoreIndex`` and its query engine."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.llms import ChatMessage
    from llama_index.core.utils import get_tokenizer
    from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]
    from llama_index.llms.openai import OpenAI

    import stratacache.llamaindex as scli

    def setup() -> Callable[[], dict[str, Any]]:
        Settings.llm = OpenAI(model=CHAT_MODEL, api_base=base_url, api_key="demo", temperature=0)
        Settings.embed_model = OpenAIEmbedding(
            model=EMBEDDING_MODEL, api_base=base_url, api_key="demo"
        )
        scli.install(semantic=True)
        # Settings resolves (and lazily imports) on first read, and the splitter loads its
        # tokenizer once per process: one-time costs, the same cold or warm
        llm: Any = Settings.llm
        embed: Any = Settings.embed_model
        get_tokenizer()("warm up")

        def run() -> dict[str, Any]:
            documents = [Document(text=text, id_=f"doc-{i}") for i, text in enumerate(DOCS)]
            index = VectorStoreIndex.from_documents(documents)
            engine = index.as_query_engine(similarity_top_k=2)
            for question in QUESTIONS:
                engine.query(question)

            def ask(question: str) -> str:
                messages = [
                    ChatMessage(role="system", content=FAQ_SYSTEM),
                    ChatMessage(role="user", content=question),
                ]
                return str(llm.chat(messages).message.content)

            faq = _support_chat(ask, llm.stats)
            return {
                "layers": {"llm": _layer(llm.stats()), "embeddings": _layer(embed.stats())},
                "faq": faq,
            }

        return run

    return _timed(setup)


def _summed(per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """LiteLLM's counters are per model; the support chat reads their sum."""
    total: dict[str, Any] = {}
    for values in per_model.values():
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def _support_chat(
    ask: Callable[[str], str], counters: Callable[[], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ask the :data:`FAQ` in order; per question, who answered it (the adapter's own
    counters around the call: ``provider``, ``exact`` or ``semantic``) and whether a cached
    answer was the right one: the answer its original question got in this session, never
    a cached answer for a look-alike."""
    answers: dict[str, str] = {}
    outcomes = []
    for question, kind, original in FAQ:
        before = counters()
        answer = ask(question)
        after = counters()

        def grew(name: str, a: dict[str, Any] = after, b: dict[str, Any] = before) -> bool:
            return bool(a.get(name, 0) > b.get(name, 0))

        served = "semantic" if grew("semantic_hits") else "exact" if grew("hits") else "provider"
        if kind == "new":
            answers[question] = answer
        # An exact hit is this very question's own answer; only a semantic hit borrows one.
        wrong = served == "semantic" and (
            kind == "look-alike" or answers.get(original or question) != answer
        )
        outcomes.append({"question": question, "kind": kind, "served": served, "wrong": wrong})
    return outcomes


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _layer(stats: dict[str, Any]) -> dict[str, Any]:
    """An adapter's own counters, numbers only (what the summary prints per layer)."""
    return {
        k: round(v, 6) if isinstance(v, float) else v
        for k, v in stats.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _timed(setup: Callable[[], Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    """Time the workload alone, ingestion and questions, and read the shared cache's counters
    by tier. Imports, client construction and installing the one-liners happen in ``setup``,
    outside the clock: they cost the same cold or warm, so they are not what a cache saves
    (the parent reports each child's whole process time too)."""
    from stratacache.integrations._shared import default_cache

    run = setup()
    start = time.perf_counter()
    workload = run()
    seconds = time.perf_counter() - start
    cache = default_cache().stats()
    tiers = {t["name"]: {"hits": t["hits"], "misses": t["misses"]} for t in cache["tiers"]}
    return {
        "seconds": seconds,
        "cache": {"hits": cache["hits"], "misses": cache["misses"], "tiers": tiers},
        **workload,
    }


_WORKLOADS: dict[str, Callable[[str], dict[str, Any]]] = {
    "langchain": _langchain,
    "litellm": _litellm,
    "llamaindex": _llamaindex,
}


def _child(framework: str, base_url: str) -> int:
    """One framework, one phase, in this process; the result goes to the parent on stdout."""
    result = _WORKLOADS[framework](base_url)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# -- the parent: provider, phases, summary -----------------------------------------------------


def _latency(path: str) -> float:
    """Per endpoint, as real providers differ: a completion is slower than an embedding."""
    return EMBEDDING_LATENCY if path.endswith("embeddings") else CHAT_LATENCY


def _child_env(workdir: Path) -> dict[str, str]:
    """The children's environment: the demo's own cache dir, the embedded default tiers, no
    auto-install, no network fetches by the frameworks."""
    env = dict(os.environ)
    for name in ("STRATACACHE_URLS", "STRATACACHE_AUTO", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        env.pop(name, None)
    env.update(
        STRATACACHE_DIR=str(workdir / "cache"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        OPENAI_API_KEY="demo",
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )
    return env


def _run_child(framework: str, phase: str, base_url: str, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "stratacache._demo", "--phase", phase]
    command += ["--framework", framework, "--base-url", base_url]
    # our own module under our own interpreter; the only inputs are the choices above
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)  # noqa: S603
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = (done.stderr or done.stdout)[-2000:]
    raise RuntimeError(f"{framework} {phase} run failed (exit {done.returncode}):\n{tail}")


def _counters(server: OpenAICompatServer) -> dict[str, Any]:
    """A snapshot of the provider's own counters, to diff around one child."""
    stats = server.stats
    return {
        "requests": dict(stats.requests),
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost_usd": stats.cost_usd,
    }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    requests = {
        k: after["requests"].get(k, 0) - before["requests"].get(k, 0)
        for k in ("chat", "embeddings")
    }
    return {
        "provider_requests": sum(requests.values()),
        "provider_requests_by_endpoint": requests,
        "tokens": (after["prompt_tokens"] - before["prompt_tokens"])
        + (after["completion_tokens"] - before["completion_tokens"]),
        "cost_usd": after["cost_usd"] - before["cost_usd"],
    }


def _saved(cold: float, warm: float) -> float:
    return 1.0 - warm / cold if cold > 0 else 0.0


def _answered(run: dict[str, Any]) -> tuple[int, int]:
    """``(answered by the cache, sent on)`` over the adapters' requests, every layer: LLM calls,
    embedded texts, retriever queries. The tiers' own counters would also count the semantic
    layer's internal reads (its journal, cached query vectors), which nobody requested."""
    layers = run["layers"].values()
    return sum(x.get("hits", 0) for x in layers), sum(x.get("misses", 0) for x in layers)


def _hit_rate(run: dict[str, Any]) -> float:
    hits, misses = _answered(run)
    return hits / (hits + misses) if hits + misses else 0.0


def _faq_summary(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The support chat in numbers: who answered each kind of question, and wrong answers."""
    kinds: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        served = kinds.setdefault(outcome["kind"], {"provider": 0, "exact": 0, "semantic": 0})
        served[outcome["served"]] += 1
    return {"served": kinds, "wrong": sum(1 for o in outcomes if o["wrong"])}


def _framework_summary(cold: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    hits, misses = warm["cache"]["hits"], warm["cache"]["misses"]
    hit_rate = _hit_rate(warm)
    faq = {"cold": _faq_summary(cold["faq"]), "warm": _faq_summary(warm["faq"])}
    ratios = {
        "hit_rate": hit_rate,
        "time_saved": _saved(cold["seconds"], warm["seconds"]),
        "cost_saved": _saved(cold["cost_usd"], warm["cost_usd"]),
        "requests_avoided": _saved(cold["provider_requests"], warm["provider_requests"]),
    }
    met = {name: ratios[name] >= target for name, target in TARGETS.items()}
    # A cache that answers a question with another question's answer fails the demo.
    met["no_wrong_answers"] = faq["cold"]["wrong"] + faq["warm"]["wrong"] == 0
    return {
        "cold": cold,
        "warm": warm,
        "hit_rate": round(hit_rate, 4),
        "support_chat": faq,
        "hit_rate_by_tier": {
            name: round(t["hits"] / (hits + misses), 4) if hits + misses else 0.0
            for name, t in warm["cache"]["tiers"].items()
        },
        "time_saved": round(ratios["time_saved"], 4),
        "cost_saved": round(ratios["cost_saved"], 4),
        "requests_avoided": round(ratios["requests_avoided"], 4),
        "tokens_saved": cold["tokens"] - warm["tokens"],
        "cost_saved_usd": round(cold["cost_usd"] - warm["cost_usd"], 8),
        "targets_met": met,
    }


def _dead_redis(workdir: Path) -> dict[str, Any]:
    """The existing demo's third point: a Redis tier that is down is a miss, logged once, and
    the circuit breaker keeps it from slowing every call."""
    import logging

    import stratacache as sc

    logging.getLogger("stratacache").setLevel(logging.CRITICAL)  # the summary reports it
    dead = "redis://127.0.0.1:1/0?timeout=100ms&connect_timeout=100ms"
    urls = ("memory://?max_bytes=16MB", f"disk://{workdir}/redis-part?max_bytes=64MB", dead)
    with sc.TieredCache.from_urls(*urls, namespace="demo-redis") as cache:
        start = time.perf_counter()
        for i in range(200):
            cache.get_or_set(f"n{i}", lambda: i * i)  # noqa: B023 - called at once
        took = time.perf_counter() - start
        redis = cache.stats()["tiers"][2]
    return {
        "calls": 200,
        "seconds": round(took, 4),
        "redis_errors": redis["errors"],
        "skipped_by_breaker": redis["skipped"],
    }


class _Progress:
    """rich's progress bar on a terminal, plain lines otherwise, nothing for ``--json``."""

    def __init__(self, mode: str, total: int) -> None:
        self.mode = mode
        self._bar: Any = None
        if mode == "rich":
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description:<28}"), BarColumn(), TimeElapsedColumn()
            )
            self._task = self._bar.add_task("starting", total=total)
            self._bar.start()

    def step(self, label: str) -> None:
        if self.mode == "rich":
            self._bar.update(self._task, description=label)
        elif self.mode == "plain":
            print(f"  running {label} ...", flush=True)

    def done(self, label: str, result: dict[str, Any]) -> None:
        if self.mode == "rich":
            self._bar.advance(self._task)
        elif self.mode == "plain":
            print(
                f"  {label:<18} {result['seconds']:6.2f} s, "
                f"{result['provider_requests']:3d} provider requests, "
                f"${result['cost_usd']:.6f}",
                flush=True,
            )

    def close(self) -> None:
        if self.mode == "rich":
            self._bar.stop()


def run_demo(workdir: Path, progress: str = "none") -> dict[str, Any]:
    """Run both phases of every framework in ``workdir`` and return the summary (no chart)."""
    from stratacache.testing import OpenAICompatServer

    env = _child_env(workdir)
    results: dict[str, dict[str, dict[str, Any]]] = {f: {} for f in FRAMEWORKS}
    bar = _Progress(progress, len(FRAMEWORKS) * len(PHASES))
    started = time.perf_counter()
    try:
        with OpenAICompatServer(latency=_latency, price_per_million=PRICES) as server:
            for phase in PHASES:
                for framework in FRAMEWORKS:
                    label = f"{framework} {phase}"
                    bar.step(label)
                    before, t0 = _counters(server), time.perf_counter()
                    child = _run_child(framework, phase, server.base_url, env)
                    process_seconds = time.perf_counter() - t0
                    result = {
                        "seconds": round(child["seconds"], 4),
                        "process_seconds": round(process_seconds, 3),
                        **_diff(before, _counters(server)),
                        "cache": child["cache"],
                        "layers": child["layers"],
                        "faq": child["faq"],
                    }
                    result["cost_usd"] = round(result["cost_usd"], 8)
                    results[framework][phase] = result
                    bar.done(label, result)
            provider_total = _counters(server)
    finally:
        bar.close()
    frameworks = {f: _framework_summary(r["cold"], r["warm"]) for f, r in results.items()}
    return {
        "frameworks": frameworks,
        "targets": TARGETS,
        "targets_met": all(all(f["targets_met"].values()) for f in frameworks.values()),
        "provider": {
            "chat_latency_s": CHAT_LATENCY,
            "embedding_latency_s": EMBEDDING_LATENCY,
            "price_per_million_usd": {"input": PRICES[0], "output": PRICES[1]},
            "requests": provider_total["requests"],
            "cost_usd": round(provider_total["cost_usd"], 8),
        },
        "dead_redis": _dead_redis(workdir),
        "workdir": str(workdir),
        "total_seconds": round(time.perf_counter() - started, 2),
    }


def write_chart(summary: dict[str, Any], path: Path) -> Path:
    """Cold vs warm wall time and provider cost per framework, side by side (Agg: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["frameworks"])
    data = summary["frameworks"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    xs = range(len(names))
    panels = (("seconds", "workload wall time (s)"), ("cost_usd", "provider cost (USD)"))
    for ax, (field, title) in zip(axes, panels, strict=True):
        cold = [data[n]["cold"][field] for n in names]
        warm = [data[n]["warm"][field] for n in names]
        ax.bar([x - width / 2 for x in xs], cold, width, label="cold", color="#d62728")
        ax.bar(
            [x + width / 2 for x in xs], warm, width, label="warm (new process)", color="#2ca02c"
        )
        ax.set_xticks(list(xs), names)
        ax.set_title(title)
        ax.legend()
    fig.suptitle("stratacache demo: the same workload, cold then warm")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


def _count_kind(kind: str) -> int:
    return sum(1 for _, k, _ in FAQ if k == kind)


def _pct(value: float) -> str:
    return f"{value * 100:5.1f}%"


def render(summary: dict[str, Any]) -> str:
    """The text summary: per framework, then per layer, then the dead-Redis check."""
    provider = summary["provider"]
    prices = provider["price_per_million_usd"]
    lines = [
        "stratacache demo: the same workload through each framework, cold, then as a new "
        "process (empty memory tier, warm disk tier)",
        f"loopback provider: chat {provider['chat_latency_s'] * 1000:.0f} ms, embeddings "
        f"{provider['embedding_latency_s'] * 1000:.0f} ms, ${prices['input']} / "
        f"${prices['output']} per 1M tokens in / out",
        f"workload: RAG over {len(DOCS)} documents, {len(QUESTIONS)} questions "
        f"({len(set(QUESTIONS))} distinct); then a support chat of {len(FAQ)} questions: "
        f"{_count_kind('new')} new, {_count_kind('paraphrase')} retyped (case, greetings, "
        f"typos), {_count_kind('other words')} in other words, {_count_kind('look-alike')} "
        "look-alikes that ask something else",
        "",
        f"{'framework':<11} {'phase':<5} {'time':>8} {'process':>8} {'requests':>9} "
        f"{'tokens':>7} {'cost USD':>10}  answered by the cache / sent on",
    ]
    for name, f in summary["frameworks"].items():
        for phase in PHASES:
            r = f[phase]
            hits, misses = _answered(r)
            lines.append(
                f"{name:<11} {phase:<5} {r['seconds']:7.2f}s {r['process_seconds']:7.2f}s "
                f"{r['provider_requests']:9d} "
                f"{r['tokens']:7d} {r['cost_usd']:10.6f}  {hits} / {misses}"
            )
    lines += [
        "(time: the workload, ingestion and questions; process: the whole child process,",
        " interpreter start, framework imports and client setup included; answered/sent on:",
        " LLM calls, embedded texts and retriever queries, by the adapters' own counters)",
    ]
    lines += ["", "support chat, cold run (who answered; semantic layer: the guarded default):"]
    for name, f in summary["frameworks"].items():
        served = f["support_chat"]["cold"]["served"]
        parts = [
            f"{kind} {' '.join(f'{who} {n}' for who, n in counts.items() if n)}"
            for kind, counts in served.items()
            if kind != "new"
        ]
        wrong = f["support_chat"]["cold"]["wrong"] + f["support_chat"]["warm"]["wrong"]
        lines.append(f"  {name:<11} {'; '.join(parts)}; wrong answers {wrong}")
    lines += [
        "(retyped questions are served from the first answer; a rewording in other words goes",
        " to the provider unless a verifier= or threshold= is configured; a look-alike never",
        " gets a cached answer)",
    ]
    lines += ["", "warm vs cold (targets: hit rate >= 90%, time -70%, cost -60%, no wrong answer):"]
    for name, f in summary["frameworks"].items():
        by_tier = ", ".join(f"{t} {_pct(v).strip()}" for t, v in f["hit_rate_by_tier"].items())
        ok = (
            "met"
            if all(f["targets_met"].values())
            else "NOT MET: " + ", ".join(k for k, v in f["targets_met"].items() if not v)
        )
        lines.append(
            f"  {name:<11} hit rate {_pct(f['hit_rate'])} (tier reads served: {by_tier}), "
            f"time -{_pct(f['time_saved']).strip()}"
            f", cost -{_pct(f['cost_saved']).strip()}, provider requests "
            f"-{_pct(f['requests_avoided']).strip()}, "
            f"{f['tokens_saved']} tokens / ${f['cost_saved_usd']:.6f} saved: {ok}"
        )
    lines += ["", "per layer, warm run (the adapters' own counters):"]
    for name, f in summary["frameworks"].items():
        for layer, stats in f["warm"]["layers"].items():
            shown = ", ".join(f"{k} {v}" for k, v in stats.items() if v)
            lines.append(f"  {name:<11} {layer:<22} {shown or 'no calls'}")
    redis = summary["dead_redis"]
    lines += [
        "",
        f"a Redis tier that is down: {redis['calls']} calls in {redis['seconds'] * 1000:.0f} ms, "
        f"{redis['redis_errors']} errors (logged once), {redis['skipped_by_breaker']} calls "
        "skipped by the circuit breaker; every call answered, none raised",
        "",
        f"targets {'met' if summary['targets_met'] else 'NOT met'}; total "
        f"{summary['total_seconds']:.1f} s; chart: {summary['chart']}",
    ]
    return "\n".join(lines)


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a missing parent package
        return False


def main(as_json: bool = False, chart: str | None = None) -> int:
    """Run the demo; 0 if every framework met the targets, 1 if not, 2 if it could not run."""
    # find_spec, not import: importing litellm here would fetch its cost map from the network
    needed = ("langchain_openai", "litellm", "llama_index.llms.openai", "matplotlib", "aiohttp")
    missing = [name for name in needed if not _importable(name)]
    if missing:
        print(
            "the demo needs the frameworks and the demo extra: "
            f"pip install 'stratacache[all,demo]' (missing: {', '.join(missing)})",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="stratacache-demo-"))
    if as_json:
        mode = "none"
    else:
        mode = "rich" if sys.stdout.isatty() else "plain"
        print(f"stratacache demo in {workdir} (offline; cold, then warm)", flush=True)
    try:
        summary = run_demo(workdir, progress=mode)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    chart_path = Path(chart) if chart else workdir / "demo.png"
    summary["chart"] = str(write_chart(summary, chart_path).resolve())
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print()
        print(render(summary))
    return 0 if summary["targets_met"] else 1


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stratacache._demo", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--chart", metavar="PATH", help="where to write the PNG chart")
    # internal: one framework, one phase, in this process (what the parent runs as a child)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        if not args.framework or not args.base_url:
            parser.error("--phase needs --framework and --base-url")
        return _child(args.framework, args.base_url)
    return main(as_json=args.json, chart=args.chart)


if __name__ == "__main__":
    sys.exit(_cli())
