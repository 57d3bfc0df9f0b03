"""`POST /v1/responses` through the openai SDK: text and item input, instructions, reasoning items, function tools
and their outputs, structured text, the streamed event sequence, and 400s naming what is not supported."""

import json

import jsonschema
import pytest

from tests.serve.conftest import API_KEY, running_server

openai = pytest.importorskip("openai")
pytest.importorskip("xgrammar")

TOOL = {"type": "function", "name": "get_time", "description": "Time in a zone", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}, "strict": True}


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, api_key=API_KEY, max_len=2048, max_tokens_limit=512) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_text_input_with_instructions_and_a_reasoning_item(client, server):
    r = client.responses.create(model=server.backend.name, input="Where does the river Alder rise?",
                                instructions="Answer briefly.", max_output_tokens=40, temperature=0.7,
                                reasoning={"effort": "minimal"})
    kinds = [item.type for item in r.output]
    assert r.object == "response" and kinds[0] == "reasoning" and "message" in kinds
    assert r.output[0].summary[0].text  # the thinking span
    assert r.status in ("completed", "incomplete") and isinstance(r.output_text, str)
    assert r.usage.input_tokens > 0 and r.usage.output_tokens_details.reasoning_tokens > 0
    assert r.instructions == "Answer briefly." and r.max_output_tokens == 40


def test_function_tool_call_and_its_output(client, server):
    ask = {"role": "user", "content": "What time is it in Berlin?"}
    r = client.responses.create(model=server.backend.name, input=[ask], tools=[TOOL], tool_choice="required",
                                parallel_tool_calls=False, max_output_tokens=200, temperature=1.0,
                                reasoning={"effort": "none"})
    [call] = [item for item in r.output if item.type == "function_call"]
    assert call.name == "get_time" and json.loads(call.arguments)["zone"] in ("UTC", "CET")
    # the call and its output go back as input items; the model answers (freely: tool_choice auto)
    follow = client.responses.create(
        model=server.backend.name, tools=[TOOL], max_output_tokens=16, reasoning={"effort": "none"},
        input=[ask, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                     "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "12:00"}])
    assert follow.output and follow.usage.input_tokens > r.usage.input_tokens


def test_structured_text_format(client, server):
    schema = {"type": "object", "properties": {"river": {"enum": ["Alder", "Kell"]}, "long": {"type": "boolean"}},
              "required": ["river", "long"], "additionalProperties": False}
    r = client.responses.create(model=server.backend.name, input="Which river?", max_output_tokens=60,
                                reasoning={"effort": "none"}, temperature=1.0,
                                text={"format": {"type": "json_schema", "name": "river", "schema": schema,
                                                 "strict": True}})
    jsonschema.validate(json.loads(r.output_text), schema)


def test_stream_sends_the_responses_event_sequence(client, server):
    events = list(client.responses.create(model=server.backend.name, input="Hello", max_output_tokens=24,
                                          reasoning={"effort": "minimal"}, temperature=0.7, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for needed in ("response.output_item.added", "response.reasoning_summary_text.delta",
                   "response.output_item.done"):
        assert needed in kinds
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and final.usage.output_tokens > 0


def test_stream_helper_and_function_call_argument_deltas(client, server):
    with client.responses.stream(model=server.backend.name, input="What time is it?", tools=[TOOL],
                                 tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=200,
                                 reasoning={"effort": "none"}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert "".join(deltas) == call.arguments and json.loads(call.arguments)["zone"] in ("UTC", "CET")


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"), ({"store": True}, "store"),
    ({"tools": [{"type": "web_search"}]}, "tools.0"), ({"include": ["reasoning.encrypted_content"]}, "include"),
])
def test_unsupported_parameters_are_a_400_naming_them(server, extra, param):
    import httpx

    r = httpx.post(server.url + "/v1/responses", headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"input": "Hi", "max_output_tokens": 4, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert param.split(".")[0] in err["message"] and (err["param"] or "").startswith(param), err


def test_reasoning_input_items_go_back_into_the_prompt(client, server):
    """A reasoning item in the input is the next assistant turn's reasoning (the last turn keeps it in the
    template), so the prompt grows by it; an input that is only a reasoning item is an assistant turn too."""
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    thought = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "They greet me; greet back."}]}
    kw = {"model": server.backend.name, "max_output_tokens": 4, "reasoning": {"effort": "none"}}
    plain = client.responses.create(input=turn, **kw)
    with_thought = client.responses.create(input=[turn[0], thought, turn[1]], **kw)
    assert with_thought.usage.input_tokens > plain.usage.input_tokens
    assert client.responses.create(input=[thought], **kw).status in ("completed", "incomplete")
