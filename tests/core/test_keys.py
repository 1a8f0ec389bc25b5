"""make_key: stable under everything that does not change the answer, sensitive to the rest."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stratacache as sc
from stratacache.keys import TRANSPORT_FIELDS, canonical_json

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
]

json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf | st.floats(allow_nan=False, allow_infinity=False, width=64),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
param_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda n: n not in TRANSPORT_FIELDS and n not in {"model", "messages", "namespace"}
)


def key(**kwargs: Any) -> str:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return sc.make_key(**kwargs)


def test_format_is_versioned_and_namespaced() -> None:
    value = key(namespace="chat")
    prefix, namespace, digest = value.split(":")
    assert (prefix, namespace, len(digest)) == ("sc1", "chat", 64)


@given(st.dictionaries(param_names, json_value, max_size=6))
def test_parameter_order_never_matters(params: dict[str, Any]) -> None:
    reordered = dict(reversed(list(params.items())))
    assert key(**params) == key(**reordered)


@given(st.dictionaries(param_names, json_value, min_size=1, max_size=5), st.data())
def test_every_answer_changing_parameter_changes_the_key(
    params: dict[str, Any], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(params)))
    other = data.draw(
        json_value.filter(lambda v: canonical_json(v) != canonical_json(params[name]))
    )
    assert key(**params) != key(**{**params, name: other})


@given(st.sampled_from(sorted(TRANSPORT_FIELDS)), json_value)
def test_transport_fields_never_enter_the_key(field: str, value: Any) -> None:
    assert key(temperature=0) == key(temperature=0, **{field: value})


@given(st.text(max_size=30))
def test_unicode_normalisation(text: str) -> None:
    nfc = [{"role": "user", "content": unicodedata.normalize("NFC", text)}]
    nfd = [{"role": "user", "content": unicodedata.normalize("NFD", text)}]
    assert key(messages=nfc) == key(messages=nfd)


@given(st.integers(-(2**50), 2**50))
def test_whole_floats_equal_ints(number: int) -> None:
    assert key(temperature=number) == key(temperature=float(number))


def test_answer_changing_fields_are_all_sensitive() -> None:
    base = key(temperature=0.2, tools=[{"name": "a"}], tool_choice="auto", max_tokens=10)
    # fmt: off
    variants = [
        key(model="gpt-4o", temperature=0.2, tools=[{"name": "a"}], tool_choice="auto",
            max_tokens=10),
        key(temperature=0.3, tools=[{"name": "a"}], tool_choice="auto", max_tokens=10),
        key(temperature=0.2, tools=[{"name": "b"}], tool_choice="auto", max_tokens=10),
        key(temperature=0.2, tools=[{"name": "a"}], tool_choice="none", max_tokens=10),
        key(temperature=0.2, tools=[{"name": "a"}], tool_choice="auto", max_tokens=11),
        key(temperature=0.2, tools=[{"name": "a"}], tool_choice="auto", max_tokens=10,
            response_format={"type": "json_object"}),
        key(messages=[{"role": "system", "content": "Be verbose."}, MESSAGES[1]],
            temperature=0.2, tools=[{"name": "a"}], tool_choice="auto", max_tokens=10),
        key(messages=[MESSAGES[1]], temperature=0.2, tools=[{"name": "a"}], tool_choice="auto",
            max_tokens=10),
    ]
    # fmt: on
    assert len({base, *variants}) == len(variants) + 1


def test_tool_order_and_message_order_matter() -> None:
    tools = [{"name": "a"}, {"name": "b"}]
    assert key(tools=tools) != key(tools=tools[::-1])
    assert key(messages=MESSAGES) != key(messages=MESSAGES[::-1])


def test_volatile_message_ids_and_tool_call_ids_are_ignored() -> None:
    def history(run: str) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": "weather?", "id": f"{run}-1"},
            {
                "role": "assistant",
                "content": "",
                "id": f"{run}-2",
                "response_metadata": {"created": run},
                "tool_calls": [{"id": f"call_{run}", "name": "weather", "args": {"city": "Oslo"}}],
            },
            {"role": "tool", "content": "rain", "tool_call_id": f"call_{run}", "id": f"{run}-3"},
        ]

    assert key(messages=history("run1")) == key(messages=history("run2"))
    changed = history("run3")
    changed[1]["tool_calls"][0]["args"] = {"city": "Bergen"}
    assert key(messages=history("run1")) != key(messages=changed)


def test_pydantic_and_dataclass_values() -> None:
    @dataclass
    class Format:
        type: str

    assert key(response_format=Format("json_object")) == key(
        response_format={"type": "json_object"}
    )


def test_unstable_objects_are_rejected_clearly() -> None:
    with pytest.raises(sc.SerializationError, match="cannot build a cache key"):
        key(callback=object())


def test_bad_namespace() -> None:
    with pytest.raises(sc.ConfigurationError, match="namespace"):
        key(namespace="has space")


def test_headers_are_in_the_key_but_credentials_and_tracing_are_not() -> None:
    from stratacache.keys import make_key

    msgs = [{"role": "user", "content": "hi"}]
    beta = make_key(model="m", messages=msgs, extra_headers={"anthropic-beta": "tools-1"})
    assert beta != make_key(model="m", messages=msgs, extra_headers={"anthropic-beta": "tools-2"})
    assert beta != make_key(model="m", messages=msgs)
    noisy = {
        "Anthropic-Beta": "tools-1",  # header names are case-insensitive
        "Authorization": "Bearer sk-1",
        "x-api-key": "k",
        "X-Request-Id": "r-1",
        "traceparent": "00-abc",
        "x-stainless-os": "Linux",
    }
    assert make_key(model="m", messages=msgs, extra_headers=noisy) == beta
    only_credentials = {"Authorization": "Bearer sk-2"}
    assert make_key(model="m", messages=msgs, headers=only_credentials) == make_key(
        model="m", messages=msgs
    )
    assert make_key(model="m", messages=msgs, default_query={"api-version": "2024-10-21"}) != (
        make_key(model="m", messages=msgs, default_query={"api-version": "2025-01-01"})
    )
