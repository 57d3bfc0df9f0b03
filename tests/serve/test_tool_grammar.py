"""Tool calls under a grammar, on hytron's own chat template (Nemotron 3's XML calls): tool_choice "required" and
named force calls whose arguments follow the tool's schema, even from a random model at temperature 1; "auto"
stays free; streamed calls arrive as OpenAI's argument deltas while they decode."""

import json

import jsonschema
import pytest

from tests.serve.conftest import API_KEY, running_server

pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def server(model_dir):
    """The tools' listing makes a long prompt for the tiny vocabulary (~700 tokens): a longer context."""
    with running_server(model_dir, api_key=API_KEY, max_len=2048, max_tokens_limit=1200) as s:
        yield s

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "unit": {"enum": ["celsius", "fahrenheit"]}, "hourly": {"type": "boolean"}}, "required": ["city", "days"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _chunks(text):
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("choice, thinking", [("required", False), ("required", True),
                                              ({"type": "function", "function": {"name": "get_time"}}, False)])
def test_forced_calls_follow_the_tool_schema(http, choice, thinking):
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": choice, "max_tokens": 1200, "temperature": 1.0, "n": 6,
            "seed": 11, "chat_template_kwargs": {"enable_thinking": thinking}, "thinking_token_budget": 8}
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    for c in r.json()["choices"]:
        assert c["finish_reason"] == "tool_calls", c
        calls = c["message"]["tool_calls"]
        assert calls and not (c["message"]["content"] or "").strip()
        for call in calls:
            name = call["function"]["name"]
            if isinstance(choice, dict):
                assert name == "get_time"
            jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])


def test_parallel_tool_calls_false_forces_one_call(http):
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
            "max_tokens": 240, "temperature": 1.0, "n": 6, "seed": 2,
            "chat_template_kwargs": {"enable_thinking": False}}
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert [len(c["message"]["tool_calls"]) for c in r.json()["choices"]] == [1] * 6


def test_streamed_call_arrives_as_argument_deltas(http):
    """The OpenAI streaming shape: the call's first delta has index, id, type and name with empty arguments;
    later deltas append pieces of the arguments; together they equal the whole response's call."""
    body = {"messages": ASK, "tools": TOOLS, "max_tokens": 240, "temperature": 0.8, "seed": 4,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "chat_template_kwargs": {"enable_thinking": False}}
    whole = http.post(CHAT, json=body).json()["choices"][0]["message"]["tool_calls"]
    chunks = _chunks(http.post(CHAT, json={**body, "stream": True}).text)
    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    first, rest = deltas[0], deltas[1:]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) >= 3 and all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
                                  for d in rest)
    arguments = "".join(d["function"]["arguments"] for d in rest)
    assert arguments == whole[0]["function"]["arguments"]  # same seed, same call
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_stays_free(http):
    """No grammar: a random model writes text, which comes back as content (no call is invented)."""
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "auto", "max_tokens": 24, "temperature": 1.0,
            "seed": 1, "chat_template_kwargs": {"enable_thinking": False}}
    c = http.post(CHAT, json=body).json()["choices"][0]
    assert c["finish_reason"] in ("stop", "length") and c["message"].get("tool_calls") is None
    assert c["message"]["content"]


@pytest.mark.parametrize("change, param, says, code", [
    ({"tools": None}, "tool_choice", "no tools", 400),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not in tools",
     "unknown_tool"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}}}]}, "tools.0.function.parameters",
     "additionalProperties must be false", "invalid_function_parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {"": None}}}]},
     "tools.0.function.parameters", "the root must be an object", "invalid_function_parameters"),  # the fuzzer's
    ({"response_format": {"type": "json_object"}}, "response_format", "tool call", 400),
])
def test_bad_forced_calls_are_400(http, change, param, says, code):
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 8, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = http.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"] and err["code"] == code, err


@pytest.mark.parametrize("parameters", [None, {}])
def test_a_strict_tool_without_parameters_is_a_call_without_arguments(http, parameters):
    """No schema, or the empty one, under strict: the forced call has no arguments (found by the spec fuzzer)."""
    tool = {"type": "function", "function": {"name": "ping", "strict": True,
                                             **({} if parameters is None else {"parameters": parameters})}}
    r = http.post(CHAT, json={"messages": ASK, "tools": [tool], "tool_choice": "required", "max_tokens": 64,
                              "temperature": 1.0, "chat_template_kwargs": {"enable_thinking": False}})
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "ping" and json.loads(call["arguments"]) == {}
