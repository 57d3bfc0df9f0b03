"""response_format json_object / json_schema: every answer is JSON (valid against the schema), streamed or not,
with thinking before it; a schema the grammar library cannot compile is a 400 naming response_format."""

import json

import jsonschema
import pytest

pytest.importorskip("xgrammar")

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Where does the river Alder rise? Answer in JSON."}]
SCHEMA = {"type": "object", "properties": {
    "river": {"enum": ["Alder", "Kell"]}, "north": {"type": "boolean"},
    "count": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["fox", "apple"]}, "maxItems": 3}},
    "required": ["river", "north", "count", "tags"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}


def _chunks(text):
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_json_schema_answers_validate_at_temperature_1(http):
    body = {"messages": HI, "max_tokens": 200, "temperature": 1.0, "n": 8, "seed": 1, "response_format": FORMAT,
            "chat_template_kwargs": {"enable_thinking": False}}
    out = http.post(CHAT, json=body)
    assert out.status_code == 200, out.text
    done = out.json()["choices"]
    assert [c["finish_reason"] for c in done] == ["stop"] * 8  # the grammar's answers are of bounded length
    for c in done:
        jsonschema.validate(json.loads(c["message"]["content"]), SCHEMA)


def test_json_schema_streamed_and_after_thinking(http):
    body = {"messages": HI, "max_tokens": 200, "temperature": 0.7, "seed": 3, "response_format": FORMAT,
            "thinking_token_budget": 4, "stream": True}
    r = http.post(CHAT, json=body)
    assert r.status_code == 200
    chunks = _chunks(r.text)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"])
    assert reasoning  # the thinking is free text; the grammar starts after </think>
    jsonschema.validate(json.loads(content), SCHEMA)


def test_json_object_on_completions(http):
    r = http.post("/v1/completions", json={"prompt": "A JSON object:", "max_tokens": 120, "temperature": 0,
                                           "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    if c["finish_reason"] == "stop":
        assert isinstance(json.loads(c["text"]), dict)
    else:  # cut by max_tokens: still a prefix of JSON text
        assert c["text"].lstrip().startswith("{")


@pytest.mark.parametrize("fmt, says", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "Unsupported type"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema.schema"),
    ({"type": "yaml"}, ""),
])
def test_bad_response_format_is_400(http, fmt, says):
    r = http.post(CHAT, json={"messages": HI, "max_tokens": 4, "response_format": fmt})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"].startswith("response_format") and says in err["message"]


# ---- strict, termination, bounded compilation, the parameters hytron does not implement ----
LOOSE = {"type": "object", "properties": {"river": {"enum": ["Alder", "Kell"]}, "size": {"type": "integer"}},
         "required": ["river"]}  # no additionalProperties: false, `size` optional: not strict-mode valid


@pytest.mark.parametrize("schema, says", [
    (LOOSE, "additionalProperties must be false"),
    ({**LOOSE, "additionalProperties": False}, "every property must be required in strict mode ('size' is not)"),
    ({"type": "array", "items": {"type": "integer"}}, "the root must be an object"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 3}}, "required": ["a"],
      "additionalProperties": False}, "properties.a: 'minLength' is not supported in strict mode"),
])
def test_strict_schema_must_follow_openai_rules(http, schema, says):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    r = http.post(CHAT, json={"messages": HI, "max_tokens": 4, "response_format": fmt})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and says in err["message"], err
    assert err["code"] == "invalid_json_schema"  # OpenAI's code, which clients branch on


def test_non_strict_schema_is_still_enforced(http):
    """strict false (or left out) still constrains the answer, as vLLM does: only strict mode's rules are off."""
    for strict in (False, None):
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": LOOSE, **(
            {"strict": strict} if strict is not None else {})}}
        out = http.post(CHAT, json={"messages": HI, "max_tokens": 120, "temperature": 1.0, "n": 4, "seed": 5,
                                    "response_format": fmt, "chat_template_kwargs": {"enable_thinking": False}})
        assert out.status_code == 200, out.text
        for c in out.json()["choices"]:
            assert c["finish_reason"] == "stop"
            value = json.loads(c["message"]["content"])
            jsonschema.validate(value, LOOSE)
            assert set(value) <= {"river", "size"}  # nothing the schema does not name (xgrammar's strict grammar)


ACCEPT = {**SCHEMA, "properties": {**SCHEMA["properties"], "note": {"type": "string", "pattern": "^[a-z ]{1,16}$"}},
          "required": [*SCHEMA["required"], "note"]}


@pytest.mark.slow
def test_200_sampled_answers_at_temperature_1_all_finish_and_validate(server, http):
    """The issue's acceptance: 200 answers sampled at temperature 1 from a random model, every one valid. The
    grammar only allows answers of bounded length (compact JSON, int64 integers, capped strings), so with enough
    max_tokens every one finishes with "stop"."""
    from concurrent.futures import ThreadPoolExecutor

    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ACCEPT, "strict": True}}

    def ask(seed: int) -> list[dict]:
        body = {"messages": HI, "max_tokens": 256, "temperature": 1.0, "n": 8, "seed": seed * 8,
                "response_format": fmt, "chat_template_kwargs": {"enable_thinking": False}}
        out = http.post(CHAT, json=body)
        assert out.status_code == 200, out.text
        return out.json()["choices"]

    with ThreadPoolExecutor(4) as pool:
        choices = [c for cs in pool.map(ask, range(25)) for c in cs]
    assert len(choices) == 200
    assert [c["finish_reason"] for c in choices] == ["stop"] * 200
    for c in choices:
        jsonschema.validate(json.loads(c["message"]["content"]), ACCEPT)


def test_hostile_schema_is_a_400_within_the_compile_limit(model_dir):
    import time

    import httpx

    from tests.serve.conftest import running_server

    hostile = {"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-z]{1,20000}"}},
               "required": ["a"]}  # xgrammar expands the repetition: ~40 s on one core
    with running_server(model_dir, max_len=512, max_tokens_limit=64, grammar_seconds=2) as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        assert c.post(CHAT, json={"messages": HI, "max_tokens": 4, "response_format": fmt}).status_code == 200
        t0 = time.monotonic()
        r = c.post(CHAT, json={"messages": HI, "max_tokens": 4, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": hostile}}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
        assert "longer than 2 s to compile" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 10
        # the server goes on: plain and structured requests alike (a fresh compiler process)
        assert c.post(CHAT, json={"messages": HI, "max_tokens": 4}).status_code == 200
        ok = c.post(CHAT, json={"messages": HI, "max_tokens": 40, "response_format": FORMAT})
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("field, value", [
    ("guided_json", {"type": "object"}), ("functions", [{"name": "f"}]), ("modalities", ["text", "audio"]),
    ("use_beam_search", True), ("min_tokens", 3), ("echo", True), ("continue_final_message", True),
    ("stream_options", {"include_usage": True, "continuous_usage_stats": True}),
])
def test_parameters_not_implemented_are_a_400_naming_them(http, field, value):
    body = {"messages": HI, "max_tokens": 4, field: value, **({"stream": True} if field == "stream_options" else {})}
    r = http.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]
    # their no-op values are accepted (clients send them)
    assert http.post(CHAT, json={"messages": HI, "max_tokens": 4, "store": False, "modalities": ["text"],
                                 "use_beam_search": False, "min_tokens": 0}).status_code == 200
