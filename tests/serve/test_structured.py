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
    done = [c for c in out.json()["choices"] if c["finish_reason"] == "stop"]
    assert len(done) >= 6  # a random model may run out of tokens inside a long integer; the rest are complete
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
