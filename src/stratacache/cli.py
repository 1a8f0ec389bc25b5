"""The ``stratacache`` command: ``run``, ``demo``, ``doctor``, ``stats``, ``clear``, ``bench``,
``export``, ``import``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def demo(as_json: bool, chart: str | None) -> int:
    """The three frameworks through their real clients, cold and then as a new process would,
    against the loopback provider (``stratacache._demo``; docs/demo.md)."""
    from stratacache import _demo

    return _demo.main(as_json=as_json, chart=chart)


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


def bench(quick: bool, as_json: bool, only: str | None = None) -> int:
    """Side by side with the frameworks' own caches (``_peers``, in temporary directories),
    then many concurrent callers reading the configured cache under its own namespace, which is
    cleared at the end; 1 if a call raised, returned a wrong value, or a peer comparison saw
    different answers (spurious misses are a finding, not a failure)."""
    report: dict[str, Any] = {"quick": quick}
    failed = False
    if only in (None, "peers"):
        from stratacache import _peers

        if not as_json:
            print("side by side with the frameworks' own caches (ratio < 1: stratacache is "
                  "faster)", file=sys.stderr, flush=True)  # fmt: skip
        peers = _peers.run_peers(quick)
        report["peers"] = peers
        failed = any(
            not row["skipped"] and row["peer_answer"] != row["stratacache_answer"] for row in peers
        )
        if not as_json:
            print(_peers.render_peers(peers))
    if only in (None, "concurrency"):
        report.update(_concurrency(quick, as_json))
        failed = failed or report.pop("_failed")
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


def _concurrency(quick: bool, as_json: bool) -> dict[str, Any]:
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
    if not as_json:
        print(_bench.render(rows))
    return {
        "namespace": _bench.NAMESPACE,
        "tiers": tiers,
        "rows": [row.as_dict() for row in rows],
        "ratios": _bench.ratios(rows),
        "_failed": any(row.raised or row.wrong for row in rows),
    }


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
    demo_cmd = sub.add_parser(
        "demo",
        help="offline: LangChain, LiteLLM and LlamaIndex cold vs warm through the real clients",
    )
    demo_cmd.add_argument("--json", action="store_true", help="print only the JSON summary")
    demo_cmd.add_argument("--chart", metavar="PATH", help="where to write the PNG chart")
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
        help="side by side with the frameworks' own caches, then 1-2000 concurrent callers",
    )
    bench_cmd.add_argument("--quick", action="store_true", help="fewer calls, about a second")
    bench_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    bench_cmd.add_argument(
        "--only", choices=["peers", "concurrency"], help="run one of the two parts"
    )
    _add_transfer(sub)
    args = parser.parse_args(argv)

    if args.command == "run":
        return run(args)
    if args.command == "demo":
        return demo(args.json, args.chart)
    if args.command == "doctor":
        return doctor(args.json)
    if args.command == "bench":
        return bench(args.quick, args.json, args.only)
    if args.command == "export":
        return export(args.file, args.namespace)
    if args.command == "import":
        return import_(args.file, args.namespace)
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


def _add_transfer(sub: Any) -> None:
    exp = sub.add_parser(
        "export",
        help="write the live entries of the default cache to a JSON-lines file (cache warming)",
        description=(
            "Write every live entry of the configured cache ($STRATACACHE_URLS, else memory + "
            "disk under $STRATACACHE_DIR) as JSON lines, with the time each has left. "
            "Exit 0 on success, 2 if FILE cannot be written, 3 if a tier failed."
        ),
    )
    exp.add_argument("file", metavar="FILE", help="output file, '-' for stdout")
    imp = sub.add_parser(
        "import",
        help="write the entries of an export file into the default cache",
        description=(
            "Validate every line of an export and write the entries into every tier of the "
            "configured cache, each with the time it had left at export minus the time since. "
            "Exit 0 when every entry was imported, 1 if lines were skipped, 2 if FILE or its "
            "header cannot be read, 3 if a tier failed."
        ),
    )
    imp.add_argument("file", metavar="FILE", help="export file, '-' for stdin")
    for cmd in (exp, imp):
        cmd.add_argument(
            "--namespace", action="append", metavar="NS",
            help="only this namespace (repeatable; default: every namespace)",
        )  # fmt: skip


def _transfer_cache() -> Any:
    """The configured cache, or None after printing why it could not be built."""
    import stratacache as sc
    from stratacache.errors import StrataCacheError

    try:
        return sc.TieredCache.default()
    except StrataCacheError as exc:
        print(f"stratacache: cannot open the configured cache: {exc}", file=sys.stderr)
        return None


def _check_namespaces(namespaces: list[str] | None) -> bool:
    from stratacache.errors import ConfigurationError
    from stratacache.keys import check_namespace

    for name in namespaces or ():
        try:
            check_namespace(name)
        except ConfigurationError as exc:
            print(f"stratacache: {exc}", file=sys.stderr)
            return False
    return True


def export(file: str, namespaces: list[str] | None) -> int:
    """``stratacache export FILE``: to a temporary file renamed at the end, so that a failed
    export never leaves a truncated FILE that looks complete."""
    import os

    from stratacache import _transfer
    from stratacache.errors import StrataCacheError

    if not _check_namespaces(namespaces):
        return 2
    cache = _transfer_cache()
    if cache is None:
        return 3
    progress = _transfer.Progress("exported")
    tmp = f"{file}.{os.getpid()}.tmp"
    try:
        if file == "-":
            result = _transfer.export_cache(cache, sys.stdout, namespaces, progress)
        else:
            try:
                out = open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            except OSError as exc:
                print(f"stratacache: cannot write {file}: {exc}", file=sys.stderr)
                return 2
            try:
                with out:
                    result = _transfer.export_cache(cache, out, namespaces, progress)
                os.replace(tmp, file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except StrataCacheError as exc:
        progress.done()
        print(f"stratacache: export failed, output incomplete: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        progress.done()
        print(f"stratacache: cannot write {file}: {exc}", file=sys.stderr)
        return 2
    finally:
        cache.close()
    progress.done()
    line = f"exported {result.entries} entries from {result.namespaces} namespaces"
    left = [f"{n} {what}" for n, what in ((result.expired, "expired"), (result.corrupt, "corrupt"))
            if n]  # fmt: skip
    if left:
        line += f" (left out: {', '.join(left)})"
    print(line, file=sys.stderr)
    return 0


def import_(file: str, namespaces: list[str] | None) -> int:
    """``stratacache import FILE``; the exit code tells a script whether all lines made it."""
    from stratacache import _transfer
    from stratacache.errors import StrataCacheError

    if not _check_namespaces(namespaces):
        return 2
    try:
        source: Any = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"stratacache: cannot read {file}: {exc}", file=sys.stderr)
        return 2
    cache = _transfer_cache()
    if cache is None:
        if file != "-":
            source.close()
        return 3
    progress = _transfer.Progress("imported")
    try:
        result = _transfer.import_cache(cache, source, namespaces, progress)
    except _transfer.HeaderError as exc:
        progress.done()
        print(f"stratacache: {file} is not a readable export: {exc}", file=sys.stderr)
        return 2
    except StrataCacheError as exc:
        progress.done()
        print(f"stratacache: import stopped: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        progress.done()
        print(f"stratacache: cannot read {file}: {exc}", file=sys.stderr)
        return 2
    finally:
        cache.close()
        if file != "-":
            source.close()
    progress.done()
    for line in _transfer.summary(result):
        print(line, file=sys.stderr)
    return 1 if result.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
