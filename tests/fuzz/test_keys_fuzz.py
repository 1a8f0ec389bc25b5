"""Key builders over random requests: deterministic across equivalent forms, different for
different requests, total (a clear SerializationError or a key, nothing else), bounded."""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

import stratacache as sc
from stratacache.keys import canonical_json, digest, make_key
from tests.fuzz._strategies import FUZZ, json_values, nested, scalars, text

#: Strings that are not the canonical forms' own markers ("__nan__", {"__bytes__": ...}): a
#: request holding such a literal shares the key of the value it names (see the report).
plain_text = text.filter(lambda s: not s.startswith("__"))
plain_scalars = st.none() | st.booleans() | st.integers() | plain_text
plain_json = json_values(
    plain_scalars | st.floats(allow_nan=False, allow_infinity=False), max_leaves=10
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": plain_json}
    ),
    max_size=4,
)
params = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "seed", "tools", "x"]), plain_json
)
KEY_LENGTH = len("sc1:llm:") + 64


@FUZZ
@given(
    text,
    json_values(),
    st.dictionaries(text, json_values(), max_size=5).filter(
        lambda d: not {"model", "messages", "namespace"} & d.keys()
    ),
)
def test_make_key_is_total_and_bounded(model: str, msgs: Any, extra: dict[str, Any]) -> None:
    """Lone surrogates, NaN, 200-bit integers, any nesting: a key or SerializationError."""
    try:
        key = make_key(model=model, messages=msgs, **extra)
    except sc.SerializationError:
        return
    assert key.startswith("sc1:llm:") and len(key) == KEY_LENGTH
    assert key == make_key(model=model, messages=msgs, **dict(reversed(list(extra.items()))))


@FUZZ
@given(messages, params)
def test_equivalent_forms_share_a_key(msgs: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """Key order, dict order, NFD vs NFC text, whole floats vs ints, message ids, tuples."""
    try:
        key = make_key(model="m", messages=msgs, **extra)
    except sc.SerializationError:  # keys colliding once normalised: refused, never guessed
        assume(False)

    def variant(value: Any) -> Any:
        if isinstance(value, str):
            return unicodedata.normalize("NFD", value)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and abs(value) < 2**53:
            return float(value)
        if isinstance(value, dict):
            return {k: variant(v) for k, v in reversed(list(value.items()))}
        if isinstance(value, list):
            return tuple(variant(v) for v in value)
        return value

    same_msgs = [{**variant(m), "id": "run-7"} for m in msgs]
    assert make_key(model="m", messages=same_msgs, **variant(extra)) == key


@FUZZ
@given(messages, messages, params, params)
def test_different_requests_get_different_keys(
    a: list[dict[str, Any]], b: list[dict[str, Any]], pa: dict[str, Any], pb: dict[str, Any]
) -> None:
    try:
        assume(canonical_json([a, pa]) != canonical_json([b, pb]))
        ka, kb = make_key(model="m", messages=a, **pa), make_key(model="m", messages=b, **pb)
    except sc.SerializationError:
        assume(False)
    assert ka != kb


@FUZZ
@given(scalars, scalars)
def test_digest_is_total_and_separates_canonical_forms(a: Any, b: Any) -> None:
    try:
        da, db = digest(a), digest(b)
    except sc.SerializationError:
        return
    assert len(da) == 64
    assert (da == db) == (canonical_json(a) == canonical_json(b))


def test_deep_and_huge_inputs_are_clear_errors() -> None:
    for bad in (nested(5_000), nested(5_000, "dict"), 10**5000):
        try:
            make_key(model="m", messages=[{"role": "user", "content": bad}])
        except sc.SerializationError:
            continue
        raise AssertionError("expected a SerializationError")


@FUZZ
@given(text, text)
def test_the_langchain_key_builder_is_total(prompt: str, llm_string: str) -> None:
    """Whatever LangChain hands the cache: a key, or the documented ValueError (the adapter
    then leaves that call uncached)."""
    from stratacache.integrations.langchain._keys import llm_cache_key

    try:
        key = llm_cache_key(prompt, llm_string)
    except ValueError:  # SerializationError is a TypeError, and documented too
        return
    except sc.SerializationError:
        return
    assert len(key) == len("sc1:lc:") + 64
    assert key == llm_cache_key(prompt, llm_string)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["temperature", "messages", "tools", "user", "headers", "api_key", "n"]),
        json_values(),
    )
)
def test_the_litellm_key_builder_is_total(kwargs: dict[str, Any]) -> None:
    from stratacache.integrations.litellm._keys import request_key

    try:
        key = request_key(kwargs, "gpt-4o-mini")
    except sc.SerializationError:
        return
    assert len(key) == len("sc1:litellm:") + 64
