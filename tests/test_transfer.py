"""``stratacache export`` / ``import``: cache warming through real tiers (memory + disk, Redis)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import stratacache as sc
from stratacache import _transfer
from stratacache.cli import main
from stratacache.codec import encode

LONG_KEY = "p" * 300  # stored under its sha256: exported as key_sha256


@pytest.fixture
def urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Memory + disk in tmp_path, as every CLI command of this test sees them."""
    value = f"memory://,disk://{tmp_path / 'disk'}"
    monkeypatch.setenv("STRATACACHE_URLS", value)
    monkeypatch.setenv("STRATACACHE_DIR", str(tmp_path / "home"))
    return value


def _cache(namespace: str = "app") -> sc.TieredCache:
    """A fresh process's view of the configured cache (its memory tier starts empty)."""
    return sc.TieredCache.default(namespace=namespace)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _entries(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["namespace"], e.get("key") or e["key_sha256"]): e for e in _lines(path)[1:]}


def _fill() -> None:
    with _cache() as cache:
        cache.set("json", {"answer": [1, 2.5, None, "é"]}, ttl=100)
        cache.set("bytes", b"\x00\xffraw", ttl=None)
        cache.set(LONG_KEY, "long key", ttl=3600)
        cache.set("big", "x" * 100_000)  # compressed envelope
        cache.with_namespace("other").set("q", [1, 2])


def test_round_trip_restores_hits_values_and_ttls(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill()
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump)]) == 0
    assert "exported 5 entries from 2 namespaces" in capsys.readouterr().err
    header = _lines(dump)[0]
    assert header["format"] == "stratacache-export" and header["version"] == 1
    assert abs(header["created"] - time.time()) < 60
    first = _entries(dump)
    assert first[("app", "json")]["ttl"] <= 100
    assert first[("app", "bytes")]["ttl"] is None
    assert ("other", "q") in first

    assert main(["clear"]) == 0
    with _cache() as cache:
        assert cache.get("json") is None and cache.get(LONG_KEY) is None

    assert main(["import", str(dump)]) == 0
    assert "imported 5 entries, skipped 0" in capsys.readouterr().err
    with _cache() as cache:
        assert cache.get("json") == {"answer": [1, 2.5, None, "é"]}
        assert cache.get("bytes") == b"\x00\xffraw"
        assert cache.get(LONG_KEY) == "long key"
        assert cache.get("big") == "x" * 100_000
        assert cache.with_namespace("other").get("q") == [1, 2]

    again = tmp_path / "again.jsonl"
    assert main(["export", str(again)]) == 0
    second = _entries(again)
    assert second.keys() == first.keys()
    for name, entry in first.items():
        if entry["ttl"] is None:
            assert second[name]["ttl"] is None
        else:  # kept, never extended, only the seconds this test took lost
            assert entry["ttl"] - 10 < second[name]["ttl"] <= entry["ttl"]


def test_entries_in_several_tiers_are_exported_once_and_only_live_ones(tmp_path: Path) -> None:
    memory_only = sc.TieredCache.from_urls("memory://", f"disk://{tmp_path / 'd'}", namespace="n")
    memory_only.set("both", 1, ttl=60)
    memory_only.tiers[0].set(  # an expired copy in the fast tier, a live one on disk
        "sc:n:0:k:fallback", encode("stale", time.time() - 1), None
    )
    memory_only.tiers[1].set("sc:n:0:k:fallback", encode("live", time.time() + 60), None)
    memory_only.tiers[1].set("sc:n:0:k:expired", encode("old", time.time() - 5), None)
    memory_only.tiers[1].set("sc:n:0:k:corrupt", b"SC\x01garbage", None)
    out = io.StringIO()
    result = _transfer.export_cache(memory_only, out)
    memory_only.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    assert sorted(e["key"] for e in lines) == ["both", "fallback"]
    fallback = next(e for e in lines if e["key"] == "fallback")
    assert base64.b64decode(fallback["value"]).endswith(b'"live"')
    assert (result.entries, result.expired, result.corrupt) == (2, 2, 1)  # stale copy counted


def test_previous_generations_are_not_exported(urls: str, tmp_path: Path) -> None:
    with _cache() as cache:
        cache.set("old", 1)
        cache.clear()
        cache.set("new", 2)
    out = io.StringIO()
    with _cache() as cache:
        _transfer.export_cache(cache, out, ["app"])
    assert [json.loads(x)["key"] for x in out.getvalue().splitlines()[1:]] == ["new"]


def test_ttl_is_reduced_by_the_time_since_export_and_expired_lines_skipped(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    value = base64.b64encode(encode("v")).decode()
    dump = tmp_path / "old.jsonl"
    rows = [
        {"format": "stratacache-export", "version": 1, "created": now - 50},
        {"namespace": "app", "key": "fresh", "value": value, "ttl": 1000},
        {"namespace": "app", "key": "stale", "value": value, "ttl": 40},
        {"namespace": "app", "key": "forever", "value": value, "ttl": None},
    ]
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["import", str(dump)]) == 1
    err = capsys.readouterr().err
    assert "imported 2 entries, skipped 1 (reasons: 1 expired)" in err
    assert "line 3: expired" in err
    out = tmp_path / "re.jsonl"
    assert main(["export", str(out)]) == 0
    entries = _entries(out)
    assert 940 < entries[("app", "fresh")]["ttl"] <= 950
    assert entries[("app", "forever")]["ttl"] is None
    assert ("app", "stale") not in entries


def test_corrupt_lines_are_reported_with_line_numbers_and_valid_ones_imported(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = base64.b64encode(encode({"ok": True})).decode()
    header = json.dumps({"format": "stratacache-export", "version": 1, "created": time.time()})
    lines = [
        header,
        json.dumps({"namespace": "app", "key": "good1", "value": good, "ttl": 60}),
        "{not json",
        json.dumps({"namespace": "app", "key": "k", "value": "!!notbase64!!", "ttl": 60}),
        json.dumps({"namespace": "bad ns!", "key": "k", "value": good, "ttl": 60}),
        json.dumps({"namespace": "app", "key": "k", "value": good, "ttl": -5}),
        json.dumps({"namespace": "app", "key": 7, "value": good, "ttl": 60}),
        json.dumps({"namespace": "app", "key": "k", "value": base64.b64encode(b"junk").decode()}),
        "[1, 2]",
        "",
        json.dumps({"namespace": "app", "key": "good2", "value": good, "ttl": None}),
        json.dumps({"namespace": "app", "key": "k", "value": good, "ttl": "soon"}),
    ]
    dump = tmp_path / "mixed.jsonl"
    dump.write_text("\n".join(lines) + "\n")
    assert main(["import", str(dump)]) == 1
    err = capsys.readouterr().err
    assert "imported 2 entries, skipped 8" in err
    for expected in (
        "line 3: bad json",
        "line 4: bad base64",
        "line 5: bad namespace",
        "line 6: bad ttl",
        "line 7: bad key",
        "line 8: bad value",
        "line 9: not a json object",
        "line 12: bad ttl",
    ):
        assert expected in err
    assert "2 bad ttl" in err
    with _cache() as cache:
        assert cache.get("good1") == {"ok": True} and cache.get("good2") == {"ok": True}


def test_only_the_first_ten_skips_are_listed(urls: str, tmp_path: Path) -> None:
    header = json.dumps({"format": "stratacache-export", "version": 1, "created": time.time()})
    with _cache() as cache:
        result = _transfer.import_cache(cache, [header, *["nope"] * 25])
    assert result.skipped == 25 and len(result.shown) == 10
    text = "\n".join(_transfer.summary(result))
    assert "line 11: bad json" in text and "line 12" not in text and "and 15 more" in text


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json\n",
        '{"namespace": "app", "key": "k", "value": "", "ttl": 1}\n',
        '{"format": "stratacache-export", "version": 2, "created": 1}\n',
        '{"format": "stratacache-export", "version": 1}\n',
    ],
)
def test_a_missing_or_unknown_header_is_exit_2_and_writes_nothing(
    urls: str, tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "bad.jsonl"
    dump.write_text(content)
    assert main(["import", str(dump)]) == 2
    assert "is not a readable export" in capsys.readouterr().err


def test_unreadable_files_are_exit_2(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "no-such-dir" / "out.jsonl")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["export", "--namespace", "bad ns", str(tmp_path / "x")]) == 2


def test_namespace_option_selects_what_is_exported_and_imported(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill()
    dump = tmp_path / "other.jsonl"
    assert main(["export", "--namespace", "other", str(dump)]) == 0
    assert {ns for ns, _ in _entries(dump)} == {"other"}
    full = tmp_path / "full.jsonl"
    assert main(["export", str(full)]) == 0
    assert main(["clear"]) == 0
    capsys.readouterr()
    assert main(["import", "--namespace", "app", "--namespace", "x", str(full)]) == 0
    assert "imported 4 entries, skipped 0; left out 1 entries" in capsys.readouterr().err
    with _cache() as cache:
        assert cache.get("json") is not None
        assert cache.with_namespace("other").get("q") is None


def test_stdout_and_stdin(
    urls: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill()
    assert main(["export", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith('{"format": "stratacache-export"')
    assert "exported 5 entries" in captured.err  # the summary never mixes with the data
    assert main(["clear"]) == 0
    stdin = io.TextIOWrapper(io.BytesIO(captured.out.encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["import", "-"]) == 0
    assert "imported 5 entries, skipped 0" in capsys.readouterr().err
    with _cache() as cache:
        assert cache.get(LONG_KEY) == "long key"


def test_progress_is_plain_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = _transfer.Progress("exported", stream, every=2)
    for _ in range(5):
        progress.tick()
    progress.done()
    assert stream.getvalue() == "exported 2 entries\nexported 4 entries\n"


def test_langchain_entries_come_back_as_hits_for_the_adapter(
    urls: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from stratacache.langchain import LLMCache

    def ask() -> tuple[str, int]:
        """The answer, and how many times the model itself was called (0: a cache hit).
        The responses are part of the model's identity, hence of the key: keep them."""
        with sc.TieredCache.default() as cache:
            model = FakeListChatModel(responses=["Paris", "Lyon"], cache=LLMCache(cache))
            answer = model.invoke("capital of France?").content
            return str(answer), model.i

    assert ask() == ("Paris", 1)
    assert ask() == ("Paris", 0)
    dump = tmp_path / "lc.jsonl"
    assert main(["export", str(dump)]) == 0
    assert {ns for ns, _ in _entries(dump)} == {"lc-llm"}
    assert main(["clear"]) == 0
    assert ask() == ("Paris", 1)  # cleared: the model is called again
    assert main(["clear"]) == 0
    assert main(["import", str(dump)]) == 0
    assert ask() == ("Paris", 0)


def test_a_dead_tier_is_a_message_and_exit_3_never_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = "redis://127.0.0.1:1/0?timeout=100ms&connect_timeout=100ms"
    monkeypatch.setenv("STRATACACHE_URLS", f"memory://,{dead}")
    assert main(["export", str(tmp_path / "out.jsonl")]) == 3
    assert "export failed, output incomplete" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()  # no truncated file that looks complete
    dump = tmp_path / "in.jsonl"
    good = base64.b64encode(encode(1)).decode()
    dump.write_text(
        json.dumps({"format": "stratacache-export", "version": 1, "created": time.time()})
        + "\n"
        + json.dumps({"namespace": "app", "key": "k", "value": good, "ttl": None})
        + "\n"
    )
    assert main(["import", str(dump)]) == 3
    assert "import stopped" in capsys.readouterr().err


def test_the_installed_command_round_trips(tmp_path: Path) -> None:
    env = {**os.environ, "STRATACACHE_URLS": f"disk://{tmp_path / 'disk'}"}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stratacache.cli", *args],
            capture_output=True, text=True, timeout=120, env=env, input=stdin,
        )  # fmt: skip

    with sc.TieredCache.from_urls(f"disk://{tmp_path / 'disk'}", namespace="app") as cache:
        cache.set("k", "v", ttl=300)
    out = cli("export", "-")
    assert out.returncode == 0, out.stderr
    assert "exported 1 entries from 1 namespaces" in out.stderr
    assert cli("clear").returncode == 0
    back = cli("import", "-", stdin=out.stdout)
    assert back.returncode == 0, back.stderr
    assert "imported 1 entries, skipped 0" in back.stderr
    with sc.TieredCache.from_urls(f"disk://{tmp_path / 'disk'}", namespace="app") as cache:
        assert cache.get("k") == "v"


@pytest.fixture
def redis_urls(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"memory://,disk://{tmp_path / 'disk'},{redis_url}"
    monkeypatch.setenv("STRATACACHE_URLS", value)
    return value


@pytest.mark.redis
def test_round_trip_through_redis_reaches_every_tier(
    redis_urls: str, redis_url: str, tmp_path: Path
) -> None:
    _fill()
    dump = tmp_path / "dump.jsonl"
    assert main(["export", str(dump)]) == 0
    assert len(_entries(dump)) == 5
    assert main(["clear"]) == 0
    assert main(["import", str(dump)]) == 0
    with sc.TieredCache.from_urls(redis_url, namespace="app") as redis_only:
        assert redis_only.get("json") == {"answer": [1, 2.5, None, "é"]}
        assert redis_only.get(LONG_KEY) == "long key"
    again = tmp_path / "again.jsonl"
    assert main(["export", str(again)]) == 0
    first, second = _entries(dump), _entries(again)
    assert second.keys() == first.keys()
    ttl = first[("app", "json")]["ttl"]
    assert ttl - 10 < second[("app", "json")]["ttl"] <= ttl
