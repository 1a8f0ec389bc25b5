"""The ``stratacache`` command: ``run``, ``demo``, ``doctor``, ``stats``, ``clear``, ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def demo() -> int:
    """End to end, offline: a real OpenAI client against the loopback provider, cached by a
    memory + disk TieredCache, then a second "process" that starts cold, then a dead Redis."""
    try:
        import openai

        from stratacache.testing import OpenAICompatServer
    except ImportError as exc:
        print(f"the demo needs the optional clients: pip install 'stratacache[all]' ({exc})")
        return 1
    import stratacache as sc

    workdir = tempfile.mkdtemp(prefix="stratacache-demo-")
    urls = ("memory://?max_bytes=64MB", f"disk://{workdir}/disk?max_bytes=256MB")
    questions = ["What is a cache?", "Why do LLM apps need one?", "What is a cache?"]
    with OpenAICompatServer(latency=0.3) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0)

        def ask(cache: sc.TieredCache, question: str) -> tuple[str, float]:
            messages: list[Any] = [{"role": "user", "content": question}]
            key = sc.make_key(model="demo-model", messages=messages, temperature=0)

            def call_llm() -> dict[str, Any]:
                reply = client.chat.completions.create(
                    model="demo-model",
                    messages=messages,
                    temperature=0,
                )
                return reply.model_dump(mode="json")

            start = time.perf_counter()
            response = cache.get_or_set(key, call_llm)
            content = str(response["choices"][0]["message"]["content"])
            return content, time.perf_counter() - start

        print(f"loopback OpenAI-compatible provider at {server.base_url} (300 ms per call)")
        print(f"tiers: {' -> '.join(urls)}\n")
        print("1) first process: the third question repeats the first")
        with sc.TieredCache.from_urls(*urls, namespace="demo") as cache:
            for question in questions:
                answer, took = ask(cache, question)
                print(f"   {_ms(took)}  {question!r} -> {answer[:48]!r}")
        print(f"   provider requests so far: {server.stats.requests.get('chat', 0)}\n")

        print("2) a new process: empty memory tier, answers come from disk and are promoted")
        with sc.TieredCache.from_urls(*urls, namespace="demo") as cache:
            for question in questions[:2] * 2:
                _, took = ask(cache, question)
                print(f"   {_ms(took)}  {question!r}")
            tiers = cache.stats()["tiers"]
            print(
                f"   memory hits {tiers[0]['hits']}, disk hits {tiers[1]['hits']}, "
                f"provider requests still {server.stats.requests.get('chat', 0)}\n"
            )

        print("3) a Redis tier that is down: a miss, logged once, never an exception")
        dead = "redis://127.0.0.1:1/0?timeout=100ms&connect_timeout=100ms"
        with sc.TieredCache.from_urls(*urls, dead, namespace="demo") as cache:
            start = time.perf_counter()
            for i in range(200):
                cache.get_or_set(f"n{i}", lambda: i * i)  # noqa: B023 - called at once
            took = time.perf_counter() - start
            redis = cache.stats()["tiers"][2]
            print(
                f"   200 calls in {_ms(took)}: redis errors {redis['errors']}, "
                f"calls skipped by the circuit breaker {redis['skipped']}\n"
            )
            print("cache.stats():")
            print(json.dumps(cache.stats(), indent=2))
    print(f"\n(demo data in {workdir})")
    return 0


def doctor(as_json: bool) -> int:
    """Versions, tiers and one offline hit per installed framework; 1 if anything is broken."""
    from stratacache._doctor import run_checks

    versions, checks = run_checks()
    broken = [check.name for check in checks if check.ok is False]
    if as_json:
        report = {
            "versions": versions,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            "ok": not broken,
        }
        print(json.dumps(report, indent=2))
    else:
        print("versions:")
        for name, version in versions.items():
            print(f"  {name:<24} {version or 'not installed'}")
        print("checks:")
        for check in checks:
            mark = {True: "ok", False: "BROKEN", None: "--"}[check.ok]
            print(f"  {mark:<6} {check.name:<12} {check.detail}")
        print(f"\n{'broken: ' + ', '.join(broken) if broken else 'all checks passed'}")
    return 1 if broken else 0


def bench(quick: bool, as_json: bool) -> int:
    """Many concurrent callers (async tasks and threads) reading the configured cache, under
    its own namespace, which is cleared at the end; 1 if a call raised or returned a wrong
    value (spurious misses are a finding, not a failure)."""
    import stratacache as sc
    from stratacache import _bench

    def make() -> sc.TieredCache:
        return sc.TieredCache.default(namespace=_bench.NAMESPACE)

    with make() as probe:
        tiers = [{"name": t.name, "kind": t.kind} for t in probe.tiers]
    backend = "+".join(t["kind"] for t in tiers)
    sizes = _bench.Sizes.for_run(quick)

    def progress(row: _bench.Row) -> None:
        print(
            f"  {row.mode:<9} N={row.callers:<5} {row.throughput:>10.0f} calls/s, "
            f"misses {row.misses}/{row.calls}",
            file=sys.stderr,
            flush=True,
        )

    if not as_json:
        print(
            f"concurrency benchmark of the configured cache ({backend}), namespace "
            f"{_bench.NAMESPACE!r}, {'quick' if quick else 'full'} run",
            file=sys.stderr,
        )
    rows = _bench.run_cache(
        make, backend=backend, sizes=sizes, progress=None if as_json else progress
    )
    if as_json:
        report = {
            "namespace": _bench.NAMESPACE,
            "quick": quick,
            "tiers": tiers,
            "rows": [row.as_dict() for row in rows],
            "ratios": _bench.ratios(rows),
        }
        print(json.dumps(report, indent=2))
    else:
        print(_bench.render(rows))
    return 1 if any(row.raised or row.wrong for row in rows) else 0


def run(args: argparse.Namespace) -> int:
    """Exec the command with caching installed; returns only if that could not happen."""
    from stratacache._launcher import BOOTSTRAP_DIR, RunOptions, launch

    if args.print_path:
        print(BOOTSTRAP_DIR)
        return 0
    options = RunOptions(
        command=list(args.argv),
        tiers=list(args.tiers or []),
        namespace=args.namespace,
        semantic=args.semantic,
        rate_limits=list(args.rate_limit or []),
        rate_limit_redis=args.rate_limit_redis,
        quiet=args.quiet,
        strict=args.strict,
    )
    return launch(options)


def _add_run(sub: Any) -> None:
    cmd = sub.add_parser(
        "run",
        help="run an unmodified program with caching installed in every framework it imports",
        description=(
            "Run CMD (python app.py, python -m pkg, uvicorn app:app, pytest...) with caching "
            "installed in LangChain, LiteLLM and LlamaIndex as the program imports them, exactly "
            "as the one-liners would; nothing else changes. A broken configuration prints one "
            "error and runs CMD uncached (--strict: exit 2). See docs/run.md."
        ),
    )
    cmd.add_argument(
        "--tiers", nargs="+", action="extend", metavar="URL",
        help="tier URLs, fastest first (default: $STRATACACHE_URLS, else memory + disk)",
    )  # fmt: skip
    cmd.add_argument("--namespace", help="prefix of every namespace written (default: none)")
    cmd.add_argument(
        "--semantic", action="store_true", help="also serve paraphrases (semantic extra)"
    )
    cmd.add_argument(
        "--rate-limit", action="append", metavar="MODEL=RPM[:TPM]",
        help="client-side RPM (and TPM) limit for a model's calls, any framework (repeatable)",
    )  # fmt: skip
    cmd.add_argument(
        "--rate-limit-redis", metavar="URL", help="share the rate limits through this Redis"
    )
    cmd.add_argument("--quiet", action="store_true", help="no summary line at exit")
    cmd.add_argument(
        "--strict", action="store_true", help="a configuration error fails instead of running"
    )
    cmd.add_argument(
        "--print-path", action="store_true",
        help="print the bootstrap directory (for PYTHONPATH with STRATACACHE_AUTO=1) and exit",
    )  # fmt: skip
    cmd.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the program")


def _default_cache(namespace: str | None) -> Any:
    import stratacache as sc

    return sc.TieredCache.default(namespace=namespace or "default")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stratacache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    sub.add_parser("demo", help="offline end-to-end demo with a loopback LLM provider")
    doc = sub.add_parser(
        "doctor", help="versions, reachable tiers, one offline cache hit per installed framework"
    )
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    stats = sub.add_parser("stats", help="tiers and sizes of the default cache")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument("--namespace", default=None)
    clear = sub.add_parser(
        "clear", help="invalidate one namespace of the default cache (default: all of them)"
    )
    clear.add_argument(
        "--namespace", default=None, help="only this namespace (default: every namespace used)"
    )
    bench_cmd = sub.add_parser(
        "bench",
        help="concurrency benchmark of the default cache: 1-2000 async callers and threads",
    )
    bench_cmd.add_argument("--quick", action="store_true", help="fewer calls, about a second")
    bench_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    if args.command == "run":
        return run(args)
    if args.command == "demo":
        return demo()
    if args.command == "doctor":
        return doctor(args.json)
    if args.command == "bench":
        return bench(args.quick, args.json)
    cache = _default_cache(args.namespace)
    try:
        if args.command == "stats":
            return _stats(cache, args.json)
        elif args.command == "clear":
            return _clear(cache, args.namespace)
    finally:
        cache.close()
    return 0


def _stats(cache: Any, as_json: bool) -> int:
    """The configured tiers, and what caching did in the latest programs run with
    ``stratacache run`` (or ``STRATACACHE_AUTO=1``), live ones included."""
    from stratacache._auto import summarize_runs

    summary = cache.stats()
    runs = summarize_runs()
    if as_json:
        print(json.dumps({**summary, "runs": runs}, indent=2))
        return 0
    for tier in summary["tiers"]:
        print(f"{tier['name']:<10} {tier['kind']:<8} size={tier['size_bytes']}")
    if runs:
        print("\nprograms run with caching installed (newest first):")
    for entry in runs:
        state = "running" if entry["running"] else "ended"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["started"] or 0))
        command = " ".join(entry["argv"])[:60]
        processes = entry["processes"]
        print(f"  pid {entry['pid']} {state}, started {started}, {processes} proc.: {command}")
        print(f"    {entry['line']}")
    return 0


def _clear(cache: Any, namespace: str | None) -> int:
    """Clear ``namespace``, or every namespace stratacache used in the configured tiers: the
    adapters write under their own namespaces (``lc-llm``, ``myapp.li-emb``…), never under
    ``default``, so clearing one fixed name would leave their entries in place."""
    from stratacache.errors import StrataCacheError

    names = [namespace] if namespace else cache._namespaces()
    if not names:
        print("nothing to clear: no stratacache namespace in the configured tiers")
    failed = False
    for name in names:
        try:
            cache.clear(name)
        except StrataCacheError as exc:
            failed = True
            print(f"could not clear namespace {name!r}: {exc}", file=sys.stderr)
        else:
            print(f"cleared namespace {name!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
