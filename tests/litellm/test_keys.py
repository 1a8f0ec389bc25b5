"""Keys: everything a request sends is in the key, except the documented deny-list.

The differential test is generated from ``litellm.completion``'s signature, so a parameter a
future litellm release adds fails it until it is classified here (answer-changing, with two
valid values, or transport, on the deny-list).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import litellm
import litellm.litellm_core_utils.litellm_logging as litellm_logging
import pytest
from pydantic import BaseModel

import stratacache.litellm as scl
from stratacache.integrations.litellm._keys import is_transport
from stratacache.testing import OpenAICompatServer
from tests.litellm.conftest import via

MODEL = "openai/gpt-4o-mini"
MSGS = [{"role": "user", "content": "What is a cache?"}]


def _tool(name: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}]


def _deployments(model: str, api_key: str = "sk-a") -> list[dict[str, Any]]:
    return [{"model_name": "chat", "litellm_params": {"model": model, "api_key": api_key}}]


#: Two valid, different values of every parameter that can change the answer.
ANSWER_CHANGING: dict[str, tuple[Any, Any]] = {
    "model": ("gpt-4o-mini", "gpt-4o"),
    "messages": ([{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]),
    "temperature": (0.2, 0.7),
    "top_p": (0.5, 0.9),
    "n": (1, 2),
    "stop": (["\n"], ["END"]),
    "max_completion_tokens": (16, 32),
    "max_tokens": (16, 32),
    "modalities": (["text"], ["text", "audio"]),
    "prediction": ({"type": "content", "content": "a"}, {"type": "content", "content": "b"}),
    "audio": ({"voice": "alloy", "format": "wav"}, {"voice": "echo", "format": "wav"}),
    "presence_penalty": (0.1, 0.5),
    "frequency_penalty": (0.1, 0.5),
    "logit_bias": ({"50256": -100}, {"50256": 100}),
    "user": ("alice", "bob"),
    "reasoning_effort": ("low", "high"),
    "verbosity": ("low", "high"),
    "response_format": ({"type": "text"}, {"type": "json_object"}),
    "seed": (1, 2),
    "tools": (_tool("a"), _tool("b")),
    "tool_choice": ("auto", "none"),
    "logprobs": (False, True),
    "top_logprobs": (1, 5),
    "parallel_tool_calls": (False, True),
    "web_search_options": ({"search_context_size": "low"}, {"search_context_size": "high"}),
    "include_server_side_tool_invocations": (False, True),
    "deployment_id": ("deployment-a", "deployment-b"),
    "safety_identifier": ("user-a", "user-b"),
    "service_tier": ("auto", "flex"),
    "store": (False, True),
    "prompt_cache_key": ("a", "b"),
    "prompt_cache_retention": ("in_memory", "24h"),
    "functions": ([{"name": "f", "parameters": {}}], [{"name": "g", "parameters": {}}]),
    "function_call": ("auto", "none"),
    "base_url": ("http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"),
    "api_version": ("2024-06-01", "2024-10-21"),
    "model_list": (_deployments("gpt-4o-mini"), _deployments("gpt-4o")),
    "thinking": (
        {"type": "enabled", "budget_tokens": 1024},
        {"type": "enabled", "budget_tokens": 2048},
    ),
    "enable_json_schema_validation": (False, True),
    # reach litellm only through **kwargs
    "api_base": ("http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"),
    "custom_llm_provider": ("openai", "hosted_vllm"),
    "prompt_id": ("animals", "plants"),
    "prompt_variables": ({"animal": "cats"}, {"animal": "dogs"}),
    "prompt_version": (1, 2),
    "num_ctx": (2048, 8192),  # an ollama option litellm leaves out of its own key (#42400)
    "top_k": (5, 50),
    "fallbacks": (["gpt-4o"], ["claude-3-5-sonnet"]),
    "an_option_no_litellm_release_has_yet": ("a", "b"),
    # a beta header selects provider behaviour; credential headers do not count (test below)
    "extra_headers": ({"anthropic-beta": "a"}, {"anthropic-beta": "b"}),
    "headers": ({"OpenAI-Beta": "v1"}, {"OpenAI-Beta": "v2"}),  # unknown: in the key (fail closed)
}

#: Two different values of deny-listed parameters: they must share one key.
TRANSPORT: dict[str, tuple[Any, Any]] = {
    "timeout": (5.0, 60.0),
    "stream": (False, True),
    "stream_options": ({"include_usage": False}, {"include_usage": True}),
    "api_key": ("sk-old", "sk-rotated"),
    "shared_session": (object(), object()),
    # reach litellm only through **kwargs
    "litellm_call_id": ("call-1", "call-2"),
    "litellm_trace_id": ("trace-1", "trace-2"),
    "metadata": ({"run": 1}, {"run": 2}),
    "num_retries": (0, 3),
    "max_retries": (0, 3),
    "mock_response": ("one", "two"),
    "client": (object(), object()),
    "success_callback": ([object()], [object()]),
    "failure_callback": (["langfuse"], ["datadog"]),
    "aws_secret_access_key": ("old", "rotated"),
    "model_info": ({"id": "deployment-1"}, {"id": "deployment-2"}),
}


def _signature_params() -> list[str]:
    params = inspect.signature(litellm.completion).parameters.values()
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]


def key(installed: scl.Installation, **changes: Any) -> str:
    return installed.cache.get_cache_key(**{"model": "gpt-4o-mini", "messages": MSGS, **changes})


@pytest.mark.parametrize("name", sorted({*_signature_params(), *ANSWER_CHANGING, *TRANSPORT}))
def test_every_parameter_is_in_the_key_unless_deny_listed(
    installed: scl.Installation, name: str
) -> None:
    if is_transport(name):
        assert name in TRANSPORT, f"give {name!r} two sample values in TRANSPORT"
        one, two = TRANSPORT[name]
        assert key(installed, **{name: one}) == key(installed, **{name: two}) == key(installed)
    else:
        assert name in ANSWER_CHANGING, (
            f"litellm.completion has a new parameter {name!r}: add two valid values to "
            "ANSWER_CHANGING, or put it on the deny-list (_keys.DENY_LIST) if it is transport"
        )
        one, two = ANSWER_CHANGING[name]
        assert key(installed, **{name: one}) != key(installed, **{name: two})


def test_credentials_inside_a_model_list_are_not_in_the_key(installed: scl.Installation) -> None:
    old = key(installed, model_list=_deployments("gpt-4o-mini", api_key="sk-old"))
    assert old == key(installed, model_list=_deployments("gpt-4o-mini", api_key="sk-new"))


def test_reused_call_id_serves_each_question_its_own_answer(installed: scl.Installation) -> None:
    """Callers and proxies propagate call ids; the prompt lists are freed and their ids reused."""
    for served_from_cache in (False, True):
        for i in range(60):
            reply = litellm.completion(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"question {i}"}],
                mock_response="not from the cache" if served_from_cache else f"answer {i}",
                litellm_call_id="propagated-call-id",
            )
            assert reply.choices[0].message.content == f"answer {i}"
            assert (reply._hidden_params.get("cache_hit") is True) is served_from_cache


class Cat(BaseModel):
    name: str


class Dog(BaseModel):
    name: str
    breed: str


def test_pydantic_response_format_is_keyed_by_its_schema(installed: scl.Installation) -> None:
    def ask(schema: type[BaseModel], answer: dict[str, str]) -> Any:
        return litellm.completion(
            model="gpt-4o-mini",
            messages=MSGS,
            response_format=schema,
            mock_response=json.dumps(answer),
        )

    ask(Cat, {"name": "Tom"})
    hit = ask(Cat, {"name": "other"})
    assert hit._hidden_params["cache_hit"] is True
    assert Cat.model_validate_json(hit.choices[0].message.content).name == "Tom"
    dog = ask(Dog, {"name": "Rex", "breed": "collie"})
    assert dog._hidden_params.get("cache_hit") is None
    assert installed.cache._stats.snapshot().get("key_errors", 0) == 0


# -- end to end, through litellm.completion and the loopback server ----------------------------


def test_two_servers_do_not_share_answers(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    with OpenAICompatServer() as other:
        litellm.completion(**via(server, model=MODEL, messages=MSGS))
        reply = litellm.completion(**via(other, model=MODEL, messages=MSGS))
        assert reply._hidden_params.get("cache_hit") is None
        assert other.stats.requests["chat"] == 1
        again = litellm.completion(**via(other, model=MODEL, messages=MSGS))
        assert again._hidden_params["cache_hit"] is True
    assert server.stats.requests["chat"] == 1


def test_provider_is_part_of_the_key(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    for provider in ("openai", "hosted_vllm", "openai"):
        litellm.completion(
            **via(server, model="gpt-4o-mini", messages=MSGS, custom_llm_provider=provider)
        )
    assert server.stats.requests["chat"] == 2


def test_rotated_api_key_keeps_hitting(
    installed: scl.Installation, server: OpenAICompatServer
) -> None:
    litellm.completion(**via(server, model=MODEL, messages=MSGS, api_key="sk-old"))
    again = litellm.completion(**via(server, model=MODEL, messages=MSGS, api_key="sk-rotated"))
    assert again._hidden_params["cache_hit"] is True
    assert server.stats.requests["chat"] == 1


def test_prompt_template_and_variables_are_part_of_the_key(
    installed: scl.Installation,
    server: OpenAICompatServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "animals.prompt").write_text(
        "---\nmodel: gpt-4o-mini\n---\nUser: Tell me one fact about {{animal}}.\n"
    )
    (tmp_path / "riddles.prompt").write_text(
        "---\nmodel: gpt-4o-mini\n---\nUser: Tell me a riddle about {{animal}}.\n"
    )
    monkeypatch.setattr(litellm, "global_prompt_directory", str(tmp_path))
    # litellm keeps the template manager it builds, reading the directory once: a private list
    monkeypatch.setattr(litellm_logging, "_in_memory_loggers", [])

    def ask(animal: str, prompt_id: str = "animals") -> str:
        reply = litellm.completion(
            **via(
                server,
                model="dotprompt/openai/gpt-4o-mini",
                messages=[{"role": "user", "content": "Be brief."}],
                prompt_id=prompt_id,
                prompt_variables={"animal": animal},
            )
        )
        return str(reply.choices[0].message.content)

    cats = ask("cats")
    assert "cats" in json.dumps(server.stats.bodies[-1]["messages"])
    dogs = ask("dogs")
    assert server.stats.requests["chat"] == 2
    assert "dogs" in json.dumps(server.stats.bodies[-1]["messages"])
    assert dogs != cats
    assert ask("cats") == cats
    assert server.stats.requests["chat"] == 2
    assert ask("cats", prompt_id="riddles") != cats
    assert "riddle" in json.dumps(server.stats.bodies[-1]["messages"])
    assert server.stats.requests["chat"] == 3


def test_credential_and_tracing_headers_are_not_key_material(installed: scl.Installation) -> None:
    beta = {"anthropic-beta": "tools-1"}
    plain = key(installed, extra_headers=beta)
    noisy = {**beta, "Authorization": "Bearer sk-1", "X-Request-Id": "r-9", "traceparent": "00-a"}
    assert key(installed, extra_headers=noisy) == plain
    assert key(installed, extra_headers={"Authorization": "Bearer sk-2"}) == key(installed)


def test_a_process_wide_endpoint_is_part_of_the_key(
    installed: scl.Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = key(installed)
    monkeypatch.setattr(litellm, "api_base", "http://127.0.0.1:8001/v1")
    first = key(installed)
    monkeypatch.setattr(litellm, "api_base", "http://127.0.0.1:8002/v1")
    assert len({plain, first, key(installed)}) == 3
    # an explicit api_base on the call is where it goes, whatever the process default
    explicit = {"api_base": "http://127.0.0.1:8003/v1"}
    with_a_default = key(installed, **explicit)
    monkeypatch.undo()
    assert key(installed, **explicit) == with_a_default
